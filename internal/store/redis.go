package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis layout (format 2), every key under one hash tag {P} (P = Prefix):
//
//	{P}:meta        hash   format -> "2", index-key -> Seal(32 random bytes, aad "sipwake/meta/index-key/1")
//	{P}:r:<id>      string the bbolt rec value, byte for byte:
//	                       header (see header.go) | Seal(uvarint len(aor) | aor | data, aad)
//	                       PEXPIREAT max(ExpiresAt, now) + Grace
//	{P}:ttl         zset   member <id>, score ExpiresAt in Unix ms
//	{P}:a:<aorhash> set    members <id>; PEXPIREAT the latest record's
//	{P}:due         zset   member <id>, score DueAt in Unix ms (records with a DueAt)
//	{P}:acct        set    members <id> (records with Account set)
//
// Format 1 had no due and acct keys; OpenRedis builds them (see header.go
// for how format 1 records read).
//
// <id> is ID.String() and <aorhash> the AOR's HMAC in the same base32 form,
// so no AOR, device, token or contact appears in a key, and values are the
// sealed bbolt records (the codec both backends hold: same seal, same aad
// binding a value to its ID and header). Redis' own expiry is the hard
// TTL; the ttl zset lets a sweeper take records (and un-register them
// upstream) before Redis drops them.
//
// One hash tag puts the whole store in one Cluster slot, so every script
// (redis_scripts.go) may touch the ttl zset, a record and its AOR set
// atomically. The price is that a Cluster holds the store on one master
// (and its replicas): Cluster then buys fail-over, not capacity. At ~1 KB
// per binding, a million bindings is ~1 GB, well within one Redis.
const (
	// DefaultRedisGrace is how long Redis keeps a record past its ExpiresAt
	// so that a sweeper takes it (and un-registers it upstream) first.
	DefaultRedisGrace = time.Hour
	// DefaultRedisPrefix names the store's keys when RedisOptions.Prefix is
	// empty.
	DefaultRedisPrefix = "sipwake"

	// DefaultRedisReplicaTimeout is how long a write waits for
	// RedisOptions.MinReplicas replicas when ReplicaTimeout is 0.
	DefaultRedisReplicaTimeout = time.Second
	// DefaultRedisTimeout bounds each command when RedisOptions.Timeout is
	// zero: Redis answers in well under a millisecond, so a second means
	// it is unreachable or stalled.
	DefaultRedisTimeout = time.Second

	// redisDeleteTries bounds Delete's optimistic retries when the record
	// changes between its read and its erasure.
	redisDeleteTries = 8
)

// RedisOptions say which Redis holds the store and how it is reached.
type RedisOptions struct {
	// Addrs: one "host:port" (or a unix socket path) for a single Redis;
	// several for a Cluster (seed nodes); the Sentinels when MasterName is
	// set.
	Addrs []string
	// Cluster forces Cluster mode with a single seed address.
	Cluster bool
	// MasterName is the Sentinel master name; empty: no Sentinel.
	MasterName string
	// Username and Password authenticate to Redis (ACL or requirepass).
	Username, Password string
	// SentinelUsername and SentinelPassword authenticate to the Sentinels,
	// if they require it.
	SentinelUsername, SentinelPassword string
	// DB is the database number (single Redis or Sentinel; Cluster has
	// only 0).
	DB int
	// Prefix names the store's keys, "{Prefix}:…" (default "sipwake").
	// Several stores may share a Redis under different prefixes. Letters,
	// digits and . _ - only.
	Prefix string
	// Grace is how long after ExpiresAt Redis itself drops a record that
	// no sweeper took (default DefaultRedisGrace). Redis counts it from
	// the later of ExpiresAt and the time of the Put.
	Grace time.Duration
	// TLS, if set, is used for every connection (to the Sentinels too).
	TLS *tls.Config
	// MinReplicas, if above 0, makes every write a caller is told succeeded
	// (Put, Delete, DeleteAOR, the index key's creation) wait until that
	// many replicas have it (Redis' WAIT); fewer within ReplicaTimeout fail
	// the call with ErrNotReplicated. Without it Redis replicates
	// asynchronously: a write acknowledged by a primary that dies before a
	// replica got it is lost when that replica is promoted. Not with
	// Cluster.
	MinReplicas int
	// ReplicaTimeout bounds that wait (default DefaultRedisReplicaTimeout).
	ReplicaTimeout time.Duration
	// Timeout bounds each command, its retries and the connection it
	// needs included (default DefaultRedisTimeout), so a Redis that is
	// gone or cut off fails a REGISTER, a lookup or a lease check in that
	// time instead of holding it; a write that waits for replicas gets
	// ReplicaTimeout on top. It also bounds the cluster bus' and the
	// leases' commands, which share the connection.
	Timeout time.Duration
}

func (o RedisOptions) universal() *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:            o.Addrs,
		IsClusterMode:    o.Cluster,
		MasterName:       o.MasterName,
		Username:         o.Username,
		Password:         o.Password,
		SentinelUsername: o.SentinelUsername,
		SentinelPassword: o.SentinelPassword,
		DB:               o.DB,
		TLSConfig:        o.TLS,
		ClientName:       "sipwake",
		// A stalled connection (a partition keeps it open) must not hold
		// a command past the caller's deadline or the store's bound. A
		// write and its WAIT are read as one pipeline: the wait must not
		// look like a dead connection.
		DialTimeout:           o.Timeout,
		ReadTimeout:           o.bound(),
		WriteTimeout:          o.Timeout,
		ContextTimeoutEnabled: true,
	}
}

// bound is how long one command or pipeline may take: Timeout, and
// ReplicaTimeout on top for a write that waits for replicas.
func (o RedisOptions) bound() time.Duration { return o.Timeout + o.ReplicaTimeout }

// boundHook gives every command (and pipeline) a deadline of timeout
// unless its caller set an earlier one: go-redis' own read timeout bounds
// one attempt, and a command retried on a stalled connection would wait
// for each attempt in turn.
type boundHook time.Duration

func (h boundHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h boundHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.bound(ctx, func(ctx context.Context) error { return next(ctx, cmd) })
	}
}

func (h boundHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return h.bound(ctx, func(ctx context.Context) error { return next(ctx, cmds) })
	}
}

// bound runs do under the bound and, when the bound (not the caller) ran
// out, says so: an operator reading /readyz or the log learns that Redis
// did not answer, not merely that a deadline passed.
func (h boundHook) bound(ctx context.Context, do func(context.Context) error) error {
	bctx, cancel := context.WithTimeout(ctx, time.Duration(h))
	defer cancel()
	err := do(bctx)
	if err != nil && ctx.Err() == nil && bctx.Err() != nil {
		return fmt.Errorf("redis did not answer within %v: %w", time.Duration(h), err)
	}
	return err
}

func (o *RedisOptions) validate() error {
	var errs []error
	if len(o.Addrs) == 0 {
		errs = append(errs, errors.New("no addresses"))
	}
	if o.Prefix == "" {
		o.Prefix = DefaultRedisPrefix
	}
	for _, c := range o.Prefix {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			errs = append(errs, fmt.Errorf("prefix %q: only letters, digits, '.', '_' and '-' are allowed", o.Prefix))
			break
		}
	}
	if o.Grace < 0 {
		errs = append(errs, fmt.Errorf("grace %v is negative", o.Grace))
	} else if o.Grace == 0 {
		o.Grace = DefaultRedisGrace
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %v is negative", o.Timeout))
	} else if o.Timeout == 0 {
		o.Timeout = DefaultRedisTimeout
	}
	if o.DB != 0 && (o.Cluster || len(o.Addrs) > 1 && o.MasterName == "") {
		errs = append(errs, fmt.Errorf("db %d: Redis Cluster has only db 0", o.DB))
	}
	if o.DB < 0 {
		errs = append(errs, fmt.Errorf("db %d is negative", o.DB))
	}
	switch {
	case o.MinReplicas < 0:
		errs = append(errs, fmt.Errorf("min replicas %d is negative", o.MinReplicas))
	case o.MinReplicas > 0 && (o.Cluster || len(o.Addrs) > 1 && o.MasterName == ""):
		// WAIT has no key: the Cluster client would send it to any node.
		errs = append(errs, errors.New("waiting for replicas is not supported on a Cluster"))
	}
	if o.ReplicaTimeout < 0 {
		errs = append(errs, fmt.Errorf("replica timeout %v is negative", o.ReplicaTimeout))
	} else if o.ReplicaTimeout == 0 && o.MinReplicas > 0 {
		o.ReplicaTimeout = DefaultRedisReplicaTimeout
	}
	return errors.Join(errs...)
}

// Redis is the shared backend for several sipwake nodes: the same sealed
// records as Bolt, in a single Redis, Sentinel or Cluster, with Redis key
// expiry as the hard TTL. It is safe for concurrent use, also by several
// processes on one Redis: TakeExpired hands each record to one caller.
type Redis struct {
	rdb   redis.UniversalClient
	log   *slog.Logger
	grace time.Duration
	now   func() time.Time // the wall clock Redis' own expiry runs on
	codec *codec           // made once OpenRedis has read the index key
	sc    redisScripts
	// minReplicas and replicaTimeout are RedisOptions' (0: no WAIT).
	minReplicas    int
	replicaTimeout time.Duration

	tag, metaKey, ttlKey, dueKey, acctKey string
	closed                                atomic.Bool
}

// OpenRedis connects to Redis and opens the store under opts.Prefix. On
// first open it makes a random index key and keeps it sealed under the
// active key in {Prefix}:meta (several nodes opening an empty store at once
// agree on one). If no configured key opens that index key, it returns an
// error wrapping ErrWrongKey and has written nothing. log may be nil.
//
// Redis must be 7.0 or later and must not evict keys: any maxmemory-policy
// but noeviction may drop bindings silently (OpenRedis logs a warning).
func OpenRedis(ctx context.Context, opts RedisOptions, keys *Keyring, log *slog.Logger) (*Redis, error) {
	if keys == nil {
		return nil, errors.New("store: open redis: nil keyring")
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("store: open redis: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tag := "{" + opts.Prefix + "}"
	rdb := redis.NewUniversalClient(opts.universal())
	rdb.AddHook(boundHook(opts.bound()))
	s := &Redis{
		rdb:   rdb,
		log:   log,
		grace: opts.Grace,
		now:   time.Now,
		sc:    newRedisScripts(),
		tag:   tag,

		minReplicas:    opts.MinReplicas,
		replicaTimeout: opts.ReplicaTimeout,
		metaKey:        tag + ":meta",
		ttlKey:         tag + ":ttl",
		dueKey:         tag + ":due",
		acctKey:        tag + ":acct",
	}
	created, err := s.init(ctx, keys)
	if err != nil {
		_ = s.rdb.Close()
		return nil, fmt.Errorf("store: open redis %s (prefix %q): %w", strings.Join(opts.Addrs, ","), opts.Prefix, err)
	}
	s.warnEviction(ctx)
	if created {
		log.Info("store created", "backend", "redis", "prefix", opts.Prefix, "key_id", keys.ActiveID())
	}
	return s, nil
}

// init loads the sealed index key, creating it on first open, and makes
// the store's codec. A wrong key is found before anything is written.
func (s *Redis) init(ctx context.Context, keys *Keyring) (created bool, err error) {
	vals, err := s.rdb.HMGet(ctx, s.metaKey, metaFormat, metaIndexKey).Result()
	if err != nil {
		return false, mapRedisErr(err)
	}
	if vals[0] == nil && vals[1] == nil {
		key, sealed, err := newIndexKey(keys)
		clear(key) // the one kept is the one read back: another node may win
		if err != nil {
			return false, err
		}
		res, err := s.runAcked(ctx, s.sc.init, []string{s.metaKey, s.ttlKey}, formatV2, sealed).Slice()
		if err != nil {
			return false, fmt.Errorf("init meta: %w", mapRedisErr(err))
		}
		if len(res) != 3 {
			return false, fmt.Errorf("init meta: unexpected reply %d elements", len(res))
		}
		created = res[2] == int64(1)
		vals = res[:2]
	}
	format, _ := vals[0].(string)
	sealed, _ := vals[1].(string)
	if format != formatV1 && format != formatV2 {
		return false, fmt.Errorf("%s: unknown format %q", s.metaKey, format)
	}
	if sealed == "" {
		return false, fmt.Errorf("%s: no index key", s.metaKey)
	}
	key, err := openIndexKey(keys, []byte(sealed), s.metaKey)
	if err != nil {
		return false, err
	}
	s.codec = newCodec(keys, key, s.log)
	if format == formatV1 {
		return false, s.migrateV1(ctx)
	}
	return created, nil
}

// migrateV1 puts every record of a format 1 store in the due and accounts
// indexes (as Bolt.migrateV1 does) and marks the store format 2. Nodes of
// an older version must be stopped first: their Puts would not index.
func (s *Redis) migrateV1(ctx context.Context) error {
	ids, err := s.allIDs(ctx)
	if err != nil {
		return fmt.Errorf("migrate format 1 to 2: %w", err)
	}
	for len(ids) > 0 {
		n := min(len(ids), chunk)
		due := make([]redis.Z, n)
		members := make([]any, n)
		for i, id := range ids[:n] {
			due[i] = redis.Z{Score: 0, Member: id.String()}
			members[i] = id.String()
		}
		ids = ids[n:]
		_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAddNX(ctx, s.dueKey, due...)
			p.SAdd(ctx, s.acctKey, members...)
			return nil
		})
		if err != nil {
			return fmt.Errorf("migrate format 1 to 2: %w", mapRedisErr(err))
		}
	}
	if err := s.rdb.HSet(ctx, s.metaKey, metaFormat, formatV2).Err(); err != nil {
		return fmt.Errorf("migrate format 1 to 2: %w", mapRedisErr(err))
	}
	s.log.Info("store: built the due and accounts indexes (format 1 to 2)", "backend", "redis")
	return nil
}

// warnEviction logs when Redis may evict keys: every record has a TTL, so
// the volatile-* policies would pick bindings first.
func (s *Redis) warnEviction(ctx context.Context) {
	info, err := s.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return // INFO may be disabled; this is advice, not a check
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "maxmemory_policy:"); ok && v != "noeviction" {
			s.log.Warn("redis may evict sipwake's records under memory pressure; set maxmemory-policy noeviction", "maxmemory_policy", v)
		}
	}
}

func (s *Redis) recKey(id ID) string { return s.tag + ":r:" + id.String() }

func (s *Redis) aorKeyOf(hash []byte) string { return s.tag + ":a:" + ID(hash).String() }

// aorKeyFromValue is the AOR set of a raw record value, "" if the header is
// unreadable.
func (s *Redis) aorKeyFromValue(v []byte) string {
	if hdrLen(v) == 0 {
		return ""
	}
	return s.aorKeyOf(rawRecord{val: v}.aorHash())
}

// eraseKeys are the KEYS of the erase script for record id with value v.
func (s *Redis) eraseKeys(id ID, v []byte) []string {
	keys := []string{s.recKey(id), s.ttlKey, s.dueKey, s.acctKey}
	if k := s.aorKeyFromValue(v); k != "" {
		keys = append(keys, k)
	}
	return keys
}

// ready fails fast on a done context or a closed store.
func (s *Redis) ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

func mapRedisErr(err error) error {
	if errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	return err
}

// ID derives the binding ID of device under aor, as Bolt.ID does. It does
// not touch Redis.
func (s *Redis) ID(aor, device string) ID { return s.codec.ID(aor, device) }

// DeriveKey returns a key derived from the store's index key, the same on
// every node (see Bolt.DeriveKey).
func (s *Redis) DeriveKey(label string) []byte { return s.codec.DeriveKey(label) }

// Put stores r, replacing any record with the same ID (and its place in the
// TTL and AOR indexes). Redis drops it by itself Grace after ExpiresAt.
// Durability is Redis': an acknowledged Put survives a Redis crash only as
// far as its appendfsync setting and replication allow (MinReplicas makes
// Put wait for replicas).
func (s *Redis) Put(ctx context.Context, r Record) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	val, err := s.codec.seal(r)
	if err != nil {
		return err
	}
	hard := r.ExpiresAt
	if now := s.now(); now.After(hard) {
		hard = now
	}
	hard = hard.Add(s.grace)
	due, account := "", ""
	if !r.DueAt.IsZero() {
		due = fmt.Sprint(r.DueAt.UnixMilli())
	}
	if r.Account {
		account = "1"
	}
	old, err := s.runAcked(ctx, s.sc.put, []string{s.recKey(r.ID), s.ttlKey, s.aorKeyOf(rawRecord{val: val}.aorHash()), s.dueKey, s.acctKey},
		r.ID.String(), val, r.ExpiresAt.UnixMilli(), hard.UnixMilli(), due, account).Text()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: put %s: %w", r.ID, mapRedisErr(err))
	}
	// The ID moved to another AOR (a caller bug, but the indexes stay
	// right): drop it from the old AOR's set unless it moved back.
	err = s.runAcked(ctx, s.sc.unlinkMoved, []string{s.recKey(r.ID), s.aorKeyOf([]byte(old))}, r.ID.String(), old).Err()
	if err != nil {
		return fmt.Errorf("store: put %s: unlink old aor: %w", r.ID, mapRedisErr(err))
	}
	return nil
}

// Get returns the record with id, ErrNotFound if there is none, or an error
// wrapping ErrCorrupt / ErrUnknownKey if it is there but cannot be opened.
func (s *Redis) Get(ctx context.Context, id ID) (Record, error) {
	if err := s.ready(ctx); err != nil {
		return Record{}, err
	}
	v, err := s.rdb.Get(ctx, s.recKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("store: get %s: %w", id, mapRedisErr(err))
	}
	raw, err := parseRaw(id, v)
	if err != nil {
		return Record{}, err
	}
	return s.codec.open(raw)
}

// mget reads the raw values of ids (nil where absent), in one round trip.
func (s *Redis) mget(ctx context.Context, ids []ID) ([][]byte, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = s.recKey(id)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, mapRedisErr(err)
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[i] = []byte(str)
		}
	}
	return out, nil
}

// parseIDs turns set or zset members into IDs, skipping (and logging)
// members that are not IDs.
func (s *Redis) parseIDs(op string, members []string) []ID {
	ids := make([]ID, 0, len(members))
	for _, m := range members {
		id, err := ParseID(m)
		if err != nil {
			s.log.Warn("store: skipping a member that is not an id", "op", op, "err", err)
			continue
		}
		ids = append(ids, id)
	}
	return ids
}

func sortIDs(ids []ID) []ID {
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(ids)
}

// ListAOR returns every record of aor, in ID order. Records that cannot be
// opened are skipped and logged; index entries of records Redis has
// expired are dropped.
func (s *Redis) ListAOR(ctx context.Context, aor string) ([]Record, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	hash := s.codec.aorHash(aor)
	aorKey := s.aorKeyOf(hash)
	members, err := s.rdb.SMembers(ctx, aorKey).Result()
	if err != nil {
		return nil, fmt.Errorf("store: list aor: %w", mapRedisErr(err))
	}
	ids := sortIDs(s.parseIDs("list_aor", members))
	vals, err := s.mget(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("store: list aor: %w", err)
	}
	var raws []rawRecord
	pruneKeys, pruneArgs := []string{aorKey}, []any{}
	for i, v := range vals {
		if v == nil {
			pruneKeys = append(pruneKeys, s.recKey(ids[i]))
			pruneArgs = append(pruneArgs, ids[i].String())
			continue
		}
		raw, err := parseRaw(ids[i], v)
		if err != nil || !bytes.Equal(raw.aorHash(), hash) {
			s.log.Warn("store: skipping unreadable record", "op", "list_aor", "id", ids[i].String())
			continue
		}
		raws = append(raws, raw)
	}
	if len(pruneArgs) > 0 {
		if err := s.sc.prune.Run(ctx, s.rdb, pruneKeys, pruneArgs...).Err(); err != nil && !errors.Is(err, redis.Nil) {
			s.log.Warn("store: pruning expired index entries", "op", "list_aor", "err", err)
		}
	}
	return s.codec.openAll("list_aor", raws), nil
}

// Delete erases the record with id and returns what it held, so the caller
// can un-register it upstream; ErrNotFound if absent. A record that cannot be
// opened is erased all the same: Delete then returns its ID and expiry with
// an error wrapping ErrCorrupt or ErrUnknownKey.
func (s *Redis) Delete(ctx context.Context, id ID) (Record, error) {
	if err := s.ready(ctx); err != nil {
		return Record{}, err
	}
	key := s.recKey(id)
	for range redisDeleteTries {
		v, err := s.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return Record{}, ErrNotFound
		}
		if err != nil {
			return Record{}, fmt.Errorf("store: delete %s: %w", id, mapRedisErr(err))
		}
		n, err := s.runAcked(ctx, s.sc.erase, s.eraseKeys(id, v), id.String(), v, "").Int()
		if err != nil {
			return Record{}, fmt.Errorf("store: delete %s: %w", id, mapRedisErr(err))
		}
		if n != 1 {
			continue // changed since the GET: look again
		}
		if hdrLen(v) == 0 {
			return Record{ID: id}, fmt.Errorf("store: deleted %s: %w: bad header", id, ErrCorrupt)
		}
		raw := rawRecord{id: id, val: v}
		r, err := s.codec.open(raw)
		if err != nil {
			return Record{ID: id, ExpiresAt: raw.expiry()}, fmt.Errorf("store: deleted unreadable record: %w", err)
		}
		return r, nil
	}
	return Record{}, fmt.Errorf("store: delete %s: the record kept changing under %d tries", id, redisDeleteTries)
}

// DeleteAOR erases every record of aor and returns the erased ones (those
// that could be opened; the others are erased too, and logged).
func (s *Redis) DeleteAOR(ctx context.Context, aor string) ([]Record, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	aorKey := s.aorKeyOf(s.codec.aorHash(aor))
	members, err := s.rdb.SMembers(ctx, aorKey).Result()
	if err != nil {
		return nil, fmt.Errorf("store: delete aor: %w", mapRedisErr(err))
	}
	ids := sortIDs(s.parseIDs("delete_aor", members))
	if len(ids) == 0 {
		return nil, nil
	}
	keys := []string{aorKey, s.ttlKey, s.dueKey, s.acctKey}
	args := make([]any, len(ids))
	for i, id := range ids {
		keys = append(keys, s.recKey(id))
		args[i] = id.String()
	}
	res, err := s.runAcked(ctx, s.sc.deleteAOR, keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("store: delete aor: %w", mapRedisErr(err))
	}
	var raws []rawRecord
	for i, v := range res {
		str, ok := v.(string)
		if !ok || i >= len(ids) {
			continue
		}
		raw, err := parseRaw(ids[i], []byte(str))
		if err != nil {
			s.log.Warn("store: erased unreadable record", "op", "delete_aor", "id", ids[i].String())
			continue
		}
		raws = append(raws, raw)
	}
	return s.codec.openAll("delete_aor", raws), nil
}

// TakeExpired erases up to limit records (all, if limit <= 0) whose
// ExpiresAt is not after now, soonest first, and returns them. Several
// callers, on one node or many, may run it at once: each record goes to
// exactly one of them. Expired records that cannot be opened are erased
// too, and logged instead of returned; so are index entries of records
// Redis has already dropped (no sweeper took them within Grace).
func (s *Redis) TakeExpired(ctx context.Context, now time.Time, limit int) ([]Record, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	// Scores are milliseconds; records are exact to the nanosecond. Those
	// scored before now's millisecond are surely due; those in it are
	// checked against the expiry in their header.
	nowMs := now.UnixMilli()
	var out []Record
	var err error
	for limit <= 0 || len(out) < limit {
		want := chunk
		if limit > 0 {
			want = min(limit-len(out), chunk)
		}
		var sure, edge *redis.StringSliceCmd
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			sure = p.ZRangeByScore(ctx, s.ttlKey, &redis.ZRangeBy{Min: "-inf", Max: fmt.Sprintf("(%d", nowMs), Count: int64(want)})
			edge = p.ZRangeByScore(ctx, s.ttlKey, &redis.ZRangeBy{Min: fmt.Sprint(nowMs), Max: fmt.Sprint(nowMs), Count: int64(want)})
			return nil
		})
		if err != nil {
			err = mapRedisErr(err)
			break
		}
		ids := make([]ID, 0, len(sure.Val())+len(edge.Val()))
		var junk []any
		nSure := 0
		for i, m := range append(sure.Val(), edge.Val()...) {
			if id, err := ParseID(m); err == nil {
				ids = append(ids, id)
				if i < len(sure.Val()) {
					nSure++
				}
			} else {
				junk = append(junk, m)
			}
		}
		if len(junk) > 0 {
			// Not ours: nothing to hand over, and it would stall the index.
			s.log.Warn("store: dropping TTL index members that are not ids", "count", len(junk))
			if err = s.rdb.ZRem(ctx, s.ttlKey, junk...).Err(); err != nil {
				err = mapRedisErr(err)
				break
			}
		}
		if len(ids) == 0 {
			if len(junk) > 0 {
				continue
			}
			break
		}
		var vals [][]byte
		if vals, err = s.mget(ctx, ids); err != nil {
			break
		}
		// Claim in one pipeline: the erase script removes the zset member
		// only if it is still due and the value unchanged, so of several
		// sweepers exactly one erases (and returns) each record.
		var calls []scriptCall
		var claimed [][]byte
		var claimedIDs []ID
		for i, id := range ids {
			v := vals[i]
			if len(calls) == want {
				break
			}
			if i >= nSure && hdrLen(v) > 0 && (rawRecord{val: v}).expiry().After(now) {
				continue // in now's millisecond, but not due yet
			}
			calls = append(calls, scriptCall{keys: s.eraseKeys(id, v), args: []any{id.String(), v, nowMs}})
			claimed = append(claimed, v)
			claimedIDs = append(claimedIDs, id)
		}
		res, claimErr := s.runPipelined(ctx, s.sc.erase, calls)
		won := 0
		for i, n := range res {
			if n != 1 {
				continue // another sweeper took it, or it was refreshed
			}
			won++
			id, v := claimedIDs[i], claimed[i]
			if v == nil {
				s.log.Warn("store: redis expired a record before any sweeper took it; it was not un-registered upstream (sweepers down longer than the grace?)", "id", id.String())
				continue
			}
			raw, err := parseRaw(id, v)
			if err != nil {
				s.log.Warn("store: erased unreadable record", "op", "take_expired", "id", id.String(), "err", err)
				continue
			}
			r, err := s.codec.open(raw)
			if err != nil {
				s.log.Warn("store: erased unreadable record", "op", "take_expired", "id", id.String(), "err", err)
				continue
			}
			out = append(out, r)
		}
		if claimErr != nil {
			err = claimErr
			break
		}
		if won == 0 {
			break // nothing left that this caller could take
		}
	}
	if err != nil {
		if len(out) == 0 {
			return nil, fmt.Errorf("store: take expired: %w", err)
		}
		// What was erased must reach the caller (to un-register it
		// upstream); the error will show again at the next call.
		s.log.Warn("store: take expired: stopped early", "taken", len(out), "err", err)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := a.ExpiresAt.Compare(b.ExpiresAt); c != 0 {
			return c
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
	return out, nil
}

// allIDs lists the IDs in the TTL index, in ID order. ZSCAN may repeat a
// member; sortIDs drops repeats.
func (s *Redis) allIDs(ctx context.Context) ([]ID, error) {
	var members []string
	var cursor uint64
	for {
		kv, next, err := s.rdb.ZScan(ctx, s.ttlKey, cursor, "", 1024).Result()
		if err != nil {
			return nil, mapRedisErr(err)
		}
		for i := 0; i < len(kv); i += 2 {
			members = append(members, kv[i])
		}
		if cursor = next; cursor == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return sortIDs(s.parseIDs("scan", members)), nil
}

// scanRaw calls fn with chunks of raw records in ID order. The IDs are
// listed first; records written during a scan may or may not be seen.
func (s *Redis) scanRaw(ctx context.Context, fn func([]rawRecord) error) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	ids, err := s.allIDs(ctx)
	if err != nil {
		return err
	}
	return s.fetch(ctx, ids, fn)
}

// fetch calls fn with the raw records of ids (those still there), in
// chunks read with one MGET each.
func (s *Redis) fetch(ctx context.Context, ids []ID, fn func([]rawRecord) error) error {
	for len(ids) > 0 {
		n := min(len(ids), chunk)
		batch := ids[:n]
		ids = ids[n:]
		vals, err := s.mget(ctx, batch)
		if err != nil {
			return err
		}
		raws := make([]rawRecord, 0, n)
		for i, v := range vals {
			if v != nil {
				raws = append(raws, rawRecord{id: batch[i], val: v})
			}
		}
		if err := fn(raws); err != nil {
			return err
		}
	}
	return nil
}

// Scan calls fn with every stored record, in ID order, including expired
// ones no sweeper has taken yet. Records that cannot be opened are skipped
// and logged. An error from fn stops the scan and is returned.
func (s *Redis) Scan(ctx context.Context, fn func(Record) error) error {
	return s.scanRaw(ctx, s.codec.openEach(ctx, "scan", fn))
}

// ScanDue calls fn with every record whose DueAt is not after until,
// soonest first, reading only the due index and those records. The due
// IDs are listed first, so fn may Put the record again. Records that
// cannot be opened are skipped and logged; an error from fn stops the scan.
func (s *Redis) ScanDue(ctx context.Context, until time.Time, fn func(Record) error) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	// Scores are milliseconds; the header holds the nanosecond due time.
	members, err := s.rdb.ZRangeByScore(ctx, s.dueKey, &redis.ZRangeBy{Min: "-inf", Max: fmt.Sprint(until.UnixMilli())}).Result()
	if err != nil {
		return fmt.Errorf("store: scan due: %w", mapRedisErr(err))
	}
	open := s.codec.openEach(ctx, "scan_due", fn)
	return s.fetch(ctx, s.parseIDs("scan_due", members), func(raws []rawRecord) error {
		due := raws[:0]
		for _, r := range validRaws(raws) {
			if r.dueKey() != nil && !r.dueAt().After(until) {
				due = append(due, r)
			}
		}
		return open(due)
	})
}

// ScanAccounts calls fn with every record stored with Account set (and
// records written by format 1, until they are written again), in ID order.
// Records that cannot be opened are skipped and logged; an error from fn
// stops the scan.
func (s *Redis) ScanAccounts(ctx context.Context, fn func(Record) error) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	members, err := s.rdb.SMembers(ctx, s.acctKey).Result()
	if err != nil {
		return fmt.Errorf("store: scan accounts: %w", mapRedisErr(err))
	}
	return s.fetch(ctx, sortIDs(s.parseIDs("scan_accounts", members)), s.codec.openEach(ctx, "scan_accounts", fn))
}

// Count returns the number of records in the TTL index: the stored ones,
// plus any Redis has dropped since the last sweep (TakeExpired clears them).
func (s *Redis) Count(ctx context.Context) (int, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	n, err := s.rdb.ZCard(ctx, s.ttlKey).Result()
	if err != nil {
		return 0, fmt.Errorf("store: count: %w", mapRedisErr(err))
	}
	return int(n), nil
}

// KeyUsage counts records per sealing key id, reading only the headers. Every
// key in the keyring appears, with 0 if unused: a key can be retired once its
// count is 0 (after Rotate). Ids not in the keyring appear too.
func (s *Redis) KeyUsage(ctx context.Context) (map[string]int, error) {
	return s.codec.keyUsage(ctx, s.scanRaw)
}

// Rotate re-seals, under the active key, the index key and every record
// still sealed under another key. It returns how many records it re-sealed;
// records it cannot open are left as they are and reported in the error.
// A record changed meanwhile (a Put seals under the active key anyway) is
// left to its writer. Several nodes may rotate at once.
func (s *Redis) Rotate(ctx context.Context) (int, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	rot := s.codec.rotation()
	sealed, err := s.rdb.HGet(ctx, s.metaKey, metaIndexKey).Bytes()
	if err != nil {
		return 0, fmt.Errorf("store: rotate: %w", mapRedisErr(err))
	}
	resealedKey, from, err := s.codec.resealIndexKey(sealed)
	if err != nil {
		return 0, fmt.Errorf("store: rotate: %w", err)
	}
	if resealedKey != nil {
		if err := s.sc.swapMeta.Run(ctx, s.rdb, []string{s.metaKey}, sealed, resealedKey).Err(); err != nil {
			return 0, fmt.Errorf("store: rotate: index key: %w", mapRedisErr(err))
		}
		s.log.Info("store: index key re-sealed", "from_key_id", from, "to_key_id", rot.active)
	}

	var resealed int
	err = s.scanRaw(ctx, func(raws []rawRecord) error {
		var calls []scriptCall
		for _, raw := range raws {
			val, err := rot.reseal(raw)
			if err != nil {
				return err
			}
			if val != nil {
				calls = append(calls, scriptCall{keys: []string{s.recKey(raw.id)}, args: []any{raw.val, val}})
			}
		}
		res, err := s.runPipelined(ctx, s.sc.swap, calls)
		for _, n := range res {
			resealed += int(n)
		}
		return err
	})
	if err != nil {
		return resealed, fmt.Errorf("store: rotate: %w", err)
	}
	return rot.done(resealed, "backend", "redis")
}

// Compact does nothing: an erased key's memory is freed at once. What
// Redis persisted (RDB snapshots, the AOF) is Redis' to rewrite; run it
// without persistence, or with an AOF rewrite schedule, if erased
// ciphertext must not linger on its disk. It exists so that a Redis store
// can be swept like a Bolt one.
func (s *Redis) Compact(ctx context.Context) error { return s.ready(ctx) }

// Close closes the connections; later calls return ErrClosed. Close is
// idempotent.
func (s *Redis) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.rdb.Close()
}

// Client is the Redis connection, for the cluster bus to share.
func (r *Redis) Client() redis.UniversalClient { return r.rdb }

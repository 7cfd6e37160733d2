package store

import (
	"context"
	"errors"
	"fmt"
	"github.com/sipwake/sipwake/internal/peertest"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func openRedisAt(t testing.TB, addr, prefix string, keys *Keyring, grace time.Duration) *Redis {
	t.Helper()
	log := testLog(t)
	if _, ok := t.(*testing.B); ok {
		log = nil
	}
	s, err := OpenRedis(t.Context(), RedisOptions{Addrs: []string{addr}, Prefix: prefix, Grace: grace}, keys, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawRedis is a plain client on the test's server, to look at and tamper
// with what the store wrote, as an attacker with Redis access would.
func rawRedis(t testing.TB, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dumpRedis returns every key in the server with its type and full value.
func dumpRedis(t testing.TB, c *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		typ, err := c.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		var v string
		switch typ {
		case "string":
			v, err = c.Get(ctx, k).Result()
		case "set":
			var m []string
			m, err = c.SMembers(ctx, k).Result()
			slices.Sort(m)
			v = strings.Join(m, "\n")
		case "zset":
			var m []redis.Z
			m, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
			v = fmt.Sprint(m)
		case "hash":
			var m map[string]string
			m, err = c.HGetAll(ctx, k).Result()
			for _, f := range slices.Sorted(maps.Keys(m)) {
				v += f + "=" + m[f] + "\n"
			}
		case "none":
			continue // expired between KEYS and TYPE
		default:
			t.Fatalf("key %q of unexpected type %s", k, typ)
		}
		if err != nil {
			t.Fatal(err)
		}
		out[k] = typ + ":" + v
	}
	return out
}

// redisWrites is Redis' count of changes since the last save: with saving
// off it only grows, by one per write.
func redisWrites(t testing.TB, c *redis.Client) string {
	return redisInfo(t, c, "persistence", "rdb_changes_since_last_save")
}

// redisInfo is field of the INFO section.
func redisInfo(t testing.TB, c *redis.Client, section, field string) string {
	t.Helper()
	info, err := c.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	t.Fatalf("no %s in INFO %s", field, section)
	return ""
}

// Another prefix on the same Redis is another store, with an index key of
// its own.
func TestRedisPrefixesAreStores(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	keys := testKeyring(t, "a")
	ctx := t.Context()
	s := openRedisAt(t, addr, "prefix", keys, 0)
	r := Record{ID: s.ID("sip:alice@example.com", "dev0"), AOR: "sip:alice@example.com", ExpiresAt: testBase().Add(day), Data: []byte("x")}
	if err := s.Put(ctx, r); err != nil {
		t.Fatal(err)
	}
	other := openRedisAt(t, addr, "prefix-other", keys, 0)
	if other.ID("sip:alice@example.com", "dev0") == r.ID {
		t.Fatal("two prefixes share an index key")
	}
	if n, _ := other.Count(ctx); n != 0 {
		t.Fatalf("other prefix sees %d records", n)
	}
}

// The bbolt and Redis backends seal the same bytes: a value written by one
// opens in the other under the same ID and index key.
func TestRedisSameFormatAsBolt(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	keys := testKeyring(t, "a")
	s := openRedisAt(t, addr, "format", keys, 0)
	b := openAt(t, tempDB(t), keys)
	b.codec.indexKey = s.codec.indexKey // as if the index key had been migrated
	r := Record{ID: s.ID("sip:a@x", "d"), AOR: "sip:a@x", ExpiresAt: testBase().Add(day), Data: []byte("payload")}
	if b.ID("sip:a@x", "d") != r.ID {
		t.Fatal("IDs differ under one index key")
	}
	if err := s.Put(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	v, err := rawRedis(t, addr).Get(t.Context(), s.recKey(r.ID)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.codec.open(rawRecord{id: r.ID, val: v})
	if err != nil || got.AOR != r.AOR || string(got.Data) != "payload" || !got.ExpiresAt.Equal(r.ExpiresAt) {
		t.Fatalf("bbolt opening a Redis value: %+v, %v", got, err)
	}
}

func TestRedisWrongKeyWritesNothing(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	raw := rawRedis(t, addr)
	s := openRedisAt(t, addr, "wrongkey", testKeyring(t, "a"), 0)
	r := Record{ID: s.ID("sip:a@x", "d"), AOR: "sip:a@x", ExpiresAt: testBase(), Data: []byte("x")}
	if err := s.Put(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, writes := dumpRedis(t, raw), redisWrites(t, raw)

	checkWrongKeys(t, func(t *testing.T, keys *Keyring) error {
		_, err := OpenRedis(t.Context(), RedisOptions{Addrs: []string{addr}, Prefix: "wrongkey"}, keys, testLog(t))
		return err
	}, func(t *testing.T) {
		if after := dumpRedis(t, raw); !maps.Equal(after, before) {
			t.Fatal("Redis changed by a refused open")
		}
		if w := redisWrites(t, raw); w != writes {
			t.Fatalf("a refused open wrote to Redis: changes %s -> %s", writes, w)
		}
	})
	// The right key still opens it.
	s = openRedisAt(t, addr, "wrongkey", testKeyring(t, "a"), 0)
	if _, err := s.Get(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}

	// Records with no meta (meta lost, or deleted by hand): no new index
	// key is invented, which would orphan every record.
	if err := raw.Del(t.Context(), s.metaKey).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRedis(t.Context(), RedisOptions{Addrs: []string{addr}, Prefix: "wrongkey"}, testKeyring(t, "a"), nil); err == nil || !strings.Contains(err.Error(), "no meta") {
		t.Fatalf("open with records but no meta: %v", err)
	}
	if n, _ := raw.Exists(t.Context(), s.metaKey).Result(); n != 0 {
		t.Fatal("an index key was invented")
	}
	// Garbage in meta is an error, not a panic.
	for _, v := range []string{"", "x", "\x01", "\x01\x05ab"} {
		raw.HSet(t.Context(), s.metaKey, "format", "1", "index-key", v)
		if _, err := OpenRedis(t.Context(), RedisOptions{Addrs: []string{addr}, Prefix: "wrongkey"}, testKeyring(t, "a"), nil); err == nil {
			t.Fatalf("open with index key %q succeeded", v)
		}
	}
}

// Nodes opening an empty store at once agree on one index key.
func TestRedisConcurrentFirstOpen(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	keys := testKeyring(t, "a")
	const nodes = 8
	ids := make([]ID, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			s, err := OpenRedis(t.Context(), RedisOptions{Addrs: []string{addr}, Prefix: "race"}, keys, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			ids[i] = s.ID("sip:a@x", "d")
		})
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Fatal("nodes derived different IDs: more than one index key was made")
		}
	}
}

func TestRedisTakeExpiredConcurrently(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	keys := testKeyring(t, "a")
	ctx := t.Context()
	const nodes, n = 4, 3000
	stores := make([]*Redis, nodes)
	for i := range stores {
		stores[i] = openRedisAt(t, addr, "sweep", keys, 0)
	}
	want := make(map[ID]bool, n)
	var recs []Record
	for i := range n {
		aor := fmt.Sprintf("sip:user%d@example.com", i%300)
		r := Record{ID: stores[0].ID(aor, fmt.Sprint("dev", i)), AOR: aor, ExpiresAt: testBase().Add(time.Duration(i%7) * time.Millisecond), Data: []byte("x")}
		recs = append(recs, r)
		want[r.ID] = true
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if err := stores[i%nodes].Put(ctx, recs[i]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	// Two sweepers per node, with several batch sizes, all at once.
	var mu sync.Mutex
	got := map[ID]int{}
	per := make([]int, 2*nodes)
	gate := make(chan struct{})
	for i := range 2 * nodes {
		wg.Go(func() {
			limit := []int{0, 1, 7, 64}[i%4]
			<-gate // all at once, so that they collide
			for {
				rs, err := stores[i%nodes].TakeExpired(ctx, testBase().Add(time.Second), limit)
				if err != nil {
					t.Error(err)
					return
				}
				if len(rs) == 0 {
					// Empty-handed: lost every race, or all is taken.
					if c, err := stores[i%nodes].Count(ctx); err != nil || c == 0 {
						return
					}
					continue
				}
				if limit > 0 && len(rs) > limit {
					t.Errorf("TakeExpired(limit %d) returned %d", limit, len(rs))
				}
				mu.Lock()
				for _, r := range rs {
					got[r.ID]++
				}
				per[i] += len(rs)
				mu.Unlock()
			}
		})
	}
	close(gate)
	wg.Wait()
	t.Logf("records per sweeper: %v", per)
	rest, err := stores[0].TakeExpired(ctx, testBase().Add(time.Second), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rest {
		got[r.ID]++
	}
	for id, c := range got {
		if c != 1 {
			t.Fatalf("record %s handed out %d times", id, c)
		}
		if !want[id] {
			t.Fatalf("record %s was never put", id)
		}
	}
	if len(got) != n {
		t.Fatalf("%d records taken, want %d", len(got), n)
	}
	if c, _ := stores[1].Count(ctx); c != 0 {
		t.Fatalf("Count after sweeping = %d", c)
	}
	if keys := dumpRedis(t, rawRedis(t, addr)); len(keys) != 1 {
		t.Fatalf("keys left after sweeping everything: %v", slices.Collect(maps.Keys(keys)))
	}
}

// A record no sweeper took is dropped by Redis Grace after it expired, with
// its AOR index entry, and the TTL index entry goes at the next sweep.
func TestRedisOwnExpiryDropsRecord(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	raw := rawRedis(t, addr)
	ctx := t.Context()
	const grace = 300 * time.Millisecond
	s := openRedisAt(t, addr, "expiry", testKeyring(t, "a"), grace)
	start := time.Now()
	short := Record{ID: s.ID("sip:a@x", "short"), AOR: "sip:a@x", ExpiresAt: start.Add(200 * time.Millisecond), Data: []byte("s")}
	long := Record{ID: s.ID("sip:a@x", "long"), AOR: "sip:a@x", ExpiresAt: start.Add(time.Hour), Data: []byte("l")}
	lone := Record{ID: s.ID("sip:b@x", "lone"), AOR: "sip:b@x", ExpiresAt: start.Add(100 * time.Millisecond), Data: []byte("b")}
	for _, r := range []Record{short, long, lone} {
		if err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if pttl := raw.PTTL(ctx, s.recKey(short.ID)).Val(); pttl < 300*time.Millisecond || pttl > 500*time.Millisecond {
		t.Fatalf("record PTTL %v, want ExpiresAt+grace ≈ 500ms", pttl)
	}
	for {
		_, err := s.Get(ctx, short.ID)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("Redis did not expire the record")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d < 450*time.Millisecond {
		t.Fatalf("record gone after %v, before ExpiresAt+grace", d)
	}
	// The lone AOR's set expired with its only record.
	if n := raw.Exists(ctx, s.aorKeyOf(s.codec.aorHash("sip:b@x"))).Val(); n != 0 {
		t.Fatal("AOR set of an expired record outlived it")
	}
	list, err := s.ListAOR(ctx, "sip:a@x")
	if err != nil || len(list) != 1 || list[0].ID != long.ID {
		t.Fatalf("ListAOR after Redis expiry: %d, %v", len(list), err)
	}
	if m := raw.SMembers(ctx, s.aorKeyOf(s.codec.aorHash("sip:a@x"))).Val(); len(m) != 1 || m[0] != long.ID.String() {
		t.Fatalf("AOR set not pruned: %v", m)
	}
	if c, _ := s.Count(ctx); c != 3 {
		t.Fatalf("Count before the sweep = %d, want 3 (stale ttl entries)", c)
	}
	// Nothing to hand the relay (the content is gone), but the index is clean.
	got, err := s.TakeExpired(ctx, time.Now(), 0)
	if err != nil || len(got) != 0 {
		t.Fatalf("TakeExpired after Redis expiry: %d, %v", len(got), err)
	}
	if c, _ := s.Count(ctx); c != 1 {
		t.Fatalf("Count after the sweep = %d, want 1", c)
	}

	// A record put after its ExpiresAt still lives Grace in Redis, so a
	// sweeper can take it and un-register it upstream.
	late := Record{ID: s.ID("sip:c@x", "late"), AOR: "sip:c@x", ExpiresAt: time.Now().Add(-time.Hour), Data: []byte("c")}
	if err := s.Put(ctx, late); err != nil {
		t.Fatal(err)
	}
	if pttl := raw.PTTL(ctx, s.recKey(late.ID)).Val(); pttl < 200*time.Millisecond {
		t.Fatalf("late record PTTL %v, want about the grace", pttl)
	}
	got, err = s.TakeExpired(ctx, time.Now(), 0)
	if err != nil || len(got) != 1 || got[0].ID != late.ID {
		t.Fatalf("TakeExpired of a late record: %d, %v", len(got), err)
	}
}

func TestRedisHoldsNoPlaintext(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	raw := rawRedis(t, addr)
	ctx := t.Context()
	s := openRedisAt(t, addr, "plain", testKeyring(t, "a"), 0)
	putSecrets(t, s)
	check := func(when string, dump map[string]string) {
		t.Helper()
		for k, v := range dump {
			if l := leaks(k + "\x00" + v); len(l) > 0 {
				t.Errorf("%s: key %q or its value holds %q", when, k, l)
			}
		}
	}
	dump := dumpRedis(t, raw)
	if len(dump) != 50+3 { // records, ttl, one AOR set, meta
		t.Fatalf("%d keys, want 53", len(dump))
	}
	check("after Put", dump)
	if _, err := s.DeleteAOR(ctx, secretAOR); err != nil {
		t.Fatal(err)
	}
	dump = dumpRedis(t, raw)
	check("after DeleteAOR", dump)
	if len(dump) != 1 || dump[s.metaKey] == "" {
		t.Fatalf("after DeleteAOR keys left: %v", slices.Collect(maps.Keys(dump)))
	}
}

func TestRedisTamperedRecords(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	raw := rawRedis(t, addr)
	keys := testKeyring(t, "a")
	ctx := t.Context()
	s := openRedisAt(t, addr, "tamper", keys, 0)
	tp := putTampered(t, s)
	garbage := Record{ID: s.ID(tamperedAOR, "garbage"), AOR: tamperedAOR, ExpiresAt: testBase().Add(5 * day), Data: []byte("payload garbage")}
	if err := s.Put(ctx, garbage); err != nil {
		t.Fatal(err)
	}
	get := func(id ID) []byte {
		v, err := raw.Get(ctx, s.recKey(id)).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	set := func(id ID, v []byte) {
		if err := raw.Set(ctx, s.recKey(id), v, redis.KeepTTL).Err(); err != nil {
			t.Fatal(err)
		}
	}
	tp.tamper(get, set)
	set(garbage.ID, []byte("not a record at all, but long enough for a header"))
	// And a TTL index member that is no ID.
	raw.ZAdd(ctx, s.ttlKey, redis.Z{Score: 1, Member: "nonsense"})

	s = openRedisAt(t, addr, "tamper", keys, 0)
	tp.check(t, s)
	if _, err := s.Get(ctx, garbage.ID); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Get(garbage): %v, want ErrCorrupt", err)
	}
	if u, err := s.KeyUsage(ctx); err != nil || u["?"] != 2 {
		t.Fatalf("KeyUsage: %v, %v; want ?: 2", u, err)
	}
	tp.erase(t, s)
	// The sweeper erases (and logs) what it cannot open, and hands over the rest.
	got, err := s.TakeExpired(ctx, testBase().Add(100*day), 0)
	if err != nil || len(got) != 1 || got[0].ID != tp.fine.ID {
		t.Fatalf("TakeExpired: %d, %v; want the one readable record", len(got), err)
	}
	if c, _ := s.Count(ctx); c != 0 {
		t.Fatalf("Count after erasing all = %d", c)
	}
	// Records whose header was mangled could not name their AOR set; as in
	// bbolt, their entries there go lazily (ListAOR prunes them; the set
	// also expires with its last record).
	if l, err := s.ListAOR(ctx, tamperedAOR); err != nil || len(l) != 0 {
		t.Fatalf("ListAOR after erasing all: %d, %v", len(l), err)
	}
	if dump := dumpRedis(t, raw); len(dump) != 1 {
		t.Fatalf("keys left: %v", slices.Collect(maps.Keys(dump)))
	}
}

// Re-sealing keeps each record's Redis expiry (the suite checks the rest
// of Rotate).
func TestRedisRotateKeepsExpiry(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	ctx := t.Context()
	s := openRedisAt(t, addr, "rotate", testKeyring(t, "A"), 0)
	r := Record{ID: s.ID("sip:a@x", "d"), AOR: "sip:a@x", ExpiresAt: testBase().Add(3 * day), Data: []byte("x")}
	if err := s.Put(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openRedisAt(t, addr, "rotate", testKeyring(t, "B", "A"), 0)
	if resealed, err := s.Rotate(ctx); err != nil || resealed != 1 {
		t.Fatalf("Rotate = %d, %v; want 1", resealed, err)
	}
	if pttl := rawRedis(t, addr).PTTL(ctx, s.recKey(r.ID)).Val(); pttl <= 0 {
		t.Fatalf("PTTL after Rotate = %v", pttl)
	}
}

// A record put again under another AOR (a caller bug) leaves the old AOR's
// index, as in bbolt.
func TestRedisPutMovesAOR(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	ctx := t.Context()
	s := openRedisAt(t, addr, "move", testKeyring(t, "a"), 0)
	r := Record{ID: s.ID("sip:a@x", "d"), AOR: "sip:a@x", ExpiresAt: testBase().Add(day), Data: []byte("1")}
	if err := s.Put(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.AOR = "sip:b@x"
	if err := s.Put(ctx, r); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.ListAOR(ctx, "sip:a@x"); len(l) != 0 {
		t.Fatalf("old AOR still lists %d", len(l))
	}
	if gone, _ := s.DeleteAOR(ctx, "sip:a@x"); len(gone) != 0 {
		t.Fatal("DeleteAOR of the old AOR erased the moved record")
	}
	if l, _ := s.ListAOR(ctx, "sip:b@x"); len(l) != 1 {
		t.Fatalf("new AOR lists %d", len(l))
	}
}

func TestRedisSweeper(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	ctx := t.Context()
	s := openRedisAt(t, addr, "sweeper", testKeyring(t, "a"), 0)
	for i := range 600 {
		r := Record{ID: s.ID("sip:a@x", fmt.Sprint(i)), AOR: "sip:a@x", ExpiresAt: testBase().Add(time.Duration(i) * time.Second), Data: []byte("x")}
		if err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var got int
	sw := NewSweeper(s, time.Minute, 0, func() time.Time { return testBase().Add(time.Hour) }, func(_ context.Context, rs []Record) { got += len(rs) }, nil)
	n, err := sw.SweepOnce(ctx)
	if err != nil || n != 600 || got != 600 {
		t.Fatalf("SweepOnce = %d, %v; handed over %d", n, err, got)
	}
}

func TestRedisOptionsChecked(t *testing.T) {
	keys := testKeyring(t, "a")
	for _, o := range []RedisOptions{
		{},
		{Addrs: []string{"127.0.0.1:1"}, Prefix: "a{b}"},
		{Addrs: []string{"127.0.0.1:1"}, Prefix: "a b"},
		{Addrs: []string{"127.0.0.1:1"}, Grace: -time.Second},
		{Addrs: []string{"127.0.0.1:1"}, Timeout: -time.Second},
		{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, DB: 2},
		{Addrs: []string{"127.0.0.1:1"}, Cluster: true, DB: 1},
	} {
		if _, err := OpenRedis(t.Context(), o, keys, nil); err == nil || !strings.Contains(err.Error(), "store: open redis: ") {
			t.Errorf("OpenRedis(%+v) = %v, want an options error", o, err)
		}
	}
	if _, err := OpenRedis(t.Context(), RedisOptions{Addrs: []string{"x"}}, nil, nil); err == nil {
		t.Error("nil keyring accepted")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	// Nothing listens on a fresh directory's socket: a clear error, soon
	// (within Timeout, retries included).
	_, err := OpenRedis(ctx, RedisOptions{Addrs: []string{t.TempDir() + "/none.sock"}, Timeout: 100 * time.Millisecond}, keys, nil)
	if err == nil || errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with no Redis: %v", err)
	}
	t.Log(err)
}

// A Redis that stops answering (a partition keeps the connection open)
// fails a read and a scripted write with an error that says so, bounded by
// the store's timeout rather than held through go-redis' retries; once it
// answers again, so does the store, with what was written before.
func TestRedisStalledFailsWithinItsTimeout(t *testing.T) {
	addr := peertest.StartRedis(t, peertest.Addr(t, 1, 6379))
	link := peertest.StartTCPRelay(t, peertest.Addr(t, 2, 6379), addr)
	ctx := t.Context()
	s, err := OpenRedis(ctx, RedisOptions{Addrs: []string{link.Addr()}, Prefix: "stall", Timeout: 200 * time.Millisecond}, testKeyring(t, "a"), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	r := Record{ID: s.ID("sip:a@x", "d"), AOR: "sip:a@x", ExpiresAt: testBase().Add(day), Data: []byte("1")}
	if err := s.Put(ctx, r); err != nil {
		t.Fatal(err)
	}

	link.Pause()
	const says = "redis did not answer within 200ms"
	if _, err := s.Get(ctx, r.ID); err == nil || !strings.Contains(err.Error(), says) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get from a stalled Redis: %v, want %q", err, says)
	}
	r2 := Record{ID: s.ID("sip:a@x", "e"), AOR: "sip:a@x", ExpiresAt: testBase().Add(day), Data: []byte("2")}
	if err := s.Put(ctx, r2); err == nil || !strings.Contains(err.Error(), says) {
		t.Fatalf("Put to a stalled Redis: %v, want %q", err, says)
	}

	link.Resume()
	got, err := s.Get(ctx, r.ID)
	if err != nil || string(got.Data) != "1" {
		t.Fatalf("Get once Redis answers again: %q %v", got.Data, err)
	}
}

package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// On-disk layout (format 3). Nothing in it is plaintext user data:
//
//	meta  "format"    -> "3"
//	meta  "index-key" -> Seal(32 random bytes, aad "sipwake/meta/index-key/1")
//	meta  "records"   -> number of records, uint64 big-endian (Count without a walk)
//	rec   ID          -> header (see header.go) | Seal(uvarint len(aor) | aor | data, aad)
//	aor   HMAC(aor) | ID  -> ""
//	ttl   expiry | ID     -> ""
//	due   due | ID        -> ""   records with a DueAt
//	acct  ID              -> ""   records with Account set
//
// expiry and due are big-endian Unix nanoseconds with the sign bit flipped,
// so byte order is time order. The record's aad is its ID and its whole
// plaintext header, so a value copied to another ID, or a header edited to
// dodge the sweeper or move the record to another AOR or index, fails to
// open. Format 1 had no due and acct buckets; OpenBolt builds them. Format
// 3 is format 2 with ttl and due entries that may be earlier than their
// record's times (lower bounds, see replace): a sipwake that reads format 2
// would erase refreshed records early, so it must not open a format 3 file.
const (
	bucketMeta = "meta"
	bucketRec  = "rec"
	bucketAOR  = "aor"
	bucketTTL  = "ttl"
	bucketDue  = "due"
	bucketAcct = "acct"

	metaRecords = "records"

	// lockTimeout bounds the wait for bbolt's file lock, so a second
	// process on the same file fails with a clear error instead of hanging.
	lockTimeout = 2 * time.Second
	// settleBatch bounds the index entries one transaction settles.
	settleBatch = 4096
	// migrateChunk bounds the records one transaction of migrateV1 indexes.
	migrateChunk = 10000
	// compactTxSize bounds one transaction of the copy in Compact.
	compactTxSize = 64 << 20
	// appendFill is how full bbolt fills a page before splitting it, for
	// indexes whose keys mostly grow (bbolt's default, 0.5, suits random
	// keys).
	appendFill = 0.95
)

// Bolt is the embedded backend: one bbolt file, sealed values, an AOR index
// and a TTL index. It is safe for concurrent use, including Compact while
// other goroutines read and write.
type Bolt struct {
	path  string
	log   *slog.Logger
	codec *codec // made once OpenBolt has read the index key

	mu sync.RWMutex // Compact swaps db under the write lock
	db *bolt.DB     // nil once closed

	// freed counts records erased or overwritten since the last Compact:
	// their old ciphertext may still sit in free pages.
	freed atomic.Int64
	// group shares commits between concurrent writers.
	group groupCommit
}

// OpenBolt opens (or creates, mode 0600) the store at path. On first open it
// makes a random index key and keeps it sealed under the active key. If no
// configured key opens that index key, it returns an error wrapping
// ErrWrongKey and has not written to the file. A file locked by another
// process yields an error after two seconds. log may be nil.
func OpenBolt(path string, keys *Keyring, log *slog.Logger) (*Bolt, error) {
	if keys == nil {
		return nil, errors.New("store: open bolt: nil keyring")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bolt{path: path, log: log}

	// An existing store is checked read-only first, so that a wrong key can
	// never lead to a write (bbolt may write on a read-write open).
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		ro, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, ReadOnly: true})
		if err != nil {
			return nil, openErr(path, err)
		}
		_, _, err = b.readIndexKey(ro, keys)
		_ = ro.Close()
		if err != nil {
			return nil, err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			log.Warn("store file readable by others; restricting to 0600", "path", path, "mode", fi.Mode().Perm().String())
			if err := os.Chmod(path, 0o600); err != nil {
				return nil, fmt.Errorf("store: chmod %s: %w", path, err)
			}
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}

	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	created, err := b.initMeta(db, keys)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	b.db = db
	if created {
		log.Info("store created", "path", path, "key_id", keys.ActiveID())
	}
	return b, nil
}

func openDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, openErr(path, err)
	}
	return db, nil
}

func openErr(path string, err error) error {
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("store: open %s: file is locked by another process (waited %s): %w", path, lockTimeout, err)
	}
	return fmt.Errorf("store: open %s: %w", path, err)
}

// readIndexKey opens the sealed index key and returns it with the file's
// format. It returns (nil, "", nil) for a file with no buckets yet.
func (b *Bolt) readIndexKey(db *bolt.DB, keys *Keyring) (key []byte, format string, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		if meta == nil {
			if tx.Bucket([]byte(bucketRec)) != nil {
				return fmt.Errorf("store: %s: records but no meta bucket; refusing to guess an index key", b.path)
			}
			return nil
		}
		format = string(meta.Get([]byte(metaFormat)))
		if format != formatV1 && format != formatV2 && format != formatV3 {
			return fmt.Errorf("store: %s: unknown format %q", b.path, format)
		}
		sealed := meta.Get([]byte(metaIndexKey))
		if sealed == nil {
			return fmt.Errorf("store: %s: meta bucket has no index key", b.path)
		}
		key, err = openIndexKey(keys, sealed, b.path)
		return err
	})
	return key, format, err
}

// initMeta loads the index key, creating it and the buckets on first open,
// and makes the store's codec.
func (b *Bolt) initMeta(db *bolt.DB, keys *Keyring) (created bool, err error) {
	key, format, err := b.readIndexKey(db, keys)
	if err != nil {
		return false, err
	}
	if key != nil {
		b.codec = newCodec(keys, key, b.log)
		switch format {
		case formatV1:
			return false, b.migrateV1(db)
		case formatV2:
			// Exact entries are lower bounds too: only the mark changes.
			return false, db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaFormat), []byte(formatV3))
			})
		}
		return false, nil
	}
	key, sealed, err := newIndexKey(keys)
	if err != nil {
		return false, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket([]byte(bucketMeta))
		if err != nil {
			return err
		}
		if err := meta.Put([]byte(metaFormat), []byte(formatV3)); err != nil {
			return err
		}
		if err := meta.Put([]byte(metaIndexKey), sealed); err != nil {
			return err
		}
		if err := meta.Put([]byte(metaRecords), make([]byte, 8)); err != nil {
			return err
		}
		for _, name := range []string{bucketRec, bucketAOR, bucketTTL, bucketDue, bucketAcct} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("store: init %s: %w", b.path, err)
	}
	b.codec = newCodec(keys, key, b.log)
	return true, nil
}

// migrateV1 builds the due and accounts indexes of a format 1 file, in
// transactions of migrateChunk records, and then marks it format 3. Every
// format 1 record goes into both (see header.go), so its owner looks at it
// once and rewrites it with its real due time and kind. An interrupted
// migration runs again at the next open: every step is idempotent.
func (b *Bolt) migrateV1(db *bolt.DB) error {
	start := time.Now()
	var after []byte
	n := 0
	for done := false; !done; {
		err := db.Update(func(tx *bolt.Tx) error {
			due, err := tx.CreateBucketIfNotExists([]byte(bucketDue))
			if err != nil {
				return err
			}
			acct, err := tx.CreateBucketIfNotExists([]byte(bucketAcct))
			if err != nil {
				return err
			}
			c := tx.Bucket([]byte(bucketRec)).Cursor()
			k, _ := c.First()
			if after != nil {
				k, _ = c.Seek(after)
			}
			for i := 0; k != nil && i < migrateChunk; k, _ = c.Next() {
				i++
				if len(k) != IDSize {
					continue
				}
				if err := due.Put(join(epochDue, k), nil); err != nil {
					return err
				}
				if err := acct.Put(bytes.Clone(k), nil); err != nil {
					return err
				}
				n++
			}
			if k == nil {
				done = true
				meta := tx.Bucket([]byte(bucketMeta))
				if err := meta.Put([]byte(metaRecords), binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
					return err
				}
				return meta.Put([]byte(metaFormat), []byte(formatV3))
			}
			after = bytes.Clone(k)
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: %s: migrate format 1 to 3: %w", b.path, err)
		}
	}
	b.log.Info("store: built the due and accounts indexes (format 1 to 3)", "path", b.path, "records", n, "took", time.Since(start))
	return nil
}

// ID derives the binding ID of device under aor. It does not touch the file.
// aor and device should not contain NUL bytes (SIP URIs cannot).
func (b *Bolt) ID(aor, device string) ID { return b.codec.ID(aor, device) }

// DeriveKey returns a 32-byte key for another use of the store's secret
// (the SIP side's flow tokens), HMAC(indexKey, "k\x00"+label): every node
// sharing the store derives the same key, and no label yields an ID or an
// AOR hash (those start "b\x00" and "a\x00"). It does not touch the file.
func (b *Bolt) DeriveKey(label string) []byte { return b.codec.DeriveKey(label) }

// withDB runs fn with the current db under the read lock, so Compact cannot
// swap it underneath.
func (b *Bolt) withDB(ctx context.Context, fn func(db *bolt.DB) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.db == nil {
		return ErrClosed
	}
	return fn(b.db)
}

type buckets struct{ meta, rec, aor, ttl, due, acct *bolt.Bucket }

func txBuckets(tx *bolt.Tx) (buckets, error) {
	bk := buckets{tx.Bucket([]byte(bucketMeta)), tx.Bucket([]byte(bucketRec)), tx.Bucket([]byte(bucketAOR)), tx.Bucket([]byte(bucketTTL)),
		tx.Bucket([]byte(bucketDue)), tx.Bucket([]byte(bucketAcct))}
	if bk.meta == nil || bk.rec == nil || bk.aor == nil || bk.ttl == nil || bk.due == nil || bk.acct == nil {
		return bk, errors.New("store: bucket missing")
	}
	// Keys of ttl and due mostly arrive in time order: full pages then
	// cost no more splits and halve those indexes' pages.
	bk.ttl.FillPercent, bk.due.FillPercent = appendFill, appendFill
	return bk, nil
}

// records is the stored record count.
func (bk buckets) records() uint64 {
	if v := bk.meta.Get([]byte(metaRecords)); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (bk buckets) setRecords(n uint64) error {
	return bk.meta.Put([]byte(metaRecords), binary.BigEndian.AppendUint64(nil, n))
}

// add writes the value v of a record id not stored yet, and its index
// entries.
func (bk buckets) add(id ID, v []byte) error {
	if err := bk.rec.Put(id[:], v); err != nil {
		return err
	}
	if err := bk.setRecords(bk.records() + 1); err != nil {
		return err
	}
	return bk.index(rawRecord{id: id, val: v}, true)
}

// remove erases a record and its index entries; v is its current value.
func (bk buckets) remove(id ID, v []byte) error {
	if err := bk.rec.Delete(id[:]); err != nil {
		return err
	}
	if n := bk.records(); n > 0 {
		if err := bk.setRecords(n - 1); err != nil {
			return err
		}
	}
	if hdrLen(v) == 0 {
		return nil // a mangled header: nothing to find in the indexes
	}
	return bk.index(rawRecord{id: id, val: v}, false)
}

// indexEntry is one index key of a record: its bucket and key.
type indexEntry struct {
	b   *bolt.Bucket
	key []byte
}

// entries are the index keys the header of r names.
func (bk buckets) entries(r rawRecord) []indexEntry {
	out := []indexEntry{{bk.ttl, join(r.expiryKey(), r.id[:])}, {bk.aor, join(r.aorHash(), r.id[:])}}
	if due := r.dueKey(); due != nil {
		out = append(out, indexEntry{bk.due, join(due, r.id[:])})
	}
	if r.account() {
		out = append(out, indexEntry{bk.acct, bytes.Clone(r.id[:])})
	}
	return out
}

// index adds (or deletes) the index entries the header of r names.
func (bk buckets) index(r rawRecord, add bool) error {
	for _, e := range bk.entries(r) {
		var err error
		if add {
			err = e.b.Put(e.key, nil)
		} else {
			err = e.b.Delete(e.key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// replace overwrites record id (current value old) with v, touching only
// the index entries that change. The AOR's never does, and the record count
// stays. The ttl and due indexes hold lower bounds (format 3): a refresh
// moves a record's expiry and due time later, and its entries stay where
// they are, so a refresh writes the record's page and no index page. A scan
// that reaches such an entry early moves it to the header's time (settle);
// only a time that moves earlier is indexed anew here.
func (bk buckets) replace(id ID, old, v []byte) error {
	if hdrLen(old) == 0 {
		// A mangled header: nothing to find in the indexes.
		return bk.rec.Put(id[:], v)
	}
	was, now := bk.entries(rawRecord{id: id, val: old}), bk.entries(rawRecord{id: id, val: v})
	// stands says the old header's entry o stands for the new one's n: the
	// same key, or an earlier one in a time index.
	stands := func(o, n indexEntry) bool {
		return o.b == n.b && (bytes.Equal(o.key, n.key) || bk.timeIndex(o.b) && bytes.Compare(o.key, n.key) < 0)
	}
	for _, o := range was {
		if !slices.ContainsFunc(now, func(n indexEntry) bool { return stands(o, n) }) {
			if err := o.b.Delete(o.key); err != nil {
				return err
			}
		}
	}
	for _, e := range now {
		if !slices.ContainsFunc(was, func(o indexEntry) bool { return stands(o, e) }) {
			if err := e.b.Put(e.key, nil); err != nil {
				return err
			}
		}
	}
	return bk.rec.Put(id[:], v)
}

// timeIndex says whether idx is ttl or due, whose entries are lower bounds.
func (bk buckets) timeIndex(idx *bolt.Bucket) bool { return idx == bk.ttl || idx == bk.due }

// settle puts entries of a time index right that a scan reached before
// their record's time (keys are copies: time | ID). An entry whose record
// is gone goes, and so does one whose header names an earlier time (that
// entry exists too); one whose record was refreshed since it was written
// moves to the header's time. at is the header's key in idx, nil if the
// record is not in it.
func (bk buckets) settle(idx *bolt.Bucket, at func(rawRecord) []byte, keys [][]byte) error {
	for _, k := range keys {
		id := ID(k[8:])
		var h []byte
		if v := bk.rec.Get(id[:]); v != nil && hdrLen(v) > 0 {
			h = at(rawRecord{id: id, val: v})
		}
		if bytes.Equal(h, k[:8]) {
			continue
		}
		if err := idx.Delete(k); err != nil {
			return err
		}
		if h != nil && bytes.Compare(h, k[:8]) > 0 {
			if err := idx.Put(join(h, id[:]), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// Put stores r durably, replacing any record with the same ID (its old TTL
// and AOR index entries go with it). Concurrent Puts share one commit and
// fsync (groupCommit); sealing happens before, outside the writer lock.
func (b *Bolt) Put(ctx context.Context, r Record) error {
	val, err := b.codec.seal(r)
	if err != nil {
		return err
	}
	var replaced bool
	err = b.withDB(ctx, func(db *bolt.DB) error {
		// Concurrent writers share a commit, which may run fn more than
		// once (when another write in the group fails): fn is idempotent.
		return b.group.update(db, func(tx *bolt.Tx) error {
			bk, err := txBuckets(tx)
			if err != nil {
				return err
			}
			old := bk.rec.Get(r.ID[:])
			replaced = old != nil
			if replaced {
				return bk.replace(r.ID, old, val)
			}
			return bk.add(r.ID, val)
		})
	})
	if err != nil {
		return fmt.Errorf("store: put %s: %w", r.ID, err)
	}
	if replaced {
		b.freed.Add(1)
	}
	return nil
}

// Get returns the record with id, ErrNotFound if there is none, or an error
// wrapping ErrCorrupt / ErrUnknownKey if it is there but cannot be opened.
func (b *Bolt) Get(ctx context.Context, id ID) (Record, error) {
	var raw rawRecord
	err := b.withDB(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			bk, err := txBuckets(tx)
			if err != nil {
				return err
			}
			v := bk.rec.Get(id[:])
			if v == nil {
				return ErrNotFound
			}
			raw, err = parseRaw(id, v)
			return err
		})
	})
	if err != nil {
		return Record{}, err
	}
	return b.codec.open(raw)
}

// Has tells whether a record is stored under id, without opening it.
func (b *Bolt) Has(ctx context.Context, id ID) (bool, error) {
	var ok bool
	err := b.withDB(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			rec := tx.Bucket([]byte(bucketRec))
			if rec == nil {
				return errors.New("store: bucket missing")
			}
			ok = rec.Get(id[:]) != nil
			return nil
		})
	})
	return ok, err
}

// ListAOR returns every record of aor, in ID order. Records that cannot be
// opened are skipped and logged.
func (b *Bolt) ListAOR(ctx context.Context, aor string) ([]Record, error) {
	prefix := b.codec.aorHash(aor)
	var raws []rawRecord
	err := b.withDB(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			bk, err := txBuckets(tx)
			if err != nil {
				return err
			}
			c := bk.aor.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if len(k) != len(prefix)+IDSize {
					continue
				}
				id := ID(k[len(prefix):])
				if v := bk.rec.Get(id[:]); v != nil {
					if raw, err := parseRaw(id, v); err == nil {
						raws = append(raws, raw)
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: list aor: %w", err)
	}
	return b.codec.openAll("list_aor", raws), nil
}

// erase deletes the records pick names in one durable batch and returns
// their raw values (absent ids are skipped); the ttl entries pick names as
// early are settled in the same batch.
func (b *Bolt) erase(ctx context.Context, pick func(bk buckets) (ids []ID, early [][]byte)) ([]rawRecord, error) {
	var raws []rawRecord
	err := b.withDB(ctx, func(db *bolt.DB) error {
		// Look first: a write transaction that finds nothing still costs
		// an fsync, and the sweeper mostly finds nothing.
		var found bool
		err := db.View(func(tx *bolt.Tx) error {
			bk, err := txBuckets(tx)
			if err != nil {
				return err
			}
			ids, early := pick(bk)
			found = len(ids)+len(early) > 0
			return nil
		})
		if err != nil || !found {
			return err
		}
		return b.group.update(db, func(tx *bolt.Tx) error {
			bk, err := txBuckets(tx)
			if err != nil {
				return err
			}
			raws = raws[:0]
			ids, early := pick(bk)
			for _, id := range ids {
				v := bk.rec.Get(id[:])
				if v == nil {
					continue
				}
				raws = append(raws, rawRecord{id: id, val: bytes.Clone(v)})
				if err := bk.remove(id, v); err != nil {
					return err
				}
			}
			return bk.settle(bk.ttl, rawRecord.expiryKey, early)
		})
	})
	if err != nil {
		return nil, err
	}
	b.freed.Add(int64(len(raws)))
	return raws, nil
}

// Delete erases the record with id and returns what it held, so the caller
// can un-register it upstream; ErrNotFound if absent. A record that cannot be
// opened is erased all the same: Delete then returns its ID and expiry with
// an error wrapping ErrCorrupt or ErrUnknownKey.
func (b *Bolt) Delete(ctx context.Context, id ID) (Record, error) {
	raws, err := b.erase(ctx, func(buckets) ([]ID, [][]byte) { return []ID{id}, nil })
	if err != nil {
		return Record{}, fmt.Errorf("store: delete %s: %w", id, err)
	}
	if len(raws) == 0 {
		return Record{}, ErrNotFound
	}
	if hdrLen(raws[0].val) == 0 {
		return Record{ID: id}, fmt.Errorf("store: deleted %s: %w: bad header", id, ErrCorrupt)
	}
	r, err := b.codec.open(raws[0])
	if err != nil {
		return Record{ID: id, ExpiresAt: raws[0].expiry()}, fmt.Errorf("store: deleted unreadable record: %w", err)
	}
	return r, nil
}

// DeleteAOR erases every record of aor and returns the erased ones (those
// that could be opened; the others are erased too, and logged).
func (b *Bolt) DeleteAOR(ctx context.Context, aor string) ([]Record, error) {
	prefix := b.codec.aorHash(aor)
	raws, err := b.erase(ctx, func(bk buckets) ([]ID, [][]byte) {
		var ids []ID
		c := bk.aor.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) == len(prefix)+IDSize {
				ids = append(ids, ID(k[len(prefix):]))
			}
		}
		return ids, nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: delete aor: %w", err)
	}
	return b.codec.openAll("delete_aor", validRaws(raws)), nil
}

// TakeExpired erases up to limit records (all, if limit <= 0) whose ExpiresAt is
// not after now, soonest first, and returns them. Expired records that
// cannot be opened are erased too, and logged instead of returned.
//
// An entry of the ttl index reached before its record's expiry (the
// record was refreshed since) is moved to that expiry in the same batch;
// at most settleBatch of those per batch, and batches go on while a full
// one held no expired record.
func (b *Bolt) TakeExpired(ctx context.Context, now time.Time, limit int) ([]Record, error) {
	until := encodeExpiry(now)
	for {
		full := false
		raws, err := b.erase(ctx, func(bk buckets) ([]ID, [][]byte) {
			var ids []ID
			var early [][]byte
			c := bk.ttl.Cursor()
			for k, _ := c.First(); len(k) >= 8 && bytes.Compare(k[:8], until) <= 0; k, _ = c.Next() {
				if limit > 0 && len(ids) >= limit || len(early) >= settleBatch {
					full = len(ids) == 0
					break
				}
				if len(k) != 8+IDSize {
					continue
				}
				id := ID(k[8:])
				if v := bk.rec.Get(id[:]); v != nil && (hdrLen(v) == 0 || bytes.Compare(rawRecord{id: id, val: v}.expiryKey(), until) <= 0) {
					ids = append(ids, id)
				} else {
					early = append(early, bytes.Clone(k))
				}
			}
			return ids, early
		})
		if err != nil {
			return nil, fmt.Errorf("store: take expired: %w", err)
		}
		if len(raws) > 0 || !full {
			return b.codec.openAll("take_expired", validRaws(raws)), nil
		}
	}
}

// scanIndex calls fn with chunks of the records an index names, in index
// order, each chunk read in its own short transaction, so fn never runs
// inside one (and a chunk whose records are all gone is an empty one). pick turns an index key into the record's ID: ok false skips
// the key, stop ends the walk.
func (b *Bolt) scanIndex(ctx context.Context, index string, pick func(k []byte) (id ID, ok, stop bool), fn func([]rawRecord) error) error {
	var after []byte
	for {
		var raws []rawRecord
		done := false
		err := b.withDB(ctx, func(db *bolt.DB) error {
			return db.View(func(tx *bolt.Tx) error {
				bk, err := txBuckets(tx)
				if err != nil {
					return err
				}
				c := tx.Bucket([]byte(index)).Cursor()
				k, _ := c.First()
				if after != nil {
					if k, _ = c.Seek(after); k != nil && bytes.Equal(k, after) {
						k, _ = c.Next()
					}
				}
				for n := 0; n < chunk; k, _ = c.Next() {
					if k == nil {
						done = true
						break
					}
					id, ok, stop := pick(k)
					if stop {
						done = true
						break
					}
					after = bytes.Clone(k)
					n++
					if v := bk.rec.Get(id[:]); ok && v != nil {
						raws = append(raws, rawRecord{id: id, val: bytes.Clone(v)})
					}
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		if err := fn(raws); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// byID picks the record keys of rec and acct, whose keys are IDs.
func byID(k []byte) (ID, bool, bool) { return ID(k), len(k) == IDSize, false }

// scanRaw calls fn with chunks of raw records in ID order.
func (b *Bolt) scanRaw(ctx context.Context, fn func([]rawRecord) error) error {
	return b.scanIndex(ctx, bucketRec, byID, fn)
}

// Scan calls fn with every stored record, in ID order, including expired
// ones the sweeper has not taken yet. It reads in short transactions, so
// records written during a Scan may or may not be seen. Records that cannot
// be opened are skipped and logged. An error from fn stops the scan and is
// returned.
func (b *Bolt) Scan(ctx context.Context, fn func(Record) error) error {
	return b.scanRaw(ctx, b.codec.openEach(ctx, "scan", fn))
}

// ScanDue calls fn with every record whose DueAt is not after until,
// soonest first, reading only the due index and those records. fn may Put
// the record again (with a later DueAt): the walk goes on past it.
// Records that cannot be opened are skipped and logged; an error from fn
// stops the scan and is returned.
//
// The due index holds lower bounds (see replace). The walk reads it in
// chunks; of a chunk's entries, the records whose header's due time is
// not after the chunk's last entry (until, for the last chunk) go to fn,
// soonest first and once each. An entry reached before its record's due
// time is settled (moved to that time) before the next chunk is read, so
// the walk meets its record again in its place; entries of erased records
// go.
func (b *Bolt) ScanDue(ctx context.Context, until time.Time, fn func(Record) error) error {
	end := encodeExpiry(until)
	var keys, early [][]byte // the chunk's entries; entries to settle
	pick := func(k []byte) (ID, bool, bool) {
		if len(k) != 8+IDSize {
			return ID{}, false, false
		}
		if bytes.Compare(k[:8], end) > 0 {
			return ID{}, false, true
		}
		keys = append(keys, bytes.Clone(k))
		return ID(k[8:]), true, false
	}
	seen := map[ID]bool{}
	// due sorts the chunk's entries into the records due now and the
	// entries to settle.
	due := func(raws []rawRecord) []rawRecord {
		bound := end
		if len(keys) == chunk { // the walk goes on past this chunk
			bound = keys[len(keys)-1][:8]
		}
		byID := make(map[ID]rawRecord, len(raws))
		for _, r := range validRaws(raws) {
			byID[r.id] = r
		}
		var out []rawRecord
		for _, k := range keys {
			r, ok := byID[ID(k[8:])]
			var h []byte
			if ok {
				h = r.dueKey()
			}
			if !bytes.Equal(h, k[:8]) {
				early = append(early, k)
			}
			if h != nil && bytes.Compare(h, bound) <= 0 && !seen[r.id] {
				seen[r.id] = true
				out = append(out, r)
			}
		}
		keys = keys[:0]
		slices.SortStableFunc(out, func(a, b rawRecord) int { return bytes.Compare(a.dueKey(), b.dueKey()) })
		return out
	}
	open := b.codec.openEach(ctx, "scan_due", fn)
	err := b.scanIndex(ctx, bucketDue, pick, func(raws []rawRecord) error {
		if err := open(due(raws)); err != nil {
			return err
		}
		return b.settleDue(ctx, &early)
	})
	return err
}

// settleDue settles the due index entries in early and empties it.
func (b *Bolt) settleDue(ctx context.Context, early *[][]byte) error {
	if len(*early) == 0 {
		return nil
	}
	err := b.withDB(ctx, func(db *bolt.DB) error {
		return b.group.update(db, func(tx *bolt.Tx) error {
			bk, err := txBuckets(tx)
			if err != nil {
				return err
			}
			return bk.settle(bk.due, rawRecord.dueKey, *early)
		})
	})
	*early = (*early)[:0]
	if err != nil {
		return fmt.Errorf("store: settle due index: %w", err)
	}
	return nil
}

// ScanAccounts calls fn with every record stored with Account set, in ID
// order, reading only the accounts index and those records (and records
// written by format 1, until they are written again). Records that cannot
// be opened are skipped and logged; an error from fn stops the scan.
func (b *Bolt) ScanAccounts(ctx context.Context, fn func(Record) error) error {
	return b.scanIndex(ctx, bucketAcct, byID, b.codec.openEach(ctx, "scan_accounts", fn))
}

// Count returns the number of stored records (a counter, not a walk).
func (b *Bolt) Count(ctx context.Context) (int, error) {
	var n int
	err := b.withDB(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			bk, err := txBuckets(tx)
			if err != nil {
				return err
			}
			n = int(bk.records())
			return nil
		})
	})
	return n, err
}

// KeyUsage counts records per sealing key id, reading only the headers. Every
// key in the keyring appears, with 0 if unused: a key can be retired once its
// count is 0 (after Rotate). Ids not in the keyring appear too.
func (b *Bolt) KeyUsage(ctx context.Context) (map[string]int, error) {
	return b.codec.keyUsage(ctx, b.scanRaw)
}

// Rotate re-seals, under the active key, the index key and every record
// still sealed under another key, in short transactions. It returns how many
// records it re-sealed; records it cannot open are left as they are and
// reported in the error (see KeyUsage).
func (b *Bolt) Rotate(ctx context.Context) (int, error) {
	rot := b.codec.rotation()
	err := b.withDB(ctx, func(db *bolt.DB) error {
		var sealed []byte
		if err := db.View(func(tx *bolt.Tx) error {
			sealed = bytes.Clone(tx.Bucket([]byte(bucketMeta)).Get([]byte(metaIndexKey)))
			return nil
		}); err != nil {
			return err
		}
		resealed, from, err := b.codec.resealIndexKey(sealed)
		if err != nil || resealed == nil {
			return err
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaIndexKey), resealed)
		}); err != nil {
			return err
		}
		b.log.Info("store: index key re-sealed", "from_key_id", from, "to_key_id", rot.active)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: rotate: %w", err)
	}

	var resealed int
	var next []byte
	for done := false; !done; {
		err := b.withDB(ctx, func(db *bolt.DB) error {
			return db.Update(func(tx *bolt.Tx) error {
				bk, err := txBuckets(tx)
				if err != nil {
					return err
				}
				// Collect first: bbolt cursors must not run across Puts.
				var todo []rawRecord
				c := bk.rec.Cursor()
				k, v := c.First()
				if next != nil {
					k, v = c.Seek(next)
				}
				for ; k != nil && len(todo) < chunk; k, v = c.Next() {
					if len(k) != IDSize {
						continue
					}
					val, err := rot.reseal(rawRecord{id: ID(k), val: v})
					if err != nil {
						return err
					}
					if val != nil {
						todo = append(todo, rawRecord{id: ID(k), val: val})
					}
				}
				if k == nil {
					done = true
				} else {
					next = bytes.Clone(k)
				}
				for _, r := range todo {
					if err := bk.rec.Put(r.id[:], r.val); err != nil {
						return err
					}
					resealed++
				}
				return nil
			})
		})
		if err != nil {
			return resealed, fmt.Errorf("store: rotate: %w", err)
		}
	}
	if resealed > 0 {
		b.freed.Add(int64(resealed)) // the old ciphertext sits in free pages
	}
	return rot.done(resealed)
}

// PendingErasures is the number of records erased, overwritten or re-sealed
// since the last Compact: old ciphertext that may still sit in free pages.
// The Sweeper compacts when it is above zero.
func (b *Bolt) PendingErasures() int64 { return b.freed.Load() }

// Compact rewrites the store into a fresh file (bbolt's copy-compaction into
// a temporary file in the same directory, fsynced, renamed over the old one)
// so pages freed by erasures no longer hold ciphertext and the file shrinks.
// Other operations wait while it runs; it is safe to call at any time.
func (b *Bolt) Compact(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db == nil {
		return ErrClosed
	}
	start := time.Now()
	before := b.sizeLocked()
	pending := b.freed.Load()

	dir := filepath.Dir(b.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(b.path)+".compact-*")
	if err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	tmpPath := tmp.Name()
	_ = tmp.Close()
	renamed := false
	defer func() {
		if !renamed {
			_ = os.Remove(tmpPath)
		}
	}()

	dst, err := bolt.Open(tmpPath, 0o600, &bolt.Options{Timeout: lockTimeout, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	if err := bolt.Compact(dst, b.db, compactTxSize); err != nil {
		_ = dst.Close()
		return fmt.Errorf("store: compact: %w", err)
	}
	// Every Commit fsyncs, and so does this, before the old file goes.
	if err := dst.Sync(); err != nil {
		_ = dst.Close()
		return fmt.Errorf("store: compact: %w", err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}

	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: compact: close: %w", err)
	}
	b.db = nil
	if err := os.Rename(tmpPath, b.path); err != nil {
		// Keep serving from the old file.
		db, oerr := openDB(b.path)
		b.db = db
		return errors.Join(fmt.Errorf("store: compact: %w", err), oerr)
	}
	renamed = true
	if err := syncDir(dir); err != nil {
		b.log.Warn("store: compact: fsync dir", "dir", dir, "err", err)
	}
	db, err := openDB(b.path)
	if err != nil {
		return fmt.Errorf("store: compact: reopen: %w", err)
	}
	b.db = db
	b.freed.Add(-pending)
	b.log.Info("store: compacted", "bytes_before", before, "bytes_after", b.sizeLocked(), "took", time.Since(start))
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Size returns the size of the store file in bytes (0 if it cannot be read).
func (b *Bolt) Size() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.sizeLocked()
}

func (b *Bolt) sizeLocked() int64 {
	fi, err := os.Stat(b.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Path returns the store file's path.
func (b *Bolt) Path() string { return b.path }

// Close closes the store; later calls return ErrClosed. Close is idempotent.
func (b *Bolt) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db == nil {
		return nil
	}
	err := b.db.Close()
	b.db = nil
	return err
}

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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// On-disk layout (format 5). Nothing in it is plaintext user data:
//
//	meta  "format"    -> "5"
//	meta  "index-key" -> Seal(32 random bytes, aad "sipwake/meta/index-key/1")
//	meta  "records"   -> number of records, uint64 big-endian (Count without a walk)
//	recs  seq | ID    -> header (see header.go) | Seal(uvarint len(aor) | aor | data, aad)
//	ttl   expiry | ID     -> ""
//	due   due | ID        -> ""   records with a DueAt
//	acct  ID              -> ""   records with Account set
//
// seq is the recs bucket's next sequence when the record was first stored
// (big-endian uint64), so a new record is written on the bucket's last
// page; the memory index (bolt_aor.go), built from the record keys and
// headers at open, finds a record's key from its ID.
// expiry and due are big-endian Unix nanoseconds with the sign bit flipped,
// so byte order is time order. The record's aad is its ID and its whole
// plaintext header, so a value copied to another ID, or a header edited to
// dodge the sweeper or move the record to another AOR or index, fails to
// open. Format 1 had no due and acct buckets; OpenBolt builds them. Format
// 3 is format 2 with ttl and due entries that may be earlier than their
// record's times (lower bounds, see replace): a sipwake that reads format 2
// would erase refreshed records early, so it must not open a format 3 file.
// Format 4 is format 3 without the aor bucket (HMAC(aor) | ID -> ""): the
// AOR index is kept in memory (bolt_aor.go), and a sipwake that knows only
// format 3 would find no bucket to keep it in. Format 5 is format 4 with the
// records keyed by sequence and ID (rec, keyed by ID, becomes recs): a new
// record keyed by ID landed on a random page. Format 4 left a snapshot of
// its AOR index at Close (aor-snapshot, and meta "aor-snapshot-tx"): walking
// format 5's records, in file order, is about as quick (bench/README.md).
//
// The values and the meta index key are the codec's (codec.go, header.go),
// shared with Redis. This file opens and migrates the file; bolt_index.go
// keeps the index entries, bolt_aor.go the memory index, bolt_ops.go reads
// and writes records, and bolt_maintenance.go rotates keys, counts their
// use and compacts.
const (
	bucketMeta  = "meta"
	bucketRec   = "recs"
	bucketRecV4 = "rec" // format 4 and before: keyed by ID
	bucketAOR   = "aor" // format 3 and before
	bucketTTL   = "ttl"
	bucketDue   = "due"
	bucketAcct  = "acct"

	metaRecords = "records"
	// bucketSnapV4 and metaSnapV4 held format 4's AOR index snapshot.
	bucketSnapV4 = "aor-snapshot"
	metaSnapV4   = "aor-snapshot-tx"

	// lockTimeout bounds the wait for bbolt's file lock, so a second
	// process on the same file fails with a clear error instead of hanging.
	lockTimeout = 2 * time.Second
	// migrateChunk bounds the records one transaction of migrateV1 indexes.
	migrateChunk = 10000
	// buildRelease is how many records' pages the memory index's walk of
	// the records maps before handing them back: with the kernel's
	// fault-around, ~90 MiB at most (1,000,000 records: bench/README.md).
	buildRelease = 8192
)

// Bolt is the embedded backend: one bbolt file, sealed values, a TTL index,
// and the record keys and an AOR index in memory. It is safe for concurrent
// use, including Compact while other goroutines read and write.
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
	// mem finds a record's key and an AOR's records (built at open, kept
	// at commits).
	mem memIndex
	// pend is the write transaction's buckets.pend, emptied as each
	// begins (there is one at a time).
	pend map[ID]uint64
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
	b := &Bolt{path: path, log: log, pend: map[ID]uint64{}}
	b.group.prepare = b.beginWrite

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
	if err := b.buildIndex(db); err != nil {
		_ = db.Close()
		return nil, err
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
			if tx.Bucket([]byte(bucketRec)) != nil || tx.Bucket([]byte(bucketRecV4)) != nil {
				return fmt.Errorf("store: %s: records but no meta bucket; refusing to guess an index key", b.path)
			}
			return nil
		}
		format = string(meta.Get([]byte(metaFormat)))
		if format != formatV1 && format != formatV2 && format != formatV3 && format != formatV4 && format != formatV5 {
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
			if err := b.migrateV1(db); err != nil {
				return false, err
			}
			fallthrough
		case formatV2, formatV3:
			// Format 2's exact time entries are lower bounds too: what
			// changes is the AOR index, which goes to memory.
			if err := b.dropAORBucket(db); err != nil {
				return false, err
			}
		}
		// Format 4, or format 5 whose re-keying was cut short.
		return false, b.rekeyRecords(db)
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
		if err := meta.Put([]byte(metaFormat), []byte(formatV5)); err != nil {
			return err
		}
		if err := meta.Put([]byte(metaIndexKey), sealed); err != nil {
			return err
		}
		if err := meta.Put([]byte(metaRecords), make([]byte, 8)); err != nil {
			return err
		}
		for _, name := range []string{bucketRec, bucketTTL, bucketDue, bucketAcct} {
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
			c := tx.Bucket([]byte(bucketRecV4)).Cursor()
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

// buildIndex builds the memory index from the record keys and headers.
//
// The walk maps the records' pages into the process; every buildRelease
// records they are handed back (madvise MADV_DONTNEED on bbolt's read-only
// shared mapping: they stay in the page cache, and are mapped again when
// read), so the process holds the index and the pages it goes on to use,
// not the file, even at its peak.
func (b *Bolt) buildIndex(db *bolt.DB) error {
	start := time.Now()
	err := db.View(func(tx *bolt.Tx) error {
		b.mem.build(tx.Bucket([]byte(bucketRec)), buildRelease, func() {
			if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, db.Info().Data, uintptr(tx.Size()), syscall.MADV_DONTNEED); errno != 0 {
				b.log.Warn("store: could not unmap the pages the memory index was built from", "err", errno)
			}
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: %s: build the memory index: %w", b.path, err)
	}
	b.log.Info("store: memory index built", "path", b.path, "aors", b.mem.len(), "took", time.Since(start))
	return nil
}

// beginWrite starts each write transaction with its buckets' pend empty.
func (b *Bolt) beginWrite(*bolt.Tx) error {
	clear(b.pend)
	return nil
}

// dropBucket deletes the bucket name, if tx has one.
func dropBucket(tx *bolt.Tx, name string) error {
	if err := tx.DeleteBucket([]byte(name)); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
		return err
	}
	return nil
}

// dropAORBucket turns a format 2 or 3 file into format 4: the on-disk AOR
// index goes (OpenBolt builds it in memory), in one transaction.
func (b *Bolt) dropAORBucket(db *bolt.DB) error {
	err := db.Update(func(tx *bolt.Tx) error {
		if err := dropBucket(tx, bucketAOR); err != nil {
			return err
		}
		return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaFormat), []byte(formatV4))
	})
	if err != nil {
		return fmt.Errorf("store: %s: migrate to format 4: %w", b.path, err)
	}
	b.log.Info("store: AOR index moved to memory (format 4)", "path", b.path)
	return nil
}

// rekeyRecords turns a format 4 file into format 5: each record of rec
// moves to recs under the next sequence, migrateChunk records a
// transaction, and rec goes when it is empty. The first transaction says
// format 5 (a sipwake that knows only format 4 must not open a file half
// moved) and drops format 4's snapshot; an interrupted run goes on at the
// next open. A file with no rec bucket is format 5 already (or says so
// once this has run).
func (b *Bolt) rekeyRecords(db *bolt.DB) error {
	start := time.Now()
	var format5 bool
	if err := db.View(func(tx *bolt.Tx) error {
		format5 = tx.Bucket([]byte(bucketRecV4)) == nil && string(tx.Bucket([]byte(bucketMeta)).Get([]byte(metaFormat))) == formatV5
		return nil
	}); err != nil || format5 {
		return err // an Update would commit a transaction even writing nothing
	}
	n := 0
	for done := false; !done; {
		err := db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket([]byte(bucketMeta))
			old := tx.Bucket([]byte(bucketRecV4))
			if old == nil {
				done = true
				return meta.Put([]byte(metaFormat), []byte(formatV5))
			}
			if err := dropBucket(tx, bucketSnapV4); err != nil {
				return err
			}
			if err := meta.Delete([]byte(metaSnapV4)); err != nil {
				return err
			}
			if err := meta.Put([]byte(metaFormat), []byte(formatV5)); err != nil {
				return err
			}
			recs, err := tx.CreateBucketIfNotExists([]byte(bucketRec))
			if err != nil {
				return err
			}
			recs.FillPercent = appendFill
			var moved [][]byte
			c := old.Cursor()
			for k, v := c.First(); k != nil && len(moved) < migrateChunk; k, v = c.Next() {
				moved = append(moved, bytes.Clone(k))
				if len(k) != IDSize {
					continue // not a record: it goes
				}
				seq, err := recs.NextSequence()
				if err != nil {
					return err
				}
				if err := recs.Put(recKey(seq, ID(k)), bytes.Clone(v)); err != nil {
					return err
				}
				n++
			}
			if len(moved) == 0 {
				done = true
				return tx.DeleteBucket([]byte(bucketRecV4))
			}
			for _, k := range moved {
				if err := old.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: %s: migrate format 4 to 5: %w", b.path, err)
		}
	}
	if n > 0 {
		b.log.Info("store: records keyed in the order they are stored (format 4 to 5)", "path", b.path, "records", n, "took", time.Since(start))
	}
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
	return b.locked(ctx, b.mu.RLocker(), func() error { return fn(b.db) })
}

// locked runs fn holding l (b.mu for reading, or for writing to swap db),
// unless ctx is done or the store closed.
func (b *Bolt) locked(ctx context.Context, l sync.Locker, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.Lock()
	defer l.Unlock()
	if b.db == nil {
		return ErrClosed
	}
	return fn()
}

// view runs fn in a read transaction with the store's buckets.
func (b *Bolt) view(ctx context.Context, fn func(bk buckets) error) error {
	return b.withDB(ctx, func(db *bolt.DB) error { return b.viewDB(db, fn) })
}

// viewDB is view on db, which withDB handed out.
func (b *Bolt) viewDB(db *bolt.DB, fn func(bk buckets) error) error {
	return db.View(func(tx *bolt.Tx) error {
		bk, err := b.txBuckets(tx)
		if err != nil {
			return err
		}
		return fn(bk)
	})
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

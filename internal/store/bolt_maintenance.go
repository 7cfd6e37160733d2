package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactTxSize bounds one transaction of the copy in Compact.
const compactTxSize = 64 << 20

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
		if err := b.group.write(db, func(tx *bolt.Tx) error {
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
			return b.group.write(db, func(tx *bolt.Tx) error {
				bk, err := b.txBuckets(tx)
				if err != nil {
					return err
				}
				// Collect first: bbolt cursors must not run across Puts.
				var todo []struct{ key, val []byte }
				c := bk.rec.Cursor()
				k, v := c.First()
				if next != nil {
					k, v = c.Seek(next)
				}
				for ; k != nil && len(todo) < chunk; k, v = c.Next() {
					_, id, ok := splitRecKey(k)
					if !ok {
						continue
					}
					val, err := rot.reseal(rawRecord{id: id, val: v})
					if err != nil {
						return err
					}
					if val != nil {
						todo = append(todo, struct{ key, val []byte }{bytes.Clone(k), val})
					}
				}
				if k == nil {
					done = true
				} else {
					next = bytes.Clone(k)
				}
				for _, r := range todo {
					if err := bk.rec.Put(r.key, r.val); err != nil {
						return err
					}
				}
				resealed += len(todo)
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
	return b.locked(ctx, &b.mu, b.compactLocked)
}

// compactLocked is Compact, with b.mu held for writing.
func (b *Bolt) compactLocked() error {
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
	return errors.Join(d.Sync(), d.Close())
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

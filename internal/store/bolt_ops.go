package store

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// settleBatch bounds the index entries one transaction settles.
const settleBatch = 4096

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
			bk, err := b.txBuckets(tx)
			if err != nil {
				return err
			}
			old := bk.get(r.ID)
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
	err := b.view(ctx, func(bk buckets) error {
		v := bk.get(id)
		if v == nil {
			return ErrNotFound
		}
		var err error
		raw, err = parseRaw(id, v)
		return err
	})
	if err != nil {
		return Record{}, err
	}
	return b.codec.open(raw)
}

// ListAOR returns every record of aor, in ID order. Records that cannot be
// opened are skipped and logged. An AOR the index has no record of (every
// first registration's) costs no read transaction.
func (b *Bolt) ListAOR(ctx context.Context, aor string) ([]Record, error) {
	hash := b.codec.aorHash(aor)
	var raws []rawRecord
	err := b.withDB(ctx, func(db *bolt.DB) error {
		if !b.mem.filed(aorKey(hash)) {
			return nil
		}
		return b.viewDB(db, func(bk buckets) error {
			raws = bk.aorRecords(hash)
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
			bk, err := b.txBuckets(tx)
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
			bk, err := b.txBuckets(tx)
			if err != nil {
				return err
			}
			raws = raws[:0]
			ids, early := pick(bk)
			for _, id := range ids {
				v := bk.get(id)
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
	hash := b.codec.aorHash(aor)
	raws, err := b.erase(ctx, func(bk buckets) ([]ID, [][]byte) {
		var ids []ID
		for _, r := range bk.aorRecords(hash) {
			ids = append(ids, r.id)
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
				if v := bk.get(id); v != nil && (hdrLen(v) == 0 || bytes.Compare(rawRecord{id: id, val: v}.expiryKey(), until) <= 0) {
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
// inside one (and a chunk whose records are all gone is an empty one).
// pick turns an index key into the record's ID: ok false skips the key,
// stop ends the walk.
func (b *Bolt) scanIndex(ctx context.Context, index string, pick func(k []byte) (id ID, ok, stop bool), fn func([]rawRecord) error) error {
	var after []byte
	for {
		var raws []rawRecord
		done := false
		err := b.withDB(ctx, func(db *bolt.DB) error {
			return db.View(func(tx *bolt.Tx) error {
				bk, err := b.txBuckets(tx)
				if err != nil {
					return err
				}
				c := tx.Bucket([]byte(index)).Cursor()
				k, v := c.First()
				if after != nil {
					if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
						k, v = c.Next()
					}
				}
				for n := 0; n < chunk; k, v = c.Next() {
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
					if !ok {
						continue
					}
					if index != bucketRec { // the records' own walk has the value
						v = bk.get(id)
					}
					if v != nil {
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

// byID picks the keys of acct, which are IDs.
func byID(k []byte) (ID, bool, bool) { return ID(k), len(k) == IDSize, false }

// byRecKey picks the keys of rec: sequence, ID.
func byRecKey(k []byte) (ID, bool, bool) {
	_, id, ok := splitRecKey(k)
	return id, ok, false
}

// scanRaw calls fn with chunks of raw records in the order they were first
// stored.
func (b *Bolt) scanRaw(ctx context.Context, fn func([]rawRecord) error) error {
	return b.scanIndex(ctx, bucketRec, byRecKey, fn)
}

// Scan calls fn with every stored record, in the order they were first
// stored, including expired ones the sweeper has not taken yet. It reads in
// short transactions, so records written during a Scan may or may not be
// seen. Records that cannot be opened are skipped and logged. An error from
// fn stops the scan and is returned.
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
			bk, err := b.txBuckets(tx)
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
	err := b.view(ctx, func(bk buckets) error {
		n = int(bk.records())
		return nil
	})
	return n, err
}

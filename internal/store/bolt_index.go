package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// appendFill is how full bbolt fills a page before splitting it, for
// indexes whose keys mostly grow (bbolt's default, 0.5, suits random keys).
const appendFill = 0.95

// buckets are a transaction's buckets of the store (see bolt.go for the
// layout) and the store's in-memory index. Their methods write a record
// with its index entries and keep the record count, so every operation
// changes the indexes the same way.
type buckets struct {
	meta, rec, ttl, due, acct *bolt.Bucket
	tx                        *bolt.Tx
	mem                       *memIndex
	// pend, in a write transaction, is the sequence of each record it
	// added (0: it erased the record): the memory index learns them only
	// when the transaction commits.
	pend map[ID]uint64
}

func (b *Bolt) txBuckets(tx *bolt.Tx) (buckets, error) {
	bk := buckets{tx.Bucket([]byte(bucketMeta)), tx.Bucket([]byte(bucketRec)), tx.Bucket([]byte(bucketTTL)),
		tx.Bucket([]byte(bucketDue)), tx.Bucket([]byte(bucketAcct)), tx, &b.mem, nil}
	if bk.meta == nil || bk.rec == nil || bk.ttl == nil || bk.due == nil || bk.acct == nil {
		return bk, errors.New("store: bucket missing")
	}
	if tx.Writable() {
		bk.pend = b.pend
	}
	// Keys of rec grow (a new record takes the next sequence), and those
	// of ttl and due mostly arrive in time order: full pages then cost no
	// more splits and halve those buckets' pages.
	bk.rec.FillPercent, bk.ttl.FillPercent, bk.due.FillPercent = appendFill, appendFill, appendFill
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

// key is the rec key of record id as this transaction sees it, nil if it
// is not stored.
func (bk buckets) key(id ID) []byte {
	seq, ok := bk.pend[id]
	if !ok {
		seq = bk.mem.seq(id)
	}
	if seq == 0 {
		return nil
	}
	return recKey(seq, id)
}

// get is the value of record id, nil if it is not stored.
func (bk buckets) get(id ID) []byte {
	k := bk.key(id)
	if k == nil {
		return nil
	}
	return bk.rec.Get(k)
}

// add writes the value v of a record id not stored yet, under the next
// sequence, and its index entries.
func (bk buckets) add(id ID, v []byte) error {
	seq, err := bk.rec.NextSequence()
	if err != nil {
		return err
	}
	if err := bk.rec.Put(recKey(seq, id), v); err != nil {
		return err
	}
	if err := bk.setRecords(bk.records() + 1); err != nil {
		return err
	}
	r := rawRecord{id: id, val: v}
	bk.file(r, seq)
	return bk.index(r, true)
}

// remove erases a record and its index entries; v is its current value.
func (bk buckets) remove(id ID, v []byte) error {
	if err := bk.rec.Delete(bk.key(id)); err != nil {
		return err
	}
	if n := bk.records(); n > 0 {
		if err := bk.setRecords(n - 1); err != nil {
			return err
		}
	}
	r := rawRecord{id: id, val: v}
	bk.file(r, 0)
	if hdrLen(v) == 0 {
		return nil // a mangled header: nothing to find in the indexes
	}
	return bk.index(r, false)
}

// file adds r, stored as seq, to the memory index (seq 0: takes it out)
// once the transaction commits: a group commit that fails and is run
// again without some of its writes leaves no trace of them there.
func (bk buckets) file(r rawRecord, seq uint64) {
	bk.pend[r.id] = seq
	id, hasAOR := r.id, hdrLen(r.val) > 0
	var key uint64
	if hasAOR {
		key = aorKey(r.aorHash()) // r.val may be bbolt's page: read it now
	}
	bk.tx.OnCommit(func() {
		if seq != 0 {
			bk.mem.add(id, seq, key, hasAOR)
		} else {
			bk.mem.remove(id, key, hasAOR)
		}
	})
}

// aorRecords are the records whose header names the AOR hash, in ID order,
// copied out of the transaction.
func (bk buckets) aorRecords(hash []byte) []rawRecord {
	var raws []rawRecord
	for _, id := range bk.mem.ids(aorKey(hash)) {
		if v := bk.get(id); hdrLen(v) > 0 && bytes.Equal(rawRecord{val: v}.aorHash(), hash) {
			raws = append(raws, rawRecord{id: id, val: bytes.Clone(v)})
		}
	}
	return raws
}

// indexEntry is one index key of a record: its bucket and key.
type indexEntry struct {
	b   *bolt.Bucket
	key []byte
}

// entries are the index keys the header of r names.
func (bk buckets) entries(r rawRecord) []indexEntry {
	out := []indexEntry{{bk.ttl, join(r.expiryKey(), r.id[:])}}
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
	key := bk.key(id)
	if hdrLen(old) == 0 {
		// A mangled header: nothing to find in the indexes.
		seq, _, _ := splitRecKey(key)
		bk.file(rawRecord{id: id, val: v}, seq)
		return bk.rec.Put(key, v)
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
	return bk.rec.Put(key, v)
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
		if v := bk.get(id); v != nil && hdrLen(v) > 0 {
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

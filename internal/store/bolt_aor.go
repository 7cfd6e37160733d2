package store

import (
	"bytes"
	"encoding/binary"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// memIndex is what the bbolt backend keeps in memory to find records: the
// key each record ID is stored under (format 5), and the records of an AOR
// (format 4): the first 8 bytes of an AOR hash mapped to the IDs of the
// records whose header names that hash. It is built from the record keys
// and headers when the file is opened, and kept by the commits that add
// and erase records (their OnCommit handlers), so it names what the file
// holds.
//
// On disk (format 3) the AOR index cost each new record a second random
// page, written and fsynced: `go test -bench BoltNewRecords
// ./internal/store` (100,000 records stored, groups of ~32) measured
// 124-150 µs of CPU and 4.3 pages written per new record with it, 56-65 µs
// and 2.6 pages without. Keyed by ID (format 4), a new record still landed
// on a random page of the records; keyed by a sequence (format 5) it lands
// on the last: 67 → 31 µs and 2.7 → 0.6 pages (same benchmark, 150,000
// records). In memory it costs two map entries per record and a walk of
// the record keys and headers at open (1,000,000 bindings:
// bench/README.md).
//
// Two AORs may share a key: readers compare the whole hash in the
// record's header (aorRecords).
type memIndex struct {
	mu   sync.RWMutex
	seqs map[ID]uint64   // the sequence each record is stored under
	one  map[uint64]ID   // the AOR key's record, or the first of several
	more map[uint64][]ID // the AOR key's others: an AOR with several devices
}

// aorKey is the index key of an AOR hash.
func aorKey(hash []byte) uint64 { return binary.BigEndian.Uint64(hash) }

// recKey is the records bucket's key of record id stored as seq.
func recKey(seq uint64, id ID) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, recKeyLen), seq), id[:]...)
}

// recKeyLen is the length of a records bucket key: sequence, ID.
const recKeyLen = 8 + IDSize

// splitRecKey is the sequence and ID of a records bucket key; ok false for
// a key that is not one.
func splitRecKey(k []byte) (seq uint64, id ID, ok bool) {
	if len(k) != recKeyLen {
		return 0, ID{}, false
	}
	return binary.BigEndian.Uint64(k), ID(k[8:]), true
}

// build fills the index from the keys and headers of rec's records,
// calling done after every n of them (and at the end).
func (x *memIndex) build(rec *bolt.Bucket, n int, done func()) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seqs, x.one, x.more = map[ID]uint64{}, map[uint64]ID{}, map[uint64][]ID{}
	c := rec.Cursor()
	i := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if seq, id, ok := splitRecKey(k); ok {
			x.seqs[id] = seq
			if hdrLen(v) > 0 {
				x.addAORLocked(aorKey(rawRecord{val: v}.aorHash()), id)
			}
		}
		if i++; i%n == 0 {
			done()
		}
	}
	done()
}

// seq is the sequence record id is stored under, 0 if it is not stored.
func (x *memIndex) seq(id ID) uint64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.seqs[id]
}

// add files record id, stored as seq, under the AOR key (none with
// hasAOR false: a header that cannot be read).
func (x *memIndex) add(id ID, seq uint64, key uint64, hasAOR bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seqs[id] = seq
	if hasAOR {
		x.addAORLocked(key, id)
	}
}

// addAORLocked files id under key once: adding it again changes nothing.
func (x *memIndex) addAORLocked(key uint64, id ID) {
	first, ok := x.one[key]
	switch {
	case !ok:
		x.one[key] = id
	case first != id && !slices.Contains(x.more[key], id):
		x.more[key] = append(x.more[key], id)
	}
}

// remove forgets record id, and takes it out of the AOR key (with hasAOR).
func (x *memIndex) remove(id ID, key uint64, hasAOR bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	delete(x.seqs, id)
	if !hasAOR {
		return
	}
	more := x.more[key]
	if x.one[key] == id {
		if len(more) == 0 {
			delete(x.one, key)
			return
		}
		x.one[key], more = more[len(more)-1], more[:len(more)-1]
	} else if i := slices.Index(more, id); i >= 0 {
		more = slices.Delete(more, i, i+1)
	}
	if len(more) == 0 {
		delete(x.more, key)
	} else {
		x.more[key] = more
	}
}

// len is the number of AOR keys (about the number of AORs) in the index.
func (x *memIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.one)
}

// filed tells whether any ID is filed under the AOR key.
func (x *memIndex) filed(key uint64) bool {
	x.mu.RLock()
	defer x.mu.RUnlock()
	_, ok := x.one[key]
	return ok
}

// ids returns the IDs filed under the AOR key, in ID order.
func (x *memIndex) ids(key uint64) []ID {
	x.mu.RLock()
	first, ok := x.one[key]
	out := append([]ID(nil), x.more[key]...)
	x.mu.RUnlock()
	if !ok {
		return nil
	}
	out = append(out, first)
	slices.SortFunc(out, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

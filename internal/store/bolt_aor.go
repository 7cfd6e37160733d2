package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// aorIndex finds the records of an AOR for the bbolt backend (format 4):
// it maps the first 8 bytes of an AOR hash to the IDs of the records whose
// header names that hash, in memory. It is built from the headers when the
// file is opened and kept by the commits that add and erase records (their
// OnCommit handlers), so it names what the file holds.
//
// On disk (format 3) the index cost each new record a second random page,
// written and fsynced: `go test -bench BoltNewRecords ./internal/store`
// (100,000 records stored, groups of ~32) measured 124-150 µs of CPU and
// 4.3 pages written per new record with it, 56-65 µs and 2.6 pages
// without. In memory it costs a map entry per AOR and a walk of the
// record headers at open (1,000,000 bindings: bench/README.md).
//
// Two AORs may share a key: readers compare the whole hash in the
// record's header (aorRecords).
type aorIndex struct {
	mu   sync.RWMutex
	one  map[uint64]ID   // the key's record, or the first of several
	more map[uint64][]ID // the key's others: an AOR with several devices
}

// aorKey is the index key of an AOR hash.
func aorKey(hash []byte) uint64 { return binary.BigEndian.Uint64(hash) }

// build fills the index from the headers of rec's records, calling done
// after every n of them (and at the end).
func (x *aorIndex) build(rec *bolt.Bucket, n int, done func()) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.one, x.more = map[uint64]ID{}, map[uint64][]ID{}
	c := rec.Cursor()
	i := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) == IDSize && hdrLen(v) > 0 {
			x.addLocked(aorKey(rawRecord{val: v}.aorHash()), ID(k))
		}
		if i++; i%n == 0 {
			done()
		}
	}
	done()
}

func (x *aorIndex) add(key uint64, id ID) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.addLocked(key, id)
}

// addLocked files id under key once: adding it again changes nothing.
func (x *aorIndex) addLocked(key uint64, id ID) {
	first, ok := x.one[key]
	switch {
	case !ok:
		x.one[key] = id
	case first != id && !slices.Contains(x.more[key], id):
		x.more[key] = append(x.more[key], id)
	}
}

func (x *aorIndex) remove(key uint64, id ID) {
	x.mu.Lock()
	defer x.mu.Unlock()
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

// aorEntry is one (key, ID) pair of a snapshot: 8 + IDSize bytes.
const aorEntry = 8 + IDSize

// snapshot packs the index into values of up to n entries each.
func (x *aorIndex) snapshot(n int) [][]byte {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out [][]byte
	var cur []byte
	put := func(key uint64, id ID) {
		if len(cur) == n*aorEntry {
			out, cur = append(out, cur), nil
		}
		cur = append(binary.BigEndian.AppendUint64(cur, key), id[:]...)
	}
	for key, id := range x.one {
		put(key, id)
		for _, more := range x.more[key] {
			put(key, more)
		}
	}
	if cur != nil {
		out = append(out, cur)
	}
	return out
}

// load fills the index from snapshot values; it fails on a value that is
// not whole entries.
func (x *aorIndex) load(values func(func(v []byte) error) error) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.one, x.more = map[uint64]ID{}, map[uint64][]ID{}
	return values(func(v []byte) error {
		if len(v)%aorEntry != 0 {
			return errors.New("store: AOR index snapshot: a value is not whole entries")
		}
		for ; len(v) > 0; v = v[aorEntry:] {
			x.addLocked(binary.BigEndian.Uint64(v), ID(v[8:aorEntry]))
		}
		return nil
	})
}

// len is the number of keys (about the number of AORs) in the index.
func (x *aorIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.one)
}

// ids returns the IDs filed under key, in ID order.
func (x *aorIndex) ids(key uint64) []ID {
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

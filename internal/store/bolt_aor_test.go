package store

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestBoltAORIndexKeptByCommits: after concurrent Puts, replacements,
// Deletes, DeleteAORs and sweeps sharing group commits, ListAOR names
// exactly the records the file holds for each AOR, and so does the index
// a reopen builds from the headers.
func TestBoltAORIndexKeptByCommits(t *testing.T) {
	t.Parallel()
	path := tempDB(t)
	keys := testKeyring(t, "a")
	b := openAt(t, path, keys)
	ctx := t.Context()
	const aors, devices = 40, 3
	aor := func(i int) string { return fmt.Sprintf("sip:user%d@example.com", i) }
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 150 {
				a := aor(rng.IntN(aors))
				id := b.ID(a, fmt.Sprint("dev", rng.IntN(devices)))
				var err error
				switch op := rng.IntN(10); {
				case op < 6: // a new record or a refresh; some already expired
					exp := testBase().Add(time.Duration(rng.IntN(48)-8) * time.Hour)
					err = b.Put(ctx, Record{ID: id, AOR: a, ExpiresAt: exp, Data: []byte("x")})
				case op < 8:
					if _, err = b.Delete(ctx, id); errors.Is(err, ErrNotFound) {
						err = nil
					}
				case op < 9:
					_, err = b.DeleteAOR(ctx, a)
				default:
					_, err = b.TakeExpired(ctx, testBase(), 5)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()

	var all []string
	for i := range aors {
		all = append(all, aor(i))
	}
	checkAORIndex(t, b, all, "after the writes")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	checkAORIndex(t, openAt(t, path, keys), all, "after a reopen")
}

// checkAORIndex: ListAOR of each of aors names exactly the records the
// file holds for it, and the index files no more IDs than there are
// records.
func checkAORIndex(t *testing.T, st *Bolt, aors []string, when string) {
	t.Helper()
	ctx := t.Context()
	inFile, n := map[string][]ID{}, 0
	if err := st.Scan(ctx, func(r Record) error { inFile[r.AOR] = append(inFile[r.AOR], r.ID); n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(inFile) == 0 {
		t.Fatalf("%s: no records left to check", when)
	}
	// Nothing erased stays filed: ListAOR would not show it (it reads
	// each record), but it would hold memory.
	filed := len(st.mem.one)
	for _, more := range st.mem.more {
		filed += len(more)
	}
	if filed != n || len(st.mem.seqs) != n {
		t.Fatalf("%s: the AOR index files %d IDs and the key index %d, the file holds %d records", when, filed, len(st.mem.seqs), n)
	}
	for _, aor := range aors {
		if got, want := listIDs(t, st, aor), sortIDs(inFile[aor]); !slices.Equal(got, want) {
			t.Fatalf("%s: ListAOR(%s) = %v, the file holds %v", when, aor, got, want)
		}
		for _, id := range inFile[aor] {
			if _, err := st.Get(ctx, id); err != nil {
				t.Fatalf("%s: Get of a record the file holds: %v", when, err)
			}
		}
	}
}

// Each open builds the memory index from the records, and writes nothing:
// an open that only reads (sipwake keys usage) leaves the file byte for
// byte as it was. A record erased behind the store's back (another
// process, a restored backup) is not in the next open's index.
func TestBoltIndexBuiltAtOpen(t *testing.T) {
	t.Parallel()
	path, keys, want, _ := writtenStore(t) // 40 AORs, several devices each
	var aors []string
	for _, r := range want {
		if !slices.Contains(aors, r.AOR) {
			aors = append(aors, r.AOR)
		}
	}
	before := readFile(t, path)
	b := openAt(t, path, keys)
	checkAORIndex(t, b, aors, "built at open")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, path), before) {
		t.Fatal("an open that only read changed the file")
	}

	rawUpdate(t, path, func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucketRec)).Delete(storedKey(t, tx, want[0].ID)) })
	b = openAt(t, path, keys)
	checkAORIndex(t, b, aors, "after a record was erased behind its back")
	if _, err := b.Get(t.Context(), want[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of the erased record: %v, want ErrNotFound", err)
	}
}

// Two AORs whose hashes share the index key (8 bytes of 20) are told apart
// by the header's whole hash.
func TestBoltAORIndexSharedKey(t *testing.T) {
	b := openAt(t, tempDB(t), testKeyring(t, "a"))
	ctx := t.Context()
	alice, bob := "sip:alice@example.com", "sip:bob@example.com"
	ra := Record{ID: b.ID(alice, "d"), AOR: alice, ExpiresAt: testBase().Add(day), Data: []byte("a")}
	rb := Record{ID: b.ID(bob, "d"), AOR: bob, ExpiresAt: testBase().Add(day), Data: []byte("b")}
	for _, r := range []Record{ra, rb} {
		if err := b.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	b.mem.add(rb.ID, b.mem.seq(rb.ID), aorKey(b.codec.aorHash(alice)), true) // bob's record under alice's key
	got, err := b.ListAOR(ctx, alice)
	if err != nil || len(got) != 1 || got[0].ID != ra.ID {
		t.Fatalf("ListAOR(alice) = %v, %v; want alice's record alone", got, err)
	}
	gone, err := b.DeleteAOR(ctx, alice)
	if err != nil || len(gone) != 1 || gone[0].ID != ra.ID {
		t.Fatalf("DeleteAOR(alice) = %v, %v; want alice's record alone", gone, err)
	}
	if _, err := b.Get(ctx, rb.ID); err != nil {
		t.Fatalf("bob's record after DeleteAOR(alice): %v", err)
	}
}

// storedKey is the recs key record id is stored under in tx (found by a
// walk, as the file alone tells it).
func storedKey(t *testing.T, tx *bolt.Tx, id ID) []byte {
	t.Helper()
	c := tx.Bucket([]byte(bucketRec)).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if _, kid, ok := splitRecKey(k); ok && kid == id {
			return bytes.Clone(k)
		}
	}
	t.Fatalf("record %s is not in the file", id)
	return nil
}

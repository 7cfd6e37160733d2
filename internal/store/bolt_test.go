package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestBoltFileMode(t *testing.T) {
	path := tempDB(t)
	openAt(t, path, testKeyring(t, "a"))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestBoltWrongKeyLeavesFileUntouched(t *testing.T) {
	path := tempDB(t)
	b := openAt(t, path, testKeyring(t, "a"))
	r := Record{ID: b.ID("sip:a@x", "d"), AOR: "sip:a@x", ExpiresAt: testBase(), Data: []byte("x")}
	if err := b.Put(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	before := sha256.Sum256(readFile(t, path))
	stBefore, _ := os.Stat(path)

	checkWrongKeys(t, func(t *testing.T, keys *Keyring) error {
		_, err := OpenBolt(path, keys, testLog(t))
		return err
	}, func(t *testing.T) {
		if after := sha256.Sum256(readFile(t, path)); after != before {
			t.Fatal("file changed by a refused open")
		}
		if st, _ := os.Stat(path); !st.ModTime().Equal(stBefore.ModTime()) || st.Size() != stBefore.Size() {
			t.Fatal("file metadata changed by a refused open")
		}
	})
	// The right key still opens it.
	b = openAt(t, path, testKeyring(t, "a"))
	if _, err := b.Get(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
}

func TestBoltSecondProcessLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 2s lock timeout")
	}
	path := tempDB(t)
	openAt(t, path, testKeyring(t, "a"))
	start := time.Now()
	_, err := OpenBolt(path, testKeyring(t, "a"), nil)
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second open: %v, want a lock error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v", d)
	}
}

// rawEdit changes the store file through bbolt directly, as an attacker or a
// disk fault would, while the store is closed.
func rawEdit(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestBoltTamperedRecords(t *testing.T) {
	path := tempDB(t)
	keys := testKeyring(t, "a")
	ctx := t.Context()
	b := openAt(t, path, keys)
	tp := putTampered(t, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	rawEdit(t, path, func(tx *bolt.Tx) error {
		rec := tx.Bucket([]byte(bucketRec))
		var err error
		tp.tamper(func(id ID) []byte { return rec.Get(storedKey(t, tx, id)) },
			func(id ID, v []byte) { err = errors.Join(err, rec.Put(storedKey(t, tx, id), v)) })
		return err
	})

	b = openAt(t, path, keys)
	tp.check(t, b)
	tp.erase(t, b)
	gone, err := b.DeleteAOR(ctx, tamperedAOR)
	if err != nil || len(gone) != 1 {
		t.Fatalf("DeleteAOR: %d, %v", len(gone), err)
	}
	if c, _ := b.Count(ctx); c != 0 {
		t.Fatalf("Count after erasing all = %d", c)
	}
}

func TestBoltFileHoldsNoPlaintext(t *testing.T) {
	path := tempDB(t)
	ctx := t.Context()
	b := openAt(t, path, testKeyring(t, "a"))
	ids := putSecrets(t, b)
	check := func(when string) {
		t.Helper()
		if l := leaks(string(readFile(t, path))); len(l) > 0 {
			t.Errorf("%s: the file holds %q", when, l)
		}
	}
	check("after Put")

	// Keep the sealed bytes of a record to erase, to look for them after.
	var sealed []byte
	rawView(t, b, func(tx *bolt.Tx) { sealed = bytes.Clone(tx.Bucket([]byte(bucketRec)).Get(storedKey(t, tx, ids[0]))) })
	if len(sealed) == 0 {
		t.Fatal("no raw value")
	}
	for _, id := range ids[:25] {
		if _, err := b.Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if b.PendingErasures() != 25 {
		t.Fatalf("PendingErasures = %d, want 25", b.PendingErasures())
	}
	if err := b.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	check("after Delete and Compact")
	if bytes.Contains(readFile(t, path), sealed[len(sealed)-32:]) {
		t.Fatal("the erased record's ciphertext survived compaction")
	}
	if b.PendingErasures() != 0 {
		t.Fatalf("PendingErasures after Compact = %d", b.PendingErasures())
	}
	if _, err := b.DeleteAOR(ctx, secretAOR); err != nil {
		t.Fatal(err)
	}
	if err := b.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	check("after DeleteAOR and Compact")
}

func rawView(t *testing.T, b *Bolt, fn func(tx *bolt.Tx)) {
	t.Helper()
	err := b.withDB(t.Context(), func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error { fn(tx); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBoltCompactShrinks(t *testing.T) {
	t.Parallel() // its own file; fsync-bound, so it overlaps the others
	path := tempDB(t)
	ctx := t.Context()
	b := openAt(t, path, testKeyring(t, "a"))
	const n = 3000
	putMany(t, b, n, 600)
	full := b.Size()
	gone, err := b.TakeExpired(ctx, testBase().Add(100*day), n-100)
	if err != nil || len(gone) != n-100 {
		t.Fatalf("TakeExpired: %d, %v", len(gone), err)
	}
	if b.Size() < full {
		t.Fatalf("bbolt shrank without compaction? %d < %d", b.Size(), full)
	}
	if err := b.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after := b.Size()
	t.Logf("file: %d bytes with %d records, %d after erasing %d and compacting", full, n, after, n-100)
	if after > full/5 {
		t.Fatalf("Compact left %d bytes of %d", after, full)
	}
	if c, _ := b.Count(ctx); c != 100 {
		t.Fatalf("Count after Compact = %d", c)
	}
	// Still a working store after the swap.
	putMany(t, b, 10, 100)
}

func TestBoltCompactWhileBusy(t *testing.T) {
	t.Parallel() // its own file; fsync-bound, so it overlaps the others
	path := tempDB(t)
	ctx := t.Context()
	b := openAt(t, path, testKeyring(t, "a"))
	putMany(t, b, 200, 100)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				if i >= 5 { // every writer fills its 5 slots at least once
					select {
					case <-stop:
						return
					default:
					}
				}
				aor := fmt.Sprintf("sip:busy%d@x", w)
				r := Record{ID: b.ID(aor, fmt.Sprint(i%5)), AOR: aor, ExpiresAt: testBase().Add(5 * day), Data: []byte("x")}
				if err := b.Put(ctx, r); err != nil {
					errs <- err
					return
				}
				if _, err := b.ListAOR(ctx, aor); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 5 {
		if err := b.Compact(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c, _ := b.Count(ctx); c != 200+8*5 {
		t.Fatalf("Count = %d, want %d", c, 200+8*5)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Fatalf("store dir holds %d entries (%v), want only the store: temp files left behind", len(entries), err)
	}
}

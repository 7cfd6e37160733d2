package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTestDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(tempDB(t), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

func putKey(k string) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte(k)) }
}

func queued(g *groupCommit) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// Writers that arrive while a commit runs are committed together by the
// next one, and a failing write in that group fails only itself.
func TestGroupCommit(t *testing.T) {
	db := openTestDB(t)
	var g groupCommit
	inside, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- g.update(db, func(tx *bolt.Tx) error {
			close(inside)
			<-release // hold the first commit open
			return putKey("first")(tx)
		})
	}()
	<-inside

	const n = 20
	boom := errors.New("boom")
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		fn := putKey(fmt.Sprint("k", i))
		if i == 7 {
			fn = func(*bolt.Tx) error { return boom }
		}
		wg.Go(func() { errs[i] = g.update(db, fn) })
	}
	for queued(&g) < n {
		time.Sleep(time.Millisecond) // waiting for the writers to queue, not timing them
	}
	close(release)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if i == 7 {
			if !errors.Is(err, boom) {
				t.Errorf("failing write: %v, want boom", err)
			}
		} else if err != nil {
			t.Errorf("write %d failed with its group: %v", i, err)
		}
	}
	// One commit alone, one for the 19 that queued behind it (after the
	// failing one was taken out and run alone, which commits nothing).
	if g.commits != 2 {
		t.Errorf("commits = %d, want 2 (the first write, then one group)", g.commits)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range n {
			if got := b.Get(fmt.Append(nil, "k", i)); (got != nil) == (i == 7) {
				t.Errorf("k%d stored: %v", i, got != nil)
			}
		}
		return nil
	})
}

// A lone writer is never left waiting: the group hands over or ends.
func TestGroupCommitAlone(t *testing.T) {
	db := openTestDB(t)
	var g groupCommit
	for i := range 3 {
		if err := g.update(db, putKey(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if g.commits != 3 || g.running || len(g.queue) != 0 {
		t.Fatalf("after 3 lone writes: commits %d, running %v, queued %d", g.commits, g.running, len(g.queue))
	}
}

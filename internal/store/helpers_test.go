package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testKey is a fixed key per id, so a test can reopen a store with "the
// same" or "another" key by naming it.
func testKey(id string) []byte {
	k := sha256.Sum256([]byte("sipwake test key " + id))
	return k[:]
}

func testKeyring(t testing.TB, active string, ids ...string) *Keyring {
	t.Helper()
	keys := map[string][]byte{active: testKey(active)}
	for _, id := range ids {
		keys[id] = testKey(id)
	}
	k, err := NewKeyring(active, keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func openAt(t testing.TB, path string, keys *Keyring) *Bolt {
	t.Helper()
	log := testLog(t)
	if _, ok := t.(*testing.B); ok {
		log = nil // benchmark output stays readable
	}
	b, err := OpenBolt(path, keys, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func tempDB(t testing.TB) string {
	return filepath.Join(t.TempDir(), "sipwake.db")
}

func testBase() time.Time { return time.Date(2031, 3, 14, 15, 9, 26, 0, time.UTC) }

const day = 24 * time.Hour

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// putter is what putAll writes to: either backend.
type putter interface {
	ID(aor, device string) ID
	Put(ctx context.Context, r Record) error
}

// putAll puts record(i) for every i below n from writers goroutines, each
// taking the next i, and returns how long that took. An error fails tb.
func putAll(tb testing.TB, st putter, n, writers int, record func(i int) Record) time.Duration {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := st.Put(tb.Context(), record(i)); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}

// putMany writes n records of dataLen bytes (their number in text, if
// dataLen is 0) from 16 goroutines and returns their IDs. Record i expires
// i seconds after testBase plus 3 days.
func putMany(tb testing.TB, st putter, n, dataLen int) []ID {
	tb.Helper()
	ids := make([]ID, n)
	putAll(tb, st, n, 16, func(i int) Record {
		aor := fmt.Sprintf("sip:user%d@example.com", i/2)
		r := Record{ID: st.ID(aor, fmt.Sprint("dev", i%2, "-", i)), AOR: aor, ExpiresAt: testBase().Add(3*day + time.Duration(i)*time.Second), Data: bytes.Repeat([]byte{'d'}, dataLen)}
		if dataLen == 0 {
			r.Data = []byte(fmt.Sprint(i))
		}
		ids[i] = r.ID
		return r
	})
	if tb.Failed() {
		tb.FailNow()
	}
	return ids
}

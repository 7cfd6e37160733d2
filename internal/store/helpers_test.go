package store

import (
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
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

package store_test

import (
	"path/filepath"
	"testing"

	"github.com/sipwake/sipwake/internal/store"
	"github.com/sipwake/sipwake/internal/store/storetest"
)

func TestBoltSuite(t *testing.T) {
	t.Parallel() // its own file; fsync-bound, so it overlaps the others
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "sipwake.db")
		return func(keys *store.Keyring) storetest.Backend {
			b, err := store.OpenBolt(path, keys, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}
	})
}

package store_test

import (
	"path/filepath"
	"testing"

	"github.com/sipwake/sipwake/internal/store"
	"github.com/sipwake/sipwake/internal/store/storetest"
)

func TestBoltSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		keys, err := store.NewKeyring("k1", map[string][]byte{"k1": store.NewKey()})
		if err != nil {
			t.Fatal(err)
		}
		b, err := store.OpenBolt(filepath.Join(t.TempDir(), "sipwake.db"), keys, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

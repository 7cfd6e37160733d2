package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/store"
)

// StorePath is where the bbolt file of cfg lives.
func StorePath(cfg config.Config) string { return filepath.Join(cfg.Store.DataDir, "sipwake.db") }

// KeyUsage counts the records per sealing key of a store that is not
// running, for `sipwake keys usage`. It never creates the store or a key.
// A store held by a running sipwake is refused after bbolt's lock timeout,
// with a pointer to GET /admin/keys; a wrong key is refused without writing.
func KeyUsage(ctx context.Context, cfg config.Config, log *slog.Logger) (map[string]int, error) {
	path := StorePath(cfg)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no store at %s (store.data_dir)", path)
	}
	material, err := cfg.Seal.KeyMaterial()
	if err != nil {
		return nil, err
	}
	if _, ok := material[cfg.Seal.KeyID]; !ok {
		dev, err := os.ReadFile(filepath.Join(cfg.Store.DataDir, DevKeyFile))
		if err != nil {
			return nil, fmt.Errorf("config: seal.key: no key for the active key id %q", cfg.Seal.KeyID)
		}
		material[cfg.Seal.KeyID] = string(dev)
	}
	keys, err := parseKeys(cfg.Seal.KeyID, material)
	if err != nil {
		return nil, err
	}
	st, err := store.OpenBolt(path, keys, log)
	if err != nil {
		if !errors.Is(err, store.ErrWrongKey) {
			err = fmt.Errorf("%w (if sipwake is running, ask it instead: GET /admin/keys on the admin listener)", err)
		}
		return nil, err
	}
	usage, err := st.KeyUsage(ctx)
	return usage, errors.Join(err, st.Close())
}

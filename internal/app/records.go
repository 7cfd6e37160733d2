package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// Records is what the app needs of a record store; *store.Bolt (one node)
// and *store.Redis (several nodes) both are one.
type Records interface {
	relay.Store
	DeleteAOR(ctx context.Context, aor string) ([]store.Record, error)
	TakeExpired(ctx context.Context, now time.Time, limit int) ([]store.Record, error)
	Scan(ctx context.Context, fn func(store.Record) error) error
	ScanDue(ctx context.Context, until time.Time, fn func(store.Record) error) error
	ScanAccounts(ctx context.Context, fn func(store.Record) error) error
	Count(ctx context.Context) (int, error)
	Compact(ctx context.Context) error
	Rotate(ctx context.Context) (int, error)
	KeyUsage(ctx context.Context) (map[string]int, error)
	// DeriveKey is a key from the store's secret, the same on every node
	// that shares the store (the SIP flow tokens' key).
	DeriveKey(label string) []byte
	Close() error
}

// openRecords opens the configured backend. shared is the Redis the
// nodes share (the cluster bus and leases run on it); nil for one node.
func openRecords(cfg config.Config, keys *store.Keyring, log *slog.Logger) (rec Records, shared redis.UniversalClient, err error) {
	if cfg.Store.Backend == "redis" {
		r := cfg.Store.Redis
		pw, err := r.Secret()
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rs, err := store.OpenRedis(ctx, store.RedisOptions{
			Addrs: r.Addrs, Cluster: r.Cluster, MasterName: r.MasterName,
			Username: r.Username, Password: pw, DB: r.DB, Prefix: r.Prefix, Grace: r.Grace,
		}, keys, log)
		if err != nil {
			return nil, nil, err
		}
		return rs, rs.Client(), nil
	}
	if err := os.MkdirAll(cfg.Store.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("data dir: %w", err)
	}
	b, err := store.OpenBolt(filepath.Join(cfg.Store.DataDir, "sipwake.db"), keys, log)
	return b, nil, err
}

// sizeOf is the store's file size; 0 for a backend without a file.
func sizeOf(r Records) int64 {
	if s, ok := r.(interface{ Size() int64 }); ok {
		return s.Size()
	}
	return 0
}

// pendingErasuresOf counts erasures whose ciphertext a compaction would
// drop; 0 for a backend that does not keep freed pages.
func pendingErasuresOf(r Records) int64 {
	if p, ok := r.(interface{ PendingErasures() int64 }); ok {
		return p.PendingErasures()
	}
	return 0
}

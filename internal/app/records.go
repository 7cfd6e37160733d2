package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
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
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rs, err := openRedis(ctx, cfg.Store.Redis, keys, log)
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

// openRedis opens the Redis store of the config r.
func openRedis(ctx context.Context, r config.Redis, keys *store.Keyring, log *slog.Logger) (*store.Redis, error) {
	pw, err := r.Secret()
	if err != nil {
		return nil, err
	}
	sentinelPW, err := r.SentinelSecret()
	if err != nil {
		return nil, err
	}
	tlsConf, err := r.TLSConfig()
	if err != nil {
		return nil, err
	}
	rs, err := store.OpenRedis(ctx, store.RedisOptions{
		Addrs: r.Addrs, Cluster: r.Cluster, MasterName: r.MasterName,
		Username: r.Username, Password: pw,
		SentinelUsername: r.SentinelUsername, SentinelPassword: sentinelPW,
		DB: r.DB, Prefix: r.Prefix, Grace: r.Grace, TLS: tlsConf,
		MinReplicas: r.MinReplicas, ReplicaTimeout: r.ReplicaTimeout, Timeout: r.Timeout,
	}, keys, log)
	if hint := redisHint(err, r.TLS); hint != "" {
		return nil, fmt.Errorf("%w (%s)", err, hint)
	}
	return rs, err
}

// redisHint names the setting an error reaching Redis most likely points
// at; the errors of Go's TLS and of a dropped connection do not.
func redisHint(err error, tlsOn bool) string {
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &verify):
		return "store.redis.tls_ca_file does not trust the server's certificate, or it does not name store.redis.tls_server_name or the address' host"
	case tlsOn && errors.As(err, &op) && op.Op == "remote error":
		return "the server refused the TLS handshake; if it asks for a client certificate, set store.redis.tls_cert_file and store.redis.tls_key_file to one it trusts"
	case tlsOn && errors.Is(err, context.DeadlineExceeded):
		return "store.redis.tls is on: a Redis that does not speak TLS on that port never answers the handshake"
	case !tlsOn && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return "the server hung up: if it speaks only TLS, set store.redis.tls"
	}
	return ""
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

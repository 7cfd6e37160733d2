// Package app wires sipwake's parts (store, push, relay, SIP side, sweeper)
// into one runnable unit with idempotent Start and Stop. It owns no signals
// and no globals, so tests run several instances side by side.
package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sip"
	"github.com/sipwake/sipwake/internal/store"
)

// DevKeyFile is where a generated development sealing key is kept, inside
// the data dir, when the config names none.
const DevKeyFile = "dev-seal.key"

// sweepBatch bounds how many expired records one sweep takes at once.
const sweepBatch = 512

// App is one sipwake instance.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	now      func() time.Time
	store    *store.Bolt
	registry *prometheus.Registry
	counted  countedStore
	push     *push.Dispatcher
	relay    *relay.Service
	sip      *sip.Server

	mu       sync.Mutex
	started  bool
	stopped  bool
	cancel   context.CancelFunc
	sweeping sync.WaitGroup
}

// Option adjusts an App at construction.
type Option func(*App)

// WithClock replaces time.Now, so tests of a 5-day expiry take milliseconds.
func WithClock(now func() time.Time) Option { return func(a *App) { a.now = now } }

// New opens the store and builds every part; nothing listens until Start.
func New(cfg config.Config, log *slog.Logger, opts ...Option) (*App, error) {
	keys, err := keyring(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Store.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	st, err := store.OpenBolt(filepath.Join(cfg.Store.DataDir, "sipwake.db"), keys, log)
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, log: log, now: time.Now, store: st, registry: prometheus.NewRegistry()}
	for _, o := range opts {
		o(a)
	}
	a.registerStoreMetrics()
	a.counted = newCountedStore(st, a.registry)
	a.push, err = push.New(cfg.Push, log, a.registry)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	a.relay = relay.New(st, a.push, relay.Options{
		RecordTTL: cfg.Store.RecordTTL,
		Providers: providers(cfg.Push),
		Metrics:   relay.NewMetrics(a.registry),
	}, log, a.now)
	sipOpts, err := sip.OptionsFrom(cfg)
	if err == nil {
		sipOpts.Metrics = sip.NewMetrics(a.registry)
		sipOpts.TLSConfig, err = sipTLS(cfg.SIP.Listen)
	}
	if err == nil {
		a.sip, err = sip.New(sipOpts, a.relay, log)
	}
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	a.relay.SetUpstream(a.sip)
	return a, nil
}

// Start binds the listeners and starts the sweeper.
func (a *App) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	if err := a.sip.Start(ctx); err != nil {
		cancel()
		return err
	}
	a.cancel = cancel
	a.started = true
	sweeper := store.NewSweeper(a.counted, a.cfg.Store.SweepInterval, a.cfg.Store.CompactInterval, a.now, a.relay.Expired, a.log)
	keeper := a.relay.NewKeeper(a.store, relay.KeeperOptions{
		Interval:       a.cfg.Store.SweepInterval,
		RefreshLead:    a.cfg.Calls.RefreshLead,
		ExpiryWarnings: a.cfg.Calls.ExpiryWarnings,
	})
	a.sweeping.Add(2)
	go func() {
		defer a.sweeping.Done()
		if err := sweeper.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("sweeper stopped", "error", err)
		}
	}()
	go func() {
		defer a.sweeping.Done()
		keeper.Run(ctx)
	}()
	a.log.Info("sipwake started", "udp", a.sip.Addr("udp"), "tcp", a.sip.Addr("tcp"), "tls", a.sip.Addr("tls"),
		"upstream", a.cfg.SIP.Upstream, "mode", a.cfg.SIP.UpstreamMode, "record_ttl", a.cfg.Store.RecordTTL)
	return nil
}

// Stop shuts down in reverse order within ctx; it is idempotent.
func (a *App) Stop(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return nil
	}
	a.stopped = true
	// Parked calls finish (or get 503) before the listeners close.
	if err := a.sip.Drain(ctx); err != nil {
		a.log.Warn("calls still parked at shutdown were answered 503", "error", err)
	}
	if a.cancel != nil {
		a.cancel()
	}
	errs := []error{a.sip.Stop(context.WithoutCancel(ctx))}
	a.sweeping.Wait()
	a.relay.Drain()
	a.push.Close()
	errs = append(errs, a.store.Close())
	return errors.Join(errs...)
}

// SIPAddr is the bound address of a SIP listener ("udp", "tcp", "tls").
func (a *App) SIPAddr(network string) string { return a.sip.Addr(network) }

// Registry holds every metric of this instance (served on /metrics).
func (a *App) Registry() *prometheus.Registry { return a.registry }

// registerStoreMetrics exports what the store holds, read at scrape time,
// and the Go runtime's own figures.
func (a *App) registerStoreMetrics() {
	a.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sipwake_store_records", Help: "Bindings held."}, func() float64 {
			n, err := a.store.Count(context.Background())
			if err != nil {
				return -1
			}
			return float64(n)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sipwake_store_size_bytes", Help: "Size of the database file."}, func() float64 {
			return float64(a.store.Size())
		}),
	)
}

// Relay is the domain service, for tests and the admin side.
func (a *App) Relay() *relay.Service { return a.relay }

// Store is the record store, for tests and the admin side.
func (a *App) Store() *store.Bolt { return a.store }

// providers lists the pn-provider values the configured apps serve.
func providers(c push.Config) []string {
	var out []string
	for _, a := range c.Apps {
		if !slices.Contains(out, a.Provider) {
			out = append(out, a.Provider)
		}
	}
	return out
}

// keyring builds the sealing keys from the config; with none configured it
// generates (once) a development key in the data dir and says so.
func keyring(cfg config.Config, log *slog.Logger) (*store.Keyring, error) {
	material, err := cfg.Seal.KeyMaterial()
	if err != nil {
		return nil, err
	}
	if _, ok := material[cfg.Seal.KeyID]; !ok {
		if len(material) > 0 {
			return nil, fmt.Errorf("config: seal.key: no key for the active key id %q", cfg.Seal.KeyID)
		}
		dev, err := devKey(cfg.Store.DataDir, log)
		if err != nil {
			return nil, err
		}
		material[cfg.Seal.KeyID] = dev
	}
	keys := make(map[string][]byte, len(material))
	for id, b64 := range material {
		k, err := store.ParseKey(b64)
		if err != nil {
			return nil, fmt.Errorf("config: sealing key %q: %w", id, err)
		}
		keys[id] = k
	}
	return store.NewKeyring(cfg.Seal.KeyID, keys)
}

func devKey(dataDir string, log *slog.Logger) (string, error) {
	path := filepath.Join(dataDir, DevKeyFile)
	if raw, err := os.ReadFile(path); err == nil {
		log.Warn("using the development sealing key; set seal.key_file for production", "path", path)
		return string(raw), nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString(k)
	if err := os.WriteFile(path, []byte(b64), 0o600); err != nil {
		return "", fmt.Errorf("write development key: %w", err)
	}
	log.Warn("generated a development sealing key; set seal.key_file for production", "path", path)
	return b64, nil
}

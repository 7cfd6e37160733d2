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
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sipwake/sipwake/internal/admin"
	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/cluster"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/fcm"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sip"
	"github.com/sipwake/sipwake/internal/store"
)

// DevKeyFile is where a generated development sealing key is kept, inside
// the data dir, when the config names none.
const DevKeyFile = "dev-seal.key"

// closeTimeout bounds closing listeners and the admin listener after the
// drain, so Stop ends even when a transport hangs.
const closeTimeout = 5 * time.Second

// App is one sipwake instance.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	now      func() time.Time
	store    Records
	registry *prometheus.Registry
	counted  countedStore
	pusher   *pushSwitch
	relay    *relay.Service
	sip      *sip.Server
	admin    *admin.Server // nil when admin.listen is empty
	handover *handover.Registrations
	bus      *cluster.Bus // nil on a single node
	api      *api.Server  // nil when api.listen is empty

	sipCert, adminCert *certFile // nil without TLS
	rotation           rotationState

	mu       sync.Mutex
	started  bool
	stopped  bool
	stopping atomic.Bool // readyz answers 503 from the first moment of Stop
	cancel   context.CancelFunc
	sweeping sync.WaitGroup
}

// Option adjusts an App at construction.
type Option func(*App)

// WithClock replaces time.Now, so tests of a 5-day expiry take milliseconds.
func WithClock(now func() time.Time) Option { return func(a *App) { a.now = now } }

// New opens the store and builds every part, each whole when built;
// nothing listens until Start. When a part fails, the ones built before it
// are closed again, last first.
func New(cfg config.Config, log *slog.Logger, opts ...Option) (a *App, err error) {
	var undo []func()
	defer func() {
		if err != nil {
			slices.Reverse(undo)
			for _, f := range undo {
				f()
			}
		}
	}()
	keys, err := keyring(cfg, log)
	if err != nil {
		return nil, err
	}
	st, shared, err := openRecords(cfg, keys, log)
	if errors.Is(err, store.ErrWrongKey) {
		return nil, fmt.Errorf("refusing to start, the store was not changed: %w "+
			"(check seal.key/seal.key_file; after a rotation the old key must stay in seal.previous until /admin/keys lists it as retirable)", err)
	}
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = st.Close() })
	a = &App{cfg: cfg, log: log, now: time.Now, store: st, registry: prometheus.NewRegistry()}
	for _, o := range opts {
		o(a)
	}
	a.counted = newCountedStore(st, a.registry)
	a.registerStoreMetrics()
	d, err := push.New(cfg.Push, log, a.registry, push.WithFCM(fcm.New))
	if err != nil {
		return nil, err
	}
	undo = append(undo, d.Close)
	a.pusher = newPushSwitch(d)
	relayOpts := relay.Options{
		RecordTTL:        cfg.Store.RecordTTL,
		RefreshStaleness: cfg.Store.RefreshStaleness,
		Providers:        providers(cfg.Push),
		Metrics:          relay.NewMetrics(a.registry),

		CallPushesPerMinute: cfg.Calls.PushesPerDevicePerMinute,
		Wakeups: relay.WakeupOptions{
			Interval:       cfg.Store.SweepInterval,
			RefreshLead:    cfg.Calls.RefreshLead,
			ExpiryWarnings: cfg.Calls.ExpiryWarnings,
		},
	}
	hopts := handover.Options{UserAgent: cfg.SIP.UserAgent, Now: a.now, Rescan: cfg.Cluster.RescanInterval}
	if shared != nil {
		a.bus = cluster.New(shared, redisPrefix(cfg), log)
		hopts.Leases = cluster.NewLeases(shared, redisPrefix(cfg), nodeAddress(cfg))
		relayOpts.Bus, relayOpts.Node = a.bus, nodeAddress(cfg)
	}
	a.relay = relay.New(a.counted, a.pusher, relayOpts, log, a.now)
	sipOpts, err := sipOptions(cfg)
	if err != nil {
		return nil, err
	}
	sipOpts.Metrics = sip.NewMetrics(a.registry)
	sipOpts.FlowKey = st.DeriveKey(sip.FlowKeyLabel)
	sipOpts.StoreInProcess = shared == nil
	if l := cfg.SIP.Listen; l.TLS != "" {
		if a.sipCert, err = loadCertFile("sip.listen.tls_cert_file/tls_key_file", l.TLSCertFile, l.TLSKeyFile); err != nil {
			return nil, err
		}
		sipOpts.TLSConfig = a.sipCert.config()
	}
	if a.sip, err = sip.New(sipOpts, a.relay, log); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = a.sip.Stop(context.Background()) })
	hopts.ContactFor = a.sip.BindingURIFor
	if a.handover, err = handover.New(a.relay, a.counted, hopts, log); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = a.handover.Stop(context.Background()) })
	if cfg.API.Listen != "" {
		if a.api, err = api.New(cfg.API, a.relay, a.handover, log, a.now); err != nil {
			return nil, err
		}
	}
	if err = a.newAdmin(); err != nil {
		return nil, err
	}
	a.registerHandoverMetrics()
	return a, nil
}

func redisPrefix(cfg config.Config) string {
	if cfg.Store.Redis.Prefix != "" {
		return cfg.Store.Redis.Prefix
	}
	return store.DefaultRedisPrefix
}

// nodeAddress is where the other nodes reach this one.
func nodeAddress(cfg config.Config) string {
	for _, a := range []string{cfg.Cluster.NodeAddress, cfg.SIP.PublicAddress, cfg.SIP.Listen.UDP} {
		if _, _, err := net.SplitHostPort(a); err == nil {
			return a
		}
	}
	return ""
}

// registerHandoverMetrics exports how many handed-over accounts stand in
// each upstream registration state, read at scrape time.
func (a *App) registerHandoverMetrics() {
	for _, phase := range []handover.Phase{handover.PhaseRegistering, handover.PhaseRegistered, handover.PhaseStandby, handover.PhaseFailed} {
		a.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sipwake_upstream_registrations",
			Help:        "Handed-over accounts by upstream registration state.",
			ConstLabels: prometheus.Labels{"state": string(phase)},
		}, func() float64 { return float64(a.handover.Phases()[phase]) }))
	}
}

// upstreams un-registers an expired binding the way it was registered:
// sipwake's own registration for a handed-over account, the device's
// otherwise.
type upstreams struct{ sip, handover relay.Upstream }

func (u upstreams) Unregister(ctx context.Context, b relay.Binding) error {
	if b.Account != nil {
		return u.handover.Unregister(ctx, b)
	}
	return u.sip.Unregister(ctx, b)
}

// newAdmin builds the operator listener when admin.listen is set.
func (a *App) newAdmin() error {
	c := a.cfg.Admin
	if c.Listen == "" {
		return nil
	}
	opts := admin.Options{
		Listen: c.Listen, TokenSHA256: c.TokenSHA256, MaxTrace: c.MaxTrace,
		Gatherer: a.registry, Backend: operator{a}, Traces: a.relay.Traces(), Log: a.log,
	}
	if c.TLSCertFile != "" {
		var err error
		if a.adminCert, err = loadCertFile("admin.tls_cert_file/tls_key_file", c.TLSCertFile, c.TLSKeyFile); err != nil {
			return err
		}
		opts.TLS = a.adminCert.config()
	}
	var err error
	a.admin, err = admin.New(opts)
	return err
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
	if err := a.startServices(ctx); err != nil {
		cancel()
		_ = a.sip.Stop(context.WithoutCancel(ctx))
		return err
	}
	a.cancel = cancel
	a.started = true
	up := upstreams{sip: a.sip, handover: a.handover}
	expired := func(ctx context.Context, recs []store.Record) { a.relay.Expired(ctx, recs, up) }
	sweeper := store.NewSweeper(a.counted, a.cfg.Store.SweepInterval, a.cfg.Store.CompactInterval, a.now, expired, a.log)
	a.sweeping.Add(2)
	go func() {
		defer a.sweeping.Done()
		if err := sweeper.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("sweeper stopped", "error", err)
		}
	}()
	go func() {
		defer a.sweeping.Done()
		a.relay.Wakeups().Run(ctx)
	}()
	if len(a.cfg.Seal.Previous) > 0 {
		a.sweeping.Add(1)
		go func() {
			defer a.sweeping.Done()
			a.rotate(ctx)
		}()
	}
	a.log.Info("sipwake started", "udp", a.sip.Addr("udp"), "tcp", a.sip.Addr("tcp"), "tls", a.sip.Addr("tls"),
		"upstream", a.cfg.SIP.Upstream, "mode", a.cfg.SIP.UpstreamMode, "record_ttl", a.cfg.Store.RecordTTL,
		"admin", a.AdminAddr())
	return nil
}

// Stop shuts down in reverse order; it is idempotent. ctx bounds the drain:
// new calls get 503 at once, parked ones may still be answered until ctx
// ends and get 503 then. Closing the listeners and the store (which flushes
// it) follows within a few seconds. /readyz answers 503 from the start and
// /metrics stays up until the end.
func (a *App) Stop(ctx context.Context) error {
	a.stopping.Store(true)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return nil
	}
	a.stopped = true
	start := time.Now()
	// Parked calls finish (or get 503) before the listeners close.
	if err := a.sip.Drain(ctx); err != nil {
		a.log.Warn("calls still parked at shutdown were answered 503", "error", err)
	}
	if a.cancel != nil {
		a.cancel()
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	var errs []error
	if a.api != nil {
		errs = append(errs, a.api.Stop(cctx))
	}
	errs = append(errs, a.handover.Stop(cctx), a.sip.Stop(cctx))
	a.sweeping.Wait()
	a.relay.Drain()
	a.pusher.close()
	errs = append(errs, a.store.Close())
	if a.admin != nil {
		errs = append(errs, a.admin.Stop(cctx))
	}
	err := errors.Join(errs...)
	a.log.Info("sipwake stopped", "took", time.Since(start), "clean", err == nil)
	return err
}

// startServices starts what runs beside the SIP side: the handover
// registrations (resuming every stored account), the API and the admin listener.
func (a *App) startServices(ctx context.Context) error {
	if a.bus != nil {
		if err := a.bus.Run(ctx, a.relay.RemoteRefreshed); err != nil {
			return err
		}
	}
	if err := a.handover.Start(ctx); err != nil {
		return err
	}
	if a.api != nil {
		if err := a.api.Start(ctx); err != nil {
			return err
		}
	}
	if a.admin != nil {
		return a.admin.Start(ctx)
	}
	return nil
}

// APIURL is the handover API's base URL, or "" when it is off.
func (a *App) APIURL() string {
	if a.api == nil {
		return ""
	}
	return a.api.URL()
}

// AdminAddr is the bound address of the operator listener, or "".
func (a *App) AdminAddr() string {
	if a.admin == nil {
		return ""
	}
	return a.admin.Addr()
}

// AdminURL is the operator listener's base URL, or "".
func (a *App) AdminURL() string {
	if a.admin == nil {
		return ""
	}
	return a.admin.URL()
}

// SIPAddr is the bound address of a SIP listener ("udp", "tcp", "tls").
func (a *App) SIPAddr(network string) string { return a.sip.Addr(network) }

// Registry holds every metric of this instance (served on /metrics).
func (a *App) Registry() *prometheus.Registry { return a.registry }

// registerStoreMetrics exports what the store holds and whether it
// answers, read at scrape time, and the Go runtime's own figures.
func (a *App) registerStoreMetrics() {
	a.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		storeCollector{a.counted},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sipwake_store_size_bytes", Help: "Size of the database file."}, func() float64 {
			return float64(sizeOf(a.store))
		}),
	)
}

// storeCollector exports the records held and whether the store answered,
// from one Count per scrape (a Redis round trip; a failed one counted once
// in sipwake_store_errors_total).
type storeCollector struct{ st Records }

var (
	storeRecordsDesc = prometheus.NewDesc("sipwake_store_records", "Bindings held; -1 when the store cannot count them.", nil, nil)
	storeUpDesc      = prometheus.NewDesc("sipwake_store_up",
		"1 when the store answered at scrape time, 0 when it did not (Redis unreachable, the file unreadable).", nil, nil)
)

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeRecordsDesc
	ch <- storeUpDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	records, up := -1.0, 0.0
	if n, err := c.st.Count(context.Background()); err == nil {
		records, up = float64(n), 1
	}
	ch <- prometheus.MustNewConstMetric(storeRecordsDesc, prometheus.GaugeValue, records)
	ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, up)
}

// Relay is the domain service, for tests and the admin side.
func (a *App) Relay() *relay.Service { return a.relay }

// Store is the record store, for tests and the admin side.
func (a *App) Store() Records { return a.store }

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
	return parseKeys(cfg.Seal.KeyID, material)
}

func parseKeys(active string, material map[string]string) (*store.Keyring, error) {
	keys := make(map[string][]byte, len(material))
	for id, b64 := range material {
		k, err := store.ParseKey(b64)
		if err != nil {
			return nil, fmt.Errorf("config: sealing key %q: %w", id, err)
		}
		keys[id] = k
	}
	return store.NewKeyring(active, keys)
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

// Package admin is sipwake's operator listener: Prometheus /metrics, the
// /healthz and /readyz probes, and the bearer-token /admin/ API with which
// an operator counts what is held, answers erasure and export requests,
// switches a per-AOR troubleshooting trace on for a bounded time, compacts
// the store and follows a key rotation.
//
// It owns the HTTP surface and its authentication only. What is counted,
// erased or rotated is decided by the Backend (internal/app wires the relay
// and the store behind it). It is not the handover API (internal/api), and
// it listens on its own address: plain HTTP only on loopback, TLS anywhere
// else.
package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/internal/httpserve"
	"github.com/sipwake/sipwake/internal/relay"
)

// Trace bounds when the config does not say.
const (
	DefaultTrace    = relay.DefaultTraceFor
	DefaultMaxTrace = 24 * time.Hour
)

// Backend is what the admin API acts on.
type Backend interface {
	// Counts are aggregate figures; nothing per user.
	Counts(ctx context.Context) (Counts, error)
	// Bindings returns every record held for aor.
	Bindings(ctx context.Context, aor relay.AOR) ([]relay.Binding, error)
	// EraseAOR erases every record of aor (an erasure request) and returns
	// how many there were.
	EraseAOR(ctx context.Context, aor relay.AOR) (int, error)
	// Compact rewrites the store so freed pages keep no ciphertext.
	Compact(ctx context.Context) (Compaction, error)
	// Keys reports sealing-key usage and the background rotation.
	Keys(ctx context.Context) (Keys, error)
	// Ready lists why the instance cannot take traffic; empty when it can.
	Ready(ctx context.Context) []string
}

// Tracer switches per-AOR troubleshooting traces (*relay.Traces).
type Tracer interface {
	On(aor relay.AOR, d time.Duration) time.Time
	Off(aor relay.AOR)
	Active(aor relay.AOR) bool
}

// Counts is GET /admin/counts.
type Counts struct {
	Records         int   `json:"records"`
	TracesOn        int   `json:"traces_on"`
	CallsParked     int   `json:"calls_parked"`
	StoreSizeBytes  int64 `json:"store_size_bytes"`
	PendingErasures int64 `json:"pending_erasures"`
}

// Compaction is the answer to POST /admin/compact.
type Compaction struct {
	BytesBefore int64   `json:"bytes_before"`
	BytesAfter  int64   `json:"bytes_after"`
	Seconds     float64 `json:"seconds"`
}

// Keys is GET /admin/keys.
type Keys struct {
	Active string `json:"active"`
	// Usage counts records per key id; a previous key at 0 (once Rotation
	// is done) can be removed from seal.previous.
	Usage map[string]int `json:"usage"`
	// Retirable lists the previous keys no record uses any more.
	Retirable []string `json:"retirable"`
	Rotation  Rotation `json:"rotation"`
}

// Rotation is the state of the background re-seal after a key change.
type Rotation struct {
	State      string    `json:"state"` // idle, running, done, failed
	Resealed   int       `json:"resealed"`
	Error      string    `json:"error,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Options configure a Server.
type Options struct {
	// Listen is host:port ("127.0.0.1:0" in tests).
	Listen string
	// TLS serves HTTPS; nil means plain HTTP, refused off loopback.
	TLS *tls.Config
	// TokenSHA256 is the hex SHA-256 of the accepted bearer token; empty
	// turns /admin/ off (403).
	TokenSHA256 string
	// MaxTrace bounds a trace (DefaultMaxTrace if 0).
	MaxTrace time.Duration
	Gatherer prometheus.Gatherer
	Backend  Backend
	Traces   Tracer
	Log      *slog.Logger
}

// Server is the operator listener.
type Server struct {
	opts    Options
	token   []byte // decoded SHA-256, nil when /admin/ is off
	log     *slog.Logger
	handler http.Handler

	// Slot gives the server its Stop, Addr and URL.
	httpserve.Slot
}

// New checks opts and builds the handler; nothing listens until Start.
func New(opts Options) (*Server, error) {
	if opts.Backend == nil || opts.Traces == nil || opts.Gatherer == nil {
		return nil, errors.New("admin: Backend, Traces and Gatherer are required")
	}
	if opts.TLS == nil && !httpserve.Loopback(opts.Listen) {
		return nil, fmt.Errorf("admin: refusing plain HTTP on non-loopback address %q: configure admin.tls_cert_file and admin.tls_key_file", opts.Listen)
	}
	if opts.MaxTrace <= 0 {
		opts.MaxTrace = DefaultMaxTrace
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Log}
	if opts.TokenSHA256 != "" {
		sum, err := hex.DecodeString(opts.TokenSHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, errors.New("admin: token SHA-256 must be 64 hex digits")
		}
		s.token = sum
	}
	s.handler = s.routes()
	return s, nil
}

// Handler serves every route, for tests without a listener.
func (s *Server) Handler() http.Handler { return s.handler }

// Start binds the listener and serves it in the background. A bind error
// is returned here. It is idempotent.
func (s *Server) Start(ctx context.Context) error {
	started, err := s.Slot.Start(ctx, httpserve.Options{
		Name: "admin", Addr: s.opts.Listen, Handler: s.handler, TLS: s.opts.TLS,
		ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute, Log: s.log,
	})
	if started {
		s.log.Info("admin listener started", "addr", s.Addr(), "tls", s.opts.TLS != nil, "admin_api", s.token != nil)
	}
	return err
}

// HashToken is the hex SHA-256 of token, the form admin.token_sha256 takes.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// NewToken returns a fresh random bearer token (32 bytes, hex).
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// authorized checks the bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	sum, ok := httpserve.BearerSum(r)
	return ok && subtle.ConstantTimeCompare(sum[:], s.token) == 1
}

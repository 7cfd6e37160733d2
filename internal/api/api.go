// Package api is sipwake's HTTPS API for apps: the handover of SIP accounts
// (PUT, GET, DELETE /v1/accounts/{id}). It owns authentication (per-app API
// keys, held as SHA-256 hashes), per-key and per-source rate limits, body
// bounds and strict JSON, and the mapping of registrar outcomes to HTTP
// statuses. It does not register anything itself (package handover does)
// nor store anything (package relay, sealed by store).
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/sipwake/sipwake/internal/httpjson"
	"github.com/sipwake/sipwake/internal/httpserve"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// Bindings is what the API reads from the relay. *relay.Service satisfies it.
type Bindings interface {
	AccountID(app, id string) store.ID
	Binding(ctx context.Context, id store.ID) (relay.Binding, error)
	Supports(provider string) bool
	Providers() []string
}

// Registrations is what the API asks of the handover registrations;
// *handover.Registrations satisfies it.
type Registrations interface {
	Hand(ctx context.Context, b relay.Binding, ttl time.Duration) (relay.Binding, bool, error)
	Release(ctx context.Context, app, id string) error
	Status(id store.ID) (handover.Status, bool)
}

// Server is the API's HTTP(S) server.
type Server struct {
	cfg      Config
	bindings Bindings
	handover Registrations
	log      *slog.Logger
	now      func() time.Time
	tls      *tls.Config
	keys     map[[sha256.Size]byte]string // key hash -> app
	limits   *limiters
	handler  http.Handler

	// Slot gives the server its Stop, Addr and URL.
	httpserve.Slot
}

// New checks cfg, loads the TLS certificate and builds the server; nothing
// listens until Start. now is the clock (time.Now in production).
func New(cfg Config, bindings Bindings, handover Registrations, log *slog.Logger, now func() time.Time) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate().Err(); err != nil {
		return nil, fmt.Errorf("api config: %w", err)
	}
	if cfg.Listen == "" {
		return nil, errors.New("api config: api.listen is empty (the API is off)")
	}
	s := &Server{
		cfg: cfg, bindings: bindings, handover: handover, log: log.With("part", "api"), now: now,
		keys: map[[sha256.Size]byte]string{},
	}
	for _, k := range cfg.Keys {
		var h [sha256.Size]byte
		b, _ := hex.DecodeString(strings.ToLower(k.SHA256)) // Validate checked it
		copy(h[:], b)
		s.keys[h] = k.App
	}
	if cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("api.tls_cert_file / api.tls_key_file: %w", err)
		}
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	s.limits = newLimiters(cfg.RateLimit, now)
	s.handler = s.routes()
	return s, nil
}

// Handler is the API's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Start binds the listen address (so a bind error is returned here) and
// serves in the background. It is idempotent.
func (s *Server) Start(ctx context.Context) error {
	started, err := s.Slot.Start(ctx, httpserve.Options{
		Name: "api", Addr: s.cfg.Listen, Handler: s.handler, TLS: s.tls,
		ReadTimeout: 15 * time.Second,
		// A PUT waits for the registrar (its own timeout, twice when an
		// account moves registrar).
		WriteTimeout: 60 * time.Second, IdleTimeout: 90 * time.Second,
		MaxHeaderBytes: 16 << 10, Log: s.log,
	})
	if started {
		s.log.Info("api listening", "addr", s.Addr(), "tls", s.tls != nil, "apps", len(s.keys))
	}
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/accounts/{id}", s.authed(s.putAccount))
	mux.HandleFunc("GET /v1/accounts/{id}", s.authed(s.getAccount))
	mux.HandleFunc("DELETE /v1/accounts/{id}", s.authed(s.deleteAccount))
	mux.HandleFunc("/v1/accounts/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "PUT, GET, DELETE")
		httpjson.Error(w, http.StatusMethodNotAllowed, "method not allowed; use PUT, GET or DELETE")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Error(w, http.StatusNotFound, "no such resource; the API is /v1/accounts/{id} (PUT, GET, DELETE)")
	})
	return s.perSource(mux)
}

// perSource rate-limits by source IP before anything else, so guessing
// keys is as slow as any other request.
func (s *Server) perSource(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		if !s.limits.allowSource(host) {
			w.Header().Set("Retry-After", "1")
			httpjson.Error(w, http.StatusTooManyRequests, "too many requests from this address")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type appHandler func(w http.ResponseWriter, r *http.Request, app, id string)

// authed checks the API key and the per-key limit and the account id, then
// calls h with the calling app.
func (s *Server) authed(h appHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		app, ok := s.app(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sipwake"`)
			httpjson.Error(w, http.StatusUnauthorized, "missing or unknown API key (send Authorization: Bearer <key>)")
			return
		}
		if !s.limits.allowKey(app) {
			w.Header().Set("Retry-After", "1")
			httpjson.Error(w, http.StatusTooManyRequests, "too many requests for this API key")
			return
		}
		id := r.PathValue("id")
		if !validAccountID(id) {
			httpjson.Error(w, http.StatusBadRequest, "account id: want 1–128 of A-Z a-z 0-9 . _ ~ -")
			return
		}
		start := s.now()
		rw := &statusWriter{ResponseWriter: w}
		h(rw, r, app, id)
		s.log.Info("api request", "app", app, "method", r.Method, "status", rw.status, "took", s.now().Sub(start))
	}
}

// app finds the caller's app from its bearer key. Keys are compared by
// their SHA-256 in constant time.
func (s *Server) app(r *http.Request) (string, bool) {
	sum, ok := httpserve.BearerSum(r)
	if !ok {
		return "", false
	}
	var found string
	for h, app := range s.keys {
		if subtle.ConstantTimeCompare(h[:], sum[:]) == 1 {
			found = app
		}
	}
	return found, found != ""
}

func validAccountID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

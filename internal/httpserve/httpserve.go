// Package httpserve starts and stops sipwake's two HTTP listeners (the
// handover API and the operator listener) the same way: the address is
// bound before anything is served, so a bind error reaches the caller;
// requests are served in the background; Stop lets those in flight finish
// within its context. It also says which addresses count as loopback, the
// only ones either listener may serve plain HTTP on, and reads the bearer
// credential both take.
package httpserve

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Options configure a Listener.
type Options struct {
	// Name prefixes errors and logs ("api", "admin").
	Name string
	// Addr is host:port ("127.0.0.1:0" in tests).
	Addr    string
	Handler http.Handler
	// TLS serves HTTPS; nil: plain HTTP.
	TLS *tls.Config
	// ReadTimeout, WriteTimeout and IdleTimeout bound a connection
	// (http.Server's; zero: none, as there).
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes bounds request headers (0: net/http's 1 MB).
	MaxHeaderBytes int
	Log            *slog.Logger
}

// Listener is one started HTTP listener.
type Listener struct {
	srv    *http.Server
	addr   net.Addr
	tls    bool
	served chan struct{}

	mu      sync.Mutex
	stopped bool
	err     error
}

// Start binds opts.Addr and serves it in the background. Requests' contexts
// carry ctx's values, never its cancellation (Stop ends them).
func Start(ctx context.Context, opts Options) (*Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", opts.Name, opts.Addr, err)
	}
	if opts.TLS != nil {
		ln = tls.NewListener(ln, opts.TLS)
	}
	l := &Listener{addr: ln.Addr(), tls: opts.TLS != nil, served: make(chan struct{})}
	l.srv = &http.Server{
		Handler:           opts.Handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       opts.ReadTimeout,
		WriteTimeout:      opts.WriteTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(opts.Log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	go func() {
		defer close(l.served)
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			opts.Log.Error(opts.Name+" listener stopped", "error", err)
		}
	}()
	return l, nil
}

// Stop closes the listener, letting requests in flight finish within ctx
// (then cutting them). It is idempotent.
func (l *Listener) Stop(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return l.err
	}
	l.stopped = true
	if l.err = l.srv.Shutdown(ctx); l.err != nil {
		_ = l.srv.Close()
	}
	<-l.served
	return l.err
}

// Addr is the bound address.
func (l *Listener) Addr() string { return l.addr.String() }

// URL is the listener's base URL ("https://127.0.0.1:8443").
func (l *Listener) URL() string {
	if l.tls {
		return "https://" + l.Addr()
	}
	return "http://" + l.Addr()
}

// Slot is where a server keeps its listener: started at most once, never
// again after Stop, and asked for its address at any time. The API and the
// operator listener each embed one.
type Slot struct {
	mu      sync.Mutex
	ln      *Listener // nil before Start
	stopped bool
}

// Start starts a listener with opts unless the slot holds one already;
// started says whether it did. After Stop it is an error.
func (s *Slot) Start(ctx context.Context, opts Options) (started bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false, fmt.Errorf("%s: stopped", opts.Name)
	}
	if s.ln != nil {
		return false, nil
	}
	if s.ln, err = Start(ctx, opts); err != nil {
		return false, err
	}
	return true, nil
}

// Stop stops the listener, letting requests in flight finish within ctx.
// It is idempotent, and safe before Start.
func (s *Slot) Stop(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	ln := s.ln
	s.mu.Unlock()
	if ln == nil {
		return nil
	}
	return ln.Stop(ctx)
}

// Addr is the bound address, or "" before Start.
func (s *Slot) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr()
}

// URL is the listener's base URL ("https://127.0.0.1:8443"), or "" before
// Start.
func (s *Slot) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.URL()
}

// Loopback tells whether addr (host:port, or a bare host) is reachable
// from this machine only: localhost or a loopback IP.
func Loopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// BearerSum returns the SHA-256 of a request's bearer credential, which
// both listeners compare in constant time with the sums they hold (neither
// keeps a key itself); false when the request carries none. The scheme is
// case-insensitive (RFC 6750 section 2.1, RFC 9110 section 11.1) and white
// space around the credential is ignored.
func BearerSum(r *http.Request) ([sha256.Size]byte, bool) {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	cred = strings.TrimSpace(cred)
	if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256([]byte(cred)), true
}

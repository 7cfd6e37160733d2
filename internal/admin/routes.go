package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	runtimepprof "runtime/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sipwake/sipwake/internal/httpjson"
	"github.com/sipwake/sipwake/internal/push/pn"
	"github.com/sipwake/sipwake/internal/relay"
)

// probeTimeout bounds a readiness check, so a stuck store answers 503
// rather than hanging the prober.
const probeTimeout = 2 * time.Second

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{
		ErrorLog: slog2promLogger{s}, ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "alive"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)

	mux.Handle("GET /admin/counts", s.authed(s.counts))
	mux.Handle("GET /admin/aors/{aor}", s.authed(s.export))
	mux.Handle("POST /admin/aors/{aor}/erase", s.authed(s.erase))
	mux.Handle("DELETE /admin/aors/{aor}", s.authed(s.erase))
	mux.Handle("GET /admin/aors/{aor}/trace", s.authed(s.traceState))
	mux.Handle("POST /admin/aors/{aor}/trace", s.authed(s.traceOn))
	mux.Handle("DELETE /admin/aors/{aor}/trace", s.authed(s.traceOff))
	mux.Handle("POST /admin/compact", s.authed(s.compact))
	mux.Handle("GET /admin/keys", s.authed(s.keys))
	// The running process' profiles, for `go tool pprof`: stacks and
	// allocation sites, no user data.
	mux.Handle("GET /admin/pprof/profile", s.authed(pprof.Profile))
	mux.Handle("GET /admin/pprof/trace", s.authed(pprof.Trace))
	mux.Handle("GET /admin/pprof/{name}", s.authed(s.profile))
	return mux
}

// profile serves a named runtime profile (heap, allocs, goroutine, mutex,
// block, threadcreate).
func (s *Server) profile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if runtimepprof.Lookup(name) == nil {
		httpjson.Error(w, http.StatusNotFound, fmt.Sprintf("no profile %q: heap, allocs, goroutine, mutex, block, threadcreate, profile (CPU, ?seconds=N) or trace", name))
		return
	}
	pprof.Handler(name).ServeHTTP(w, r)
}

// authed guards the /admin/ API: off without a configured token, 401
// without the right one. Every admin action is logged (masked).
func (s *Server) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token == nil {
			httpjson.Error(w, http.StatusForbidden, "admin API is off: set admin.token_sha256 (sipwake admin token prints one)")
			return
		}
		if !s.authorized(r) {
			s.log.Warn("admin: unauthorized request", "remote", r.RemoteAddr, "method", r.Method, "path", maskedPath(r))
			w.Header().Set("WWW-Authenticate", `Bearer realm="sipwake admin"`)
			httpjson.Error(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		h(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
	defer cancel()
	if why := s.opts.Backend.Ready(ctx); len(why) > 0 {
		httpjson.Write(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "why": why})
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"ready": true})
}

func (s *Server) counts(w http.ResponseWriter, r *http.Request) {
	c, err := s.opts.Backend.Counts(r.Context())
	if err != nil {
		s.fail(w, "counts", err)
		return
	}
	httpjson.Write(w, http.StatusOK, c)
}

// ExportedRecord is what GET /admin/aors/{aor} shows of one record: what
// sipwake holds, without the push token, passwords or digests.
type ExportedRecord struct {
	Kind      string `json:"kind"` // sip (RFC 8599 registration) or handover
	Provider  string `json:"provider"`
	PushParam string `json:"push_param"`
	Token     string `json:"token"` // last 6 characters only
	Contact   string `json:"contact"`
	Transport string `json:"transport,omitempty"`
	Source    string `json:"source,omitempty"`
	Instance  bool   `json:"instance_id_held"`
	// WakeBeforeLapse: sipwake wakes the device to refresh its upstream
	// registration (it has a token for that); RefreshesItself: its
	// Contact said +sip.pnsreg.
	WakeBeforeLapse bool      `json:"wake_before_lapse"`
	RefreshesItself bool      `json:"refreshes_itself"`
	UpdatedAt       time.Time `json:"updated_at"`
	ExpiresAt       time.Time `json:"expires_at"`
	Upstream        struct {
		Mode         string    `json:"mode"` // path or contact
		Expires      int       `json:"expires_s"`
		RegisteredAt time.Time `json:"registered_at,omitzero"`
		LapsesAt     time.Time `json:"lapses_at,omitzero"`
	} `json:"upstream"`
	Account *ExportedAccount `json:"account,omitempty"`
}

// ExportedAccount is a handed-over account without its secret.
type ExportedAccount struct {
	ID         string `json:"id"`
	App        string `json:"app"`
	Registrar  string `json:"registrar"`
	Transport  string `json:"transport"`
	Username   string `json:"username"`
	Credential string `json:"credential"` // password or ha1: which kind is held, never its value
}

// Export turns bindings into their exported, secret-free form.
func Export(bs []relay.Binding) []ExportedRecord {
	out := make([]ExportedRecord, 0, len(bs))
	for _, b := range bs {
		e := ExportedRecord{
			Kind: "sip", Provider: b.Device.Provider, PushParam: b.Device.Param, Token: b.Device.MaskedToken(),
			Contact: relay.StripPushParams(b.Contact), Transport: b.Flow.Transport, Source: b.Flow.Source,
			Instance: b.Instance != "", WakeBeforeLapse: b.Account == nil && b.Wakeable(pn.KindRegister), RefreshesItself: b.PNSReg,
			UpdatedAt: b.UpdatedAt, ExpiresAt: b.ExpiresAt,
		}
		e.Upstream.Mode = "contact"
		if b.Upstream.Path {
			e.Upstream.Mode = "path"
		}
		e.Upstream.Expires = b.Upstream.Expires
		if !b.Upstream.RegisteredAt.IsZero() {
			e.Upstream.RegisteredAt = b.Upstream.RegisteredAt
			e.Upstream.LapsesAt = b.Upstream.LapsesAt()
		}
		if a := b.Account; a != nil {
			e.Kind = "handover"
			cred := "none"
			switch {
			case a.HA1 != "":
				cred = "ha1"
			case a.Password != "":
				cred = "password"
			}
			e.Account = &ExportedAccount{ID: a.ID, App: a.App, Registrar: a.Registrar, Transport: a.Transport, Username: a.Username, Credential: cred}
		}
		out = append(out, e)
	}
	return out
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	aor, ok := aorOf(w, r)
	if !ok {
		return
	}
	bs, err := s.opts.Backend.Bindings(r.Context(), aor)
	if err != nil {
		s.fail(w, "export", err)
		return
	}
	s.log.Info("admin: export", "aor", aor, "records", len(bs), "remote", r.RemoteAddr)
	httpjson.Write(w, http.StatusOK, map[string]any{"aor": string(aor), "records": Export(bs)})
}

func (s *Server) erase(w http.ResponseWriter, r *http.Request) {
	aor, ok := aorOf(w, r)
	if !ok {
		return
	}
	n, err := s.opts.Backend.EraseAOR(r.Context(), aor)
	if err != nil {
		s.fail(w, "erase", err)
		return
	}
	s.opts.Traces.Off(aor)
	s.log.Info("admin: erasure request", "aor", aor, "erased", n, "remote", r.RemoteAddr)
	httpjson.Write(w, http.StatusOK, map[string]any{"aor": string(aor), "erased": n,
		"note": "freed pages are compacted by the sweeper within store.compact_interval; POST /admin/compact to do it now"})
}

func (s *Server) traceState(w http.ResponseWriter, r *http.Request) {
	aor, ok := aorOf(w, r)
	if !ok {
		return
	}
	httpjson.Write(w, http.StatusOK, map[string]any{"aor": string(aor), "active": s.opts.Traces.Active(aor)})
}

func (s *Server) traceOn(w http.ResponseWriter, r *http.Request) {
	aor, ok := aorOf(w, r)
	if !ok {
		return
	}
	d := DefaultTrace
	if v := r.URL.Query().Get("for"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("for=%q: want a positive duration such as 30m or 2h", v))
			return
		}
	}
	if d > s.opts.MaxTrace {
		httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("for=%s: longer than admin.max_trace (%s)", d, s.opts.MaxTrace))
		return
	}
	until := s.opts.Traces.On(aor, d)
	s.log.Info("admin: trace on", "aor", aor, "for", d, "until", until, "remote", r.RemoteAddr)
	httpjson.Write(w, http.StatusOK, map[string]any{"aor": string(aor), "active": true, "until": until})
}

func (s *Server) traceOff(w http.ResponseWriter, r *http.Request) {
	aor, ok := aorOf(w, r)
	if !ok {
		return
	}
	s.opts.Traces.Off(aor)
	s.log.Info("admin: trace off", "aor", aor, "remote", r.RemoteAddr)
	httpjson.Write(w, http.StatusOK, map[string]any{"aor": string(aor), "active": false})
}

func (s *Server) compact(w http.ResponseWriter, r *http.Request) {
	c, err := s.opts.Backend.Compact(r.Context())
	if err != nil {
		s.fail(w, "compact", err)
		return
	}
	s.log.Info("admin: compacted", "bytes_before", c.BytesBefore, "bytes_after", c.BytesAfter, "remote", r.RemoteAddr)
	httpjson.Write(w, http.StatusOK, c)
}

func (s *Server) keys(w http.ResponseWriter, r *http.Request) {
	k, err := s.opts.Backend.Keys(r.Context())
	if err != nil {
		s.fail(w, "keys", err)
		return
	}
	httpjson.Write(w, http.StatusOK, k)
}

func (s *Server) fail(w http.ResponseWriter, op string, err error) {
	s.log.Error("admin: "+op+" failed", "error", err)
	httpjson.Error(w, http.StatusInternalServerError, op+" failed; see the log")
}

// ParseAOR accepts "user@domain", with or without a sip:/sips: scheme or
// URI parameters, and returns it in the relay's canonical form (domain
// lower-cased).
func ParseAOR(s string) (relay.AOR, error) {
	s = strings.TrimSpace(s)
	for _, scheme := range []string{"sip:", "sips:"} {
		if len(s) > len(scheme) && strings.EqualFold(s[:len(scheme)], scheme) {
			s = s[len(scheme):]
		}
	}
	s, _, _ = strings.Cut(s, ";")
	user, host, ok := strings.Cut(s, "@")
	if !ok || user == "" || host == "" || strings.ContainsAny(s, " <>\"/") || strings.Contains(host, "@") {
		return "", fmt.Errorf("%q is not an AOR (want user@domain)", s)
	}
	return relay.AOR(user + "@" + relay.AORHost(host)), nil
}

func aorOf(w http.ResponseWriter, r *http.Request) (relay.AOR, bool) {
	aor, err := ParseAOR(r.PathValue("aor"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return aor, true
}

// maskedPath keeps an AOR in the URL out of the log of a refused request.
func maskedPath(r *http.Request) string {
	if v := r.PathValue("aor"); v != "" {
		if aor, err := ParseAOR(v); err == nil {
			return strings.Replace(r.URL.Path, v, aor.Masked(), 1)
		}
		return "/admin/aors/<invalid>"
	}
	return r.URL.Path
}

// slog2promLogger routes promhttp's errors to the server's logger.
type slog2promLogger struct{ s *Server }

func (l slog2promLogger) Println(v ...any) {
	l.s.log.Error("admin: metrics", "error", fmt.Sprint(v...))
}

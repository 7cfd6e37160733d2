package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/internal/admin"
	"github.com/sipwake/sipwake/internal/relay"
)

const token = "test-admin-token"

type fakeBackend struct {
	mu     sync.Mutex
	held   map[relay.AOR][]relay.Binding
	why    []string
	erased []relay.AOR
}

func (f *fakeBackend) Counts(context.Context) (admin.Counts, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, bs := range f.held {
		n += len(bs)
	}
	return admin.Counts{Records: n}, nil
}

func (f *fakeBackend) Bindings(_ context.Context, aor relay.AOR) ([]relay.Binding, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[aor], nil
}

func (f *fakeBackend) EraseAOR(_ context.Context, aor relay.AOR) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.held[aor])
	delete(f.held, aor)
	f.erased = append(f.erased, aor)
	return n, nil
}

func (f *fakeBackend) Compact(context.Context) (admin.Compaction, error) {
	return admin.Compaction{BytesBefore: 10, BytesAfter: 5}, nil
}

func (f *fakeBackend) Keys(context.Context) (admin.Keys, error) {
	return admin.Keys{Active: "k2", Usage: map[string]int{"k1": 0, "k2": 3}, Retirable: []string{"k1"}}, nil
}

func (f *fakeBackend) Ready(context.Context) []string { return f.why }

type fakeTraces struct {
	mu  sync.Mutex
	now time.Time
	on  map[relay.AOR]time.Time
}

func (t *fakeTraces) On(aor relay.AOR, d time.Duration) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.on[aor] = t.now.Add(d)
	return t.on[aor]
}
func (t *fakeTraces) Off(aor relay.AOR) { t.mu.Lock(); delete(t.on, aor); t.mu.Unlock() }
func (t *fakeTraces) Active(aor relay.AOR) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.on[aor]
	return ok
}

func newServer(t *testing.T, tokenHash string) (*httptest.Server, *fakeBackend, *fakeTraces) {
	t.Helper()
	tok := "0123456789ab0123456789ab0123456789ab0123456789ab0123456789abcdef"
	b := &fakeBackend{held: map[relay.AOR][]relay.Binding{
		"alice@example.test": {{
			AOR:      "alice@example.test",
			Device:   relay.Device{Provider: "apns", Token: tok, Param: "TEAM.org.example.voip"},
			Contact:  "sip:alice@192.0.2.7:5070;pn-provider=apns;pn-prid=" + tok + ";transport=udp",
			Upstream: relay.UpstreamState{Path: true, Expires: 600, RegisteredAt: time.Unix(1700000000, 0)},
			Account:  &relay.Account{ID: "a1", App: "ios", Username: "alice", Password: "hunter2-secret", Registrar: "sip:reg.example.test"},
		}},
	}}
	tr := &fakeTraces{now: time.Unix(1700000000, 0), on: map[relay.AOR]time.Time{}}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sipwake_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Inc()
	s, err := admin.New(admin.Options{Listen: "127.0.0.1:0", TokenSHA256: tokenHash, MaxTrace: 24 * time.Hour,
		Gatherer: reg, Backend: b, Traces: tr})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return hs, b, tr
}

func do(t *testing.T, method, url, bearer string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func TestRefusesPlainHTTPOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:9060", ":9060", "192.0.2.1:9060", "[::]:9060"} {
		_, err := admin.New(admin.Options{Listen: addr, Gatherer: prometheus.NewRegistry(), Backend: &fakeBackend{}, Traces: &fakeTraces{}})
		if err == nil || !strings.Contains(err.Error(), "tls_cert_file") {
			t.Errorf("%s: plain HTTP accepted (%v)", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:9060", "[::1]:9060", "localhost:9060"} {
		if _, err := admin.New(admin.Options{Listen: addr, Gatherer: prometheus.NewRegistry(), Backend: &fakeBackend{}, Traces: &fakeTraces{}}); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

func TestProbesAndMetricsNeedNoToken(t *testing.T) {
	hs, b, _ := newServer(t, admin.HashToken(token))
	if code, _ := do(t, "GET", hs.URL+"/healthz", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, body := do(t, "GET", hs.URL+"/metrics", ""); code != 200 || !strings.Contains(body, "sipwake_test_total 1") {
		t.Fatalf("metrics %d %s", code, body)
	}
	if code, _ := do(t, "GET", hs.URL+"/readyz", ""); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	b.why = []string{"push: no apps configured (push.apps): nobody can be woken"}
	code, body := do(t, "GET", hs.URL+"/readyz", "")
	if code != 503 || !strings.Contains(body, "no apps configured") {
		t.Fatalf("not ready: %d %s", code, body)
	}
}

func TestAdminAuth(t *testing.T) {
	hs, _, _ := newServer(t, admin.HashToken(token))
	for _, bearer := range []string{"", "wrong", token + "x"} {
		if code, _ := do(t, "GET", hs.URL+"/admin/counts", bearer); code != http.StatusUnauthorized {
			t.Errorf("bearer %q: %d, want 401", bearer, code)
		}
	}
	if code, body := do(t, "GET", hs.URL+"/admin/counts", token); code != 200 || !strings.Contains(body, `"records": 1`) {
		t.Fatalf("counts %d %s", code, body)
	}
	off, _, _ := newServer(t, "")
	if code, body := do(t, "GET", off.URL+"/admin/counts", token); code != http.StatusForbidden || !strings.Contains(body, "admin.token_sha256") {
		t.Fatalf("admin without configured token: %d %s", code, body)
	}
}

func TestExportHoldsNoSecrets(t *testing.T) {
	hs, _, _ := newServer(t, admin.HashToken(token))
	code, body := do(t, "GET", hs.URL+"/admin/aors/sip:alice@EXAMPLE.test", token)
	if code != 200 {
		t.Fatalf("export %d %s", code, body)
	}
	for _, secret := range []string{"0123456789ab0123", "hunter2", "pn-prid"} {
		if strings.Contains(body, secret) {
			t.Fatalf("export carries %q:\n%s", secret, body)
		}
	}
	var out struct {
		AOR     string                 `json:"aor"`
		Records []admin.ExportedRecord `json:"records"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	r := out.Records[0]
	if out.AOR != "alice@example.test" || r.Token != "***abcdef" || r.Kind != "handover" || r.Account.Credential != "password" ||
		r.Upstream.Mode != "path" || r.Upstream.LapsesAt.IsZero() || r.Contact != "sip:alice@192.0.2.7:5070;transport=udp" {
		t.Fatalf("export: %+v", out)
	}
	if code, _ := do(t, "GET", hs.URL+"/admin/aors/not-an-aor", token); code != 400 {
		t.Fatalf("bad AOR: %d", code)
	}
}

func TestEraseAndTraceBounds(t *testing.T) {
	hs, b, tr := newServer(t, admin.HashToken(token))
	code, body := do(t, "POST", hs.URL+"/admin/aors/alice@example.test/trace", token)
	if code != 200 || !tr.Active("alice@example.test") || tr.on["alice@example.test"] != tr.now.Add(time.Hour) {
		t.Fatalf("default trace: %d %s", code, body)
	}
	if code, _ := do(t, "POST", hs.URL+"/admin/aors/alice@example.test/trace?for=25h", token); code != 400 {
		t.Fatalf("trace beyond max_trace: %d", code)
	}
	if code, _ := do(t, "POST", hs.URL+"/admin/aors/alice@example.test/trace?for=-1m", token); code != 400 {
		t.Fatalf("negative trace: %d", code)
	}
	if code, _ := do(t, "POST", hs.URL+"/admin/aors/alice@example.test/trace?for=2h", token); code != 200 || tr.on["alice@example.test"] != tr.now.Add(2*time.Hour) {
		t.Fatalf("2h trace: %d", code)
	}
	if code, _ := do(t, "DELETE", hs.URL+"/admin/aors/alice@example.test/trace", token); code != 200 || tr.Active("alice@example.test") {
		t.Fatalf("trace off: %d", code)
	}
	do(t, "POST", hs.URL+"/admin/aors/alice@example.test/trace", token)
	code, body = do(t, "POST", hs.URL+"/admin/aors/alice@example.test/erase", token)
	if code != 200 || !strings.Contains(body, `"erased": 1`) || len(b.erased) != 1 {
		t.Fatalf("erase: %d %s", code, body)
	}
	if tr.Active("alice@example.test") {
		t.Fatal("an erased AOR is still traced")
	}
	if code, body := do(t, "GET", hs.URL+"/admin/keys", token); code != 200 || !strings.Contains(body, `"retirable": [`) {
		t.Fatalf("keys: %d %s", code, body)
	}
	if code, body := do(t, "POST", hs.URL+"/admin/compact", token); code != 200 || !strings.Contains(body, "bytes_after") {
		t.Fatalf("compact: %d %s", code, body)
	}
}

func TestParseAOR(t *testing.T) {
	for in, want := range map[string]relay.AOR{
		"alice@example.test":                  "alice@example.test",
		"sip:alice@Example.TEST":              "alice@example.test",
		"sips:+15550100@example.test;user=ph": "+15550100@example.test",
		"sip:alice@[2001:DB8:0::1]":           "alice@[2001:db8::1]",
		"alice@[2001:db8::1];transport=tcp":   "alice@[2001:db8::1]",
		"sip:alice@192.0.2.1":                 "alice@192.0.2.1",
	} {
		if got, err := admin.ParseAOR(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "alice", "@example.test", "alice@", "a b@example.test"} {
		if _, err := admin.ParseAOR(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The export shows an IPv6 device's contact and flow as it shows an IPv4
// one's: the address in full (it is the subject's own data), the push
// parameters gone and the token masked.
func TestExportTreatsIPv6AsIPv4(t *testing.T) {
	for _, c := range []struct{ contact, source string }{
		{"sip:alice@192.0.2.7:5070;transport=udp", "192.0.2.7:5070"},
		{"sip:alice@[2001:db8::17]:50233;transport=udp", "[2001:db8::17]:50233"},
	} {
		b := relay.Binding{
			AOR:     "alice@example.test",
			Device:  relay.Device{Provider: "apns", Token: "0123456789abcdef", Param: "T.org.example.app.voip"},
			Contact: c.contact + ";pn-provider=apns;pn-prid=0123456789abcdef",
			Flow:    relay.Flow{Transport: "udp", Source: c.source},
		}
		e := admin.Export([]relay.Binding{b})[0]
		if e.Contact != c.contact || e.Source != c.source || e.Token != "***abcdef" {
			t.Errorf("export of %s: contact %q source %q token %q", c.source, e.Contact, e.Source, e.Token)
		}
	}
}

// TestProfiles: the process' profiles behind the bearer token, in pprof's
// gzipped protobuf form; an unknown name is a clear 404.
func TestProfiles(t *testing.T) {
	hs, _, _ := newServer(t, admin.HashToken(token))
	if code, _ := do(t, "GET", hs.URL+"/admin/pprof/heap", ""); code != http.StatusUnauthorized {
		t.Fatalf("heap profile without a token: %d, want 401", code)
	}
	paths := []string{"heap", "goroutine", "profile?seconds=1"}
	if testing.Short() {
		paths = paths[:2] // a CPU profile takes a second at the least
	}
	for _, path := range paths {
		code, body := do(t, "GET", hs.URL+"/admin/pprof/"+path, token)
		if code != 200 || !strings.HasPrefix(body, "\x1f\x8b") {
			t.Fatalf("%s: %d, %d bytes; want 200 and a gzipped profile", path, code, len(body))
		}
	}
	if code, body := do(t, "GET", hs.URL+"/admin/pprof/nosuch", token); code != http.StatusNotFound || !strings.Contains(body, "heap, allocs") {
		t.Fatalf("unknown profile: %d %s", code, body)
	}
}

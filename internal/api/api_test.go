package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
)

const (
	key1 = "app1-key-0123456789abcdef0123456789"
	key2 = "app2-key-0123456789abcdef0123456789"
	// token is the full push token; only its last 6 may ever be shown.
	token = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"
)

type fixture struct {
	env *handovertest.Env
	srv *api.Server
	url string
}

func start(t *testing.T, mutate func(*api.Config)) *fixture {
	t.Helper()
	env := handovertest.Start(t)
	k := env.Registrations(t, handover.Options{})
	cfg := api.Config{
		Listen:    "127.0.0.1:0",
		Keys:      []api.Key{{App: "app1", SHA256: api.HashKey(key1)}, {App: "app2", SHA256: api.HashKey(key2)}},
		RateLimit: api.RateLimit{PerKey: 1000, PerKeyBurst: 1000, PerSource: 1000, PerSourceBurst: 1000},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := api.New(cfg, env.Relay, k, env.Log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	return &fixture{env: env, srv: srv, url: srv.URL()}
}

func (f *fixture) account(user, password string) map[string]any {
	return map[string]any{
		"aor":       user + "@" + handovertest.Domain,
		"registrar": "sip:" + f.env.Kamailio.Addr + ";transport=udp",
		"password":  password,
		"expires":   60,
		"push":      map[string]any{"provider": "apns", "token": token, "param": "TEAMID.org.example.app.voip"},
		"ttl_days":  4,
	}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("reply %d is not JSON: %q", r.status, r.body)
	}
	return m
}

func (r reply) errorText(t *testing.T) string {
	t.Helper()
	s, _ := r.json(t)["error"].(string)
	return s
}

func do(t *testing.T, method, url, key, contentType string, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, header: res.Header, body: string(b)}
}

func (f *fixture) put(t *testing.T, key, id string, body any) reply {
	t.Helper()
	b, _ := json.Marshal(body)
	return do(t, http.MethodPut, f.url+"/v1/accounts/"+id, key, "application/json", bytes.NewReader(b))
}

func (f *fixture) get(t *testing.T, key, id string) reply {
	return do(t, http.MethodGet, f.url+"/v1/accounts/"+id, key, "", nil)
}

func (f *fixture) del(t *testing.T, key, id string) reply {
	return do(t, http.MethodDelete, f.url+"/v1/accounts/"+id, key, "", nil)
}

func (f *fixture) records(t *testing.T) int {
	t.Helper()
	n, err := f.env.Store.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func hasContact(f *fixture, t *testing.T, user string) bool {
	for _, b := range f.env.Locations(t, user) {
		if strings.Contains(b.Contact, "sw-") {
			return true
		}
	}
	return false
}

func TestAccountLifecycle(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	pass := handovertest.Users()["alice"]

	r := f.put(t, key1, "phone-1", f.account("alice", pass))
	if r.status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	if !hasContact(f, t, "alice") {
		t.Fatalf("registrar has no sw- contact for alice: %+v", f.env.Locations(t, "alice"))
	}
	id := f.env.Relay.AccountID("app1", "phone-1")
	if bs := f.env.Locations(t, "alice"); len(bs) != 1 || !strings.Contains(bs[0].Contact, "sw-"+id.String()+"@"+f.env.ContactHost) {
		t.Fatalf("registered contact %+v, want sw-%s@%s", bs, id, f.env.ContactHost)
	}

	disk, err := os.ReadFile(f.env.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{"phone-1", pass, token, "alice@example.test", "app1"} {
		if bytes.Contains(disk, []byte(plain)) {
			t.Fatalf("%q in plaintext on disk", plain)
		}
	}

	r = f.get(t, key1, "phone-1")
	if r.status != http.StatusOK {
		t.Fatalf("GET: %d %s", r.status, r.body)
	}
	for _, secret := range []string{pass, token, token[:20], handovertest.HA1("alice", pass)} {
		if strings.Contains(r.body, secret) {
			t.Fatalf("GET shows a secret (%q): %s", secret, r.body)
		}
	}
	v := r.json(t)
	push := v["push"].(map[string]any)
	reg := v["registration"].(map[string]any)
	if v["aor"] != "alice@example.test" || push["token_suffix"] != token[len(token)-6:] || reg["state"] != "registered" ||
		v["credential"] != "password" || reg["granted_expires"] != float64(60) {
		t.Fatalf("GET view: %s", r.body)
	}
	expiresAt, _ := time.Parse(time.RFC3339, v["expires_at"].(string))
	if d := time.Until(expiresAt); d < 4*24*time.Hour-time.Minute || d > 4*24*time.Hour {
		t.Fatalf("ttl_days 4 gave expires_at in %v", d)
	}

	// Re-post: refreshed, 200, TTL restarts (ttl_days 6 now).
	acc := f.account("alice", pass)
	acc["ttl_days"] = 6
	if r := f.put(t, key1, "phone-1", acc); r.status != http.StatusOK {
		t.Fatalf("re-PUT: %d %s", r.status, r.body)
	}
	v = f.get(t, key1, "phone-1").json(t)
	expiresAt, _ = time.Parse(time.RFC3339, v["expires_at"].(string))
	if d := time.Until(expiresAt); d < 6*24*time.Hour-time.Minute {
		t.Fatalf("re-PUT did not restart the TTL: expires in %v", d)
	}

	// Another app can neither see nor delete it.
	if r := f.get(t, key2, "phone-1"); r.status != http.StatusNotFound {
		t.Fatalf("app2 GET: %d %s", r.status, r.body)
	}
	if r := f.del(t, key2, "phone-1"); r.status != http.StatusNotFound {
		t.Fatalf("app2 DELETE: %d %s", r.status, r.body)
	}
	if !hasContact(f, t, "alice") || f.records(t) != 1 {
		t.Fatal("app2's DELETE touched app1's account")
	}

	start := time.Now()
	if r := f.del(t, key1, "phone-1"); r.status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	if hasContact(f, t, "alice") {
		t.Fatal("still registered upstream after DELETE")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("DELETE took %v", d)
	}
	if n := f.records(t); n != 0 {
		t.Fatalf("%d records after DELETE", n)
	}
	if r := f.get(t, key1, "phone-1"); r.status != http.StatusNotFound {
		t.Fatalf("GET after DELETE: %d", r.status)
	}
	if r := f.del(t, key1, "phone-1"); r.status != http.StatusNotFound {
		t.Fatalf("repeat DELETE: %d", r.status)
	}
}

func TestHA1AccountNeverShown(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	acc := f.account("carol", "")
	delete(acc, "password")
	ha1 := handovertest.HA1("carol", handovertest.Users()["carol"])
	acc["ha1"] = strings.ToUpper(ha1)
	if r := f.put(t, key1, "c", acc); r.status != http.StatusCreated {
		t.Fatalf("PUT with ha1: %d %s", r.status, r.body)
	}
	r := f.get(t, key1, "c")
	if strings.Contains(strings.ToLower(r.body), ha1) || strings.Contains(r.body, token) || r.json(t)["credential"] != "ha1" {
		t.Fatalf("GET: %s", r.body)
	}
}

func TestRegistrarRefusalStoresNothing(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	r := f.put(t, key1, "phone-1", f.account("alice", "wrong-password"))
	if r.status != http.StatusUnprocessableEntity || r.errorText(t) != "registrar rejected the credentials (401 Unauthorized)" {
		t.Fatalf("wrong password: %d %s", r.status, r.body)
	}
	acc := f.account("alice", handovertest.Users()["bob"])
	acc["username"] = "bob"
	r = f.put(t, key1, "phone-1", acc)
	if r.status != http.StatusUnprocessableEntity || r.errorText(t) != "registrar rejected the credentials (403 Forbidden Auth ID)" {
		t.Fatalf("foreign auth user: %d %s", r.status, r.body)
	}
	acc = f.account("alice", handovertest.Users()["alice"])
	acc["registrar"] = net.JoinHostPort(f.env.Kamailio.Addr[:strings.LastIndex(f.env.Kamailio.Addr, ":")], "5999")
	r = f.put(t, key1, "phone-1", acc)
	if r.status != http.StatusGatewayTimeout && r.status != http.StatusBadGateway {
		t.Fatalf("silent registrar: %d %s", r.status, r.body)
	}
	if n := f.records(t); n != 0 {
		t.Fatalf("%d records stored after refusals", n)
	}
	if bs := f.env.Locations(t, "alice"); len(bs) != 0 {
		t.Fatalf("registrar holds %+v", bs)
	}
	if r := f.get(t, key1, "phone-1"); r.status != http.StatusNotFound {
		t.Fatalf("GET after refusals: %d", r.status)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	f := start(t, nil)
	good, _ := json.Marshal(f.account("alice", handovertest.Users()["alice"]))
	url := f.url + "/v1/accounts/phone-1"
	with := func(edit func(m map[string]any)) string {
		m := f.account("alice", handovertest.Users()["alice"])
		edit(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	cases := []struct {
		name, method, url, key, ctype, body string
		status                              int
		want                                string
	}{
		{"no key", "PUT", url, "", "application/json", string(good), 401, "missing or unknown API key"},
		{"unknown key", "PUT", url, "nope", "application/json", string(good), 401, "missing or unknown API key"},
		{"text body", "PUT", url, key1, "text/plain", string(good), 415, "Content-Type must be application/json"},
		{"form body", "PUT", url, key1, "application/x-www-form-urlencoded", "aor=x", 415, "Content-Type must be application/json"},
		{"no content type", "PUT", url, key1, "", string(good), 415, "Content-Type must be application/json"},
		{"huge body", "PUT", url, key1, "application/json", `{"aor":"` + strings.Repeat("a", 20000) + `"}`, 413, "body larger than 16384 bytes"},
		{"not JSON", "PUT", url, key1, "application/json", `{"aor": `, 400, "body is not a JSON object"},
		{"array", "PUT", url, key1, "application/json", `[1,2]`, 400, "body is not a JSON object"},
		{"unknown fields", "PUT", url, key1, "application/json; charset=utf-8",
			with(func(m map[string]any) { m["pasword"] = "x"; m["push"].(map[string]any)["topic"] = "y" }), 400,
			`unknown fields: "pasword", "push.topic"`},
		{"wrong type", "PUT", url, key1, "application/json", with(func(m map[string]any) { m["expires"] = "600" }), 400, `field "expires" must be int`},
		{"no credentials", "PUT", url, key1, "application/json", with(func(m map[string]any) { delete(m, "password") }), 422, "password or ha1 is required"},
		{"both credentials", "PUT", url, key1, "application/json", with(func(m map[string]any) { m["ha1"] = strings.Repeat("a", 32) }), 422, "send password or ha1, not both"},
		{"ttl too long", "PUT", url, key1, "application/json", with(func(m map[string]any) { m["ttl_days"] = 9 }), 422, "ttl_days: 9: want 3–6"},
		{"provider", "PUT", url, key1, "application/json", with(func(m map[string]any) { m["push"].(map[string]any)["provider"] = "webpush" }), 422, `push.provider "webpush": sipwake serves apns, fcm`},
		{"bad aor", "PUT", url, key1, "application/json", with(func(m map[string]any) { m["aor"] = "alice" }), 422, "aor: want user@domain"},
		{"bad transport", "PUT", url, key1, "application/json", with(func(m map[string]any) { m["transport"] = "sctp" }), 422, `transport "sctp"`},
		{"bad id", "PUT", f.url + "/v1/accounts/a%20b", key1, "application/json", string(good), 400, "account id"},
		{"wrong method", "POST", url, key1, "application/json", string(good), 405, ""},
		{"unknown path", "GET", f.url + "/v2/x", key1, "", "", 404, "no such resource"},
	}
	for _, c := range cases {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		r := do(t, c.method, c.url, c.key, c.ctype, body)
		if r.status != c.status || c.want != "" && !strings.Contains(r.errorText(t), c.want) {
			t.Errorf("%s: %d %q, want %d containing %q", c.name, r.status, strings.TrimSpace(r.body), c.status, c.want)
		}
		if strings.Contains(r.body, handovertest.Users()["alice"]) {
			t.Errorf("%s: reply echoes the password", c.name)
		}
	}
	if n := f.records(t); n != 0 {
		t.Fatalf("%d records stored by bad requests", n)
	}
	if bs := f.env.Locations(t, "alice"); len(bs) != 0 {
		t.Fatalf("bad requests registered upstream: %+v", bs)
	}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	f := start(t, func(c *api.Config) {
		c.RateLimit = api.RateLimit{PerKey: 0.001, PerKeyBurst: 3, PerSource: 0.001, PerSourceBurst: 5}
	})
	var got []int
	for range 3 {
		got = append(got, f.get(t, key1, "x").status)
	}
	r := f.get(t, key1, "x")
	got = append(got, r.status)
	if fmt.Sprint(got) != "[404 404 404 429]" || r.errorText(t) != "too many requests for this API key" {
		t.Fatalf("per key: %v %s", got, r.body)
	}
	// Another key has its own bucket, but the source's runs out.
	if r := f.get(t, key2, "x"); r.status != http.StatusNotFound {
		t.Fatalf("app2: %d", r.status)
	}
	r = f.get(t, key2, "x")
	if r.status != http.StatusTooManyRequests || r.errorText(t) != "too many requests from this address" || r.header.Get("Retry-After") == "" {
		t.Fatalf("per source: %d %s", r.status, r.body)
	}
}

func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	keys := []api.Key{{App: "app1", SHA256: api.HashKey(key1)}}
	for _, listen := range []string{"0.0.0.0:8443", ":8443", "192.0.2.1:8443", "[::]:8443", "sipwake.example.com:8443"} {
		_, err := api.New(api.Config{Listen: listen, Keys: keys}, nil, nil, handovertest.Logger(t), time.Now)
		if err == nil || !strings.Contains(err.Error(), "api.listen") || !strings.Contains(err.Error(), "plain HTTP is only allowed on loopback") {
			t.Errorf("listen %s without TLS: %v", listen, err)
		}
	}
	for _, listen := range []string{"127.0.0.1:0", "[::1]:0", "localhost:0"} {
		if errs := (api.Config{Listen: listen, Keys: keys}).Validate(); len(errs) != 0 {
			t.Errorf("listen %s: %v", listen, errs)
		}
	}
}

func TestConfigValidateNamesPaths(t *testing.T) {
	t.Parallel()
	cfg := api.Config{
		Listen:      "0.0.0.0:8443",
		TLSCertFile: "cert.pem",
		Keys: []api.Key{
			{App: "app1", SHA256: "my-plain-key"},
			{App: "app 2", SHA256: api.HashKey("a")},
			{App: "app1", SHA256: strings.ToUpper(api.HashKey("a"))},
		},
		DefaultTTLDays: 7,
	}
	var got []string
	for _, e := range cfg.Validate() {
		got = append(got, e.Error())
	}
	for _, want := range []string{
		"api.tls_cert_file: tls_cert_file and tls_key_file go together",
		"api.keys[0].sha256: want 64 hex digits",
		`api.keys[1].app: "app 2"`,
		`api.keys[2].app: "app1" repeats keys[0].app`,
		"api.keys[2].sha256: same key as keys[1]",
		"api.default_ttl_days: 7: want 3–6",
	} {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, want)
		}
		if !found {
			t.Errorf("missing %q in %q", want, got)
		}
	}
	if errs := (api.Config{Listen: "127.0.0.1:8080"}).Validate(); len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "api.keys:") {
		t.Errorf("no keys: %v", errs)
	}
	key, hash, err := api.GenerateKey()
	if err != nil || api.HashKey(key) != hash || len(hash) != 64 || len(key) < 40 {
		t.Errorf("GenerateKey: %q %q %v", key, hash, err)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	f := start(t, func(c *api.Config) {
		c.Listen = "127.0.0.1:0"
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	})
	if !strings.HasPrefix(f.url, "https://") {
		t.Fatalf("URL %s", f.url)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodGet, f.url+"/v1/accounts/x", nil)
	req.Header.Set("Authorization", "Bearer "+key1)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || res.TLS == nil || res.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("HTTPS GET: %d %+v", res.StatusCode, res.TLS)
	}

	// TLS 1.1 is refused.
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}}}
	if res, err := old.Get(f.url + "/v1/accounts/x"); err == nil {
		res.Body.Close()
		t.Fatal("TLS 1.1 accepted")
	}
	// Plain HTTP to the TLS port: a clear 400, nothing served.
	r := do(t, http.MethodPut, "http://"+f.srv.Addr()+"/v1/accounts/x", key1, "application/json", strings.NewReader("{}"))
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "HTTP request to an HTTPS server") {
		t.Fatalf("plain HTTP to TLS port: %d %q", r.status, r.body)
	}
	if f.records(t) != 0 {
		t.Fatal("stored something")
	}
}

func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sipwake test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

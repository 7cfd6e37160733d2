package app_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/admin"
	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sip"
	"github.com/sipwake/sipwake/internal/store"
)

const adminToken = "operator-test-token"

// withAdmin turns the operator listener on at 127.x.y.2:9060.
func withAdmin(t *testing.T) func(*config.Config) {
	return func(c *config.Config) {
		c.Admin.Listen = peertest.Addr(t, 2, 9060)
		c.Admin.TokenSHA256 = admin.HashToken(adminToken)
	}
}

// adminDo calls the operator listener with the admin token.
func (w *world) adminDo(method, path string) (int, string) {
	w.t.Helper()
	req, err := http.NewRequest(method, w.sw.AdminURL()+path, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// TestCallFlowMetricsAndLogsArePrivate runs registration and an answered
// call, then checks that the metrics moved, that no label and no log line
// carries the AOR, the number or the token, and that a trace switched on
// through the admin API (and only then) puts the full AOR in the log.
func TestCallFlowMetricsAndLogsArePrivate(t *testing.T) {
	w := newWorld(t, withAdmin(t))
	tok := w.fakes.APNs.VoIPToken(61)
	w.sleepingDevice("alice", tok, 5070)
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)

	code, body := w.adminDo("GET", "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`sipwake_sip_registers_total{outcome=`,
		`sipwake_calls_total{outcome=`,
		`sipwake_push_sent_total{outcome="delivered",provider="apns"}`,
		"sipwake_call_push_latency_seconds_count 1",
		"sipwake_store_records 1",
		"sipwake_bindings_stored_total",
		"sipwake_store_size_bytes",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	w.eachLabel(func(metric, name, v string) {
		if private(v, tok) {
			t.Errorf("metric %s label %s=%q is per user", metric, name, v)
		}
	})
	if code, body := w.adminDo("GET", "/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s", code, body)
	}

	logs := w.logs.String()
	for _, secret := range []string{tok, tok[:16], "alice@", "15550100", password} {
		if strings.Contains(logs, secret) {
			t.Errorf("untraced call flow logged %q", secret)
		}
	}
	if t.Failed() {
		return
	}

	// A trace on, from the admin API: the next call flow is logged in full.
	if code, body := w.adminDo("POST", "/admin/aors/alice@"+domain+"/trace?for=10m"); code != 200 {
		t.Fatalf("trace on: %d %s", code, body)
	}
	mark := len(w.logs.String())
	caller = w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 2)
	device = w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "traced caller", caller)
	mustSucceed(t, "traced device", device)
	traced := w.logs.String()[mark:]
	if !strings.Contains(traced, "alice@"+domain) || !strings.Contains(traced, "trace=true") {
		t.Fatalf("traced call flow lacks the full AOR:\n%s", traced)
	}
	// The registrar's challenge, relayed without a parse, is parsed for
	// the trace.
	if !strings.Contains(traced, "relayed as it came") || !strings.Contains(traced, "401 Unauthorized") {
		t.Errorf("traced re-registration lacks the relayed challenge:\n%s", traced)
	}
	if code, _ := w.adminDo("DELETE", "/admin/aors/alice@"+domain+"/trace"); code != 200 {
		t.Fatal("trace off failed")
	}
	mark = len(w.logs.String())
	w.sleepingDevice("alice", tok, 5070)
	if after := w.logs.String()[mark:]; strings.Contains(after, "alice@") || strings.Contains(after, tok) {
		t.Fatalf("trace off, yet logged:\n%s", after)
	}
}

// private tells whether a label value names a user.
func private(v, tok string) bool {
	return strings.Contains(v, "alice") || strings.Contains(v, "@") || strings.Contains(v, "1555") ||
		strings.Contains(v, tok[len(tok)-6:])
}

// TestTraceSwitchesItselfOff: a trace set through the admin API for 30m is
// gone once the clock has moved past it, without anyone switching it off.
func TestTraceSwitchesItselfOff(t *testing.T) {
	clock := &fakeClock{t: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	cfg := operatorConfig(t)
	a := startApp(t, cfg, app.WithClock(clock.now))
	aor := "sip:bob@" + domain
	if code, body := adminCall(t, a, "POST", "/admin/aors/"+aor+"/trace?for=30m"); code != 200 {
		t.Fatalf("trace on: %d %s", code, body)
	}
	if code, _ := adminCall(t, a, "POST", "/admin/aors/"+aor+"/trace?for=25h"); code != 400 {
		t.Fatalf("trace beyond admin.max_trace accepted: %d", code)
	}
	if !a.Relay().Traces().Active(relay.AOR("bob@" + domain)) {
		t.Fatal("trace not on")
	}
	if _, body := adminCall(t, a, "GET", "/admin/counts"); !strings.Contains(body, `"traces_on": 1`) {
		t.Fatalf("counts: %s", body)
	}
	clock.set(clock.now().Add(30*time.Minute + time.Second))
	if _, body := adminCall(t, a, "GET", "/admin/aors/"+aor+"/trace"); !strings.Contains(body, `"active": false`) {
		t.Fatalf("trace still on after it ran out: %s", body)
	}
	if _, body := adminCall(t, a, "GET", "/admin/counts"); !strings.Contains(body, `"traces_on": 0`) {
		t.Fatalf("counts after expiry: %s", body)
	}
}

// TestStopWithParkedCallEndsWithinBound: Stop (what SIGTERM runs) with a parked call
// answers it 503 when the drain bound runs out and returns soon after.
func TestStopWithParkedCallEndsWithinBound(t *testing.T) {
	w := newWorld(t, withAdmin(t), func(c *config.Config) {
		c.Calls.Wait = 30 * time.Second
		c.Shutdown.DrainTimeout = time.Second
	})
	tok := w.fakes.APNs.VoIPToken(62)
	// The push hangs, so the call stays parked until the drain ends it.
	// (A delivered push would add a background cancel push at the end; see
	// the report on relay.followUp racing relay.Drain.)
	w.fakes.APNs.Program(tok, pushtest.Behavior{Stall: true})
	w.sleepingDevice("alice", tok, 5070)
	// sipwake answers 503; Kamailio, a proxy, turns a 503 into 500 on the
	// way to the caller (RFC 3261 16.7).
	caller := w.call("alice", "caller_expect", map[string]string{"expect": "500"})
	waitFor(t, func() bool {
		_, body := w.adminDo("GET", "/admin/counts")
		return strings.Contains(body, `"calls_parked": 1`)
	}, "calls_parked 1 in /admin/counts")

	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Shutdown.DrainTimeout)
	defer cancel()
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- w.sw.Stop(ctx) }()
	// While draining, /readyz says so (a load balancer stops sending).
	waitFor(t, func() bool {
		code, body := w.adminDo("GET", "/readyz")
		return code == 503 && strings.Contains(body, "shutting down")
	}, "/readyz 503 during the drain")
	if err := <-stopped; err != nil {
		t.Fatalf("stop: %v", err)
	}
	if took := time.Since(start); took > w.cfg.Shutdown.DrainTimeout+3*time.Second {
		t.Fatalf("stop took %v with a drain bound of %v", took, w.cfg.Shutdown.DrainTimeout)
	}
	mustSucceed(t, "parked caller gets 503 (500 through the proxy)", caller)
}

// TestWrongKeyRefusesAndLeavesStoreUntouched: a restart with another key
// fails, says why, and changes neither the file nor the data dir.
func TestWrongKeyRefusesAndLeavesStoreUntouched(t *testing.T) {
	cfg := operatorConfig(t)
	a := startApp(t, cfg)
	putBindings(t, a, 3)
	stopApp(t, a)

	path := app.StorePath(cfg)
	before, dirBefore := fileHash(t, path), dirList(t, cfg.Store.DataDir)
	wrong := cfg
	wrong.Seal.Key = config.Secret(base64.StdEncoding.EncodeToString(store.NewKey()))
	_, err := app.New(wrong, discard())
	if !errors.Is(err, store.ErrWrongKey) || !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), "not changed") {
		t.Fatalf("wrong key: %v", err)
	}
	if fileHash(t, path) != before || !slices.Equal(dirList(t, cfg.Store.DataDir), dirBefore) {
		t.Fatal("a refused start changed the store")
	}
	// The right key still opens every record.
	a = startApp(t, cfg)
	if n, _ := a.Store().Count(context.Background()); n != 3 {
		t.Fatalf("%d records after the refused start, want 3", n)
	}
}

// TestRotateThenRetireKeepsEveryRecord: k1 -> k2 with k1 in seal.previous;
// the background re-seal brings k1 to 0, /admin/keys says it is retirable,
// and without k1 every record still opens.
func TestRotateThenRetireKeepsEveryRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("three sipwake runs and a background re-seal (5 s); skipped with -short")
	}
	k1 := base64.StdEncoding.EncodeToString(store.NewKey())
	k2 := base64.StdEncoding.EncodeToString(store.NewKey())
	cfg := operatorConfig(t)
	cfg.Seal = config.Seal{KeyID: "k1", Key: config.Secret(k1)}
	a := startApp(t, cfg)
	const n = 40
	putBindings(t, a, n)
	stopApp(t, a)

	cfg.Seal = config.Seal{KeyID: "k2", Key: config.Secret(k2), Previous: []config.SealKey{{ID: "k1", Key: config.Secret(k1)}}}
	a = startApp(t, cfg)
	var keys admin.Keys
	waitFor(t, func() bool {
		_, body := adminCall(t, a, "GET", "/admin/keys")
		keys = admin.Keys{}
		_ = json.Unmarshal([]byte(body), &keys)
		return keys.Rotation.State == "done"
	}, "rotation done")
	if keys.Usage["k1"] != 0 || keys.Usage["k2"] != n || !slices.Equal(keys.Retirable, []string{"k1"}) || keys.Rotation.Resealed != n {
		t.Fatalf("after rotation: %+v", keys)
	}
	stopApp(t, a)

	cfg.Seal.Previous = nil // k1 retired
	a = startApp(t, cfg)
	for i := range n {
		bs, err := a.Relay().Bindings(context.Background(), aorN(i))
		if err != nil || len(bs) != 1 {
			t.Fatalf("record %d after retiring k1: %v (%d)", i, err, len(bs))
		}
	}

	// Erasure request and export through the admin API.
	if code, body := adminCall(t, a, "GET", "/admin/aors/"+string(aorN(0))); code != 200 || !strings.Contains(body, `"provider": "apns"`) || strings.Contains(body, pushtest.APNsToken(0)) {
		t.Fatalf("export: %d %s", code, body)
	}
	if code, body := adminCall(t, a, "POST", "/admin/aors/"+string(aorN(0))+"/erase"); code != 200 || !strings.Contains(body, `"erased": 1`) {
		t.Fatalf("erase: %d %s", code, body)
	}
	if bs, _ := a.Relay().Bindings(context.Background(), aorN(0)); len(bs) != 0 {
		t.Fatal("erased AOR still held")
	}
	if code, body := adminCall(t, a, "POST", "/admin/compact"); code != 200 || a.Store().(*store.Bolt).PendingErasures() != 0 {
		t.Fatalf("compact: %d %s", code, body)
	}
}

// --- helpers for tests that need no SIP peers ---

func operatorConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	addr := peertest.Addr(t, 2, 5060)
	cfg.SIP.Listen = sip.Listen{UDP: addr}
	cfg.SIP.Upstream = "sip:" + peertest.Addr(t, 1, 5060)
	cfg.Store.DataDir = t.TempDir()
	cfg.Seal.Key = config.Secret(base64.StdEncoding.EncodeToString(store.NewKey()))
	cfg.Push = push.Config{Apps: []push.AppConfig{pushtest.NewAPNs(t).App("ios")}}
	withAdmin(t)(&cfg)
	return cfg
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func startApp(t *testing.T, cfg config.Config, opts ...app.Option) *app.App {
	t.Helper()
	a, err := app.New(cfg, discard(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopApp(t, a) })
	return a
}

func stopApp(t *testing.T, a *app.App) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func adminCall(t *testing.T, a *app.App, method, path string) (int, string) {
	t.Helper()
	w := &world{t: t, sw: a}
	return w.adminDo(method, path)
}

func aorN(i int) relay.AOR {
	return relay.AOR("user" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "@" + domain)
}

func putBindings(t *testing.T, a *app.App, n int) {
	t.Helper()
	for i := range n {
		b := relay.Binding{AOR: aorN(i), Device: relay.Device{Provider: "apns", Token: pushtest.APNsToken(i), Param: "TEAM.org.sipwake.test.voip"},
			Contact: "sip:u@192.0.2.1:5070", Upstream: relay.UpstreamState{Path: true, Expires: 600}}
		if _, err := a.Relay().Register(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

func dirList(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		fi, _ := e.Info()
		out = append(out, filepath.Join(dir, e.Name())+" "+fi.Mode().String())
	}
	return out
}

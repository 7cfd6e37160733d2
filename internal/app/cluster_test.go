package app_test

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// node starts another sipwake sharing w's Redis, key and push apps, on
// 127.x.y.n:5060.
func (w *world) node(n int) (*app.App, string) {
	w.t.Helper()
	cfg := w.cfg
	addr := peertest.Addr(w.t, n, 5060)
	cfg.SIP.Listen = config.Listen{UDP: addr, TCP: addr}
	cfg.Store.DataDir = w.t.TempDir()
	logs := &syncBuffer{}
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		w.t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Stop(ctx)
		if w.t.Failed() {
			w.t.Logf("node %s log:\n%s", addr, logs.String())
		}
	})
	return a, addr
}

// registerVia registers alice's device through the sipwake at remote.
func (w *world) registerVia(remote, tok string, port int) {
	w.t.Helper()
	res, err := peertest.RunSipp(w.t, peertest.SippOptions{
		Scenario:  peertest.Scenario(w.t, "register_auth_params"),
		Remote:    remote,
		LocalIP:   w.deviceIP,
		LocalPort: port,
		Injection: peertest.RegisterInjection(peertest.SippUser{User: "alice", Domain: domain, Password: password}),
		Keys:      map[string]string{"expires": "600", "contact_params": ";pn-provider=apns;pn-prid=" + tok + ";pn-param=" + w.fakes.APNs.Param()},
	})
	if err != nil {
		w.t.Fatalf("register via %s: %v\n%s", remote, err, res.Messages())
	}
}

// Three nodes share one Redis. The phone registered through node A, then
// moved to node B, so the registrar's Path (and the call) leads to B. B
// parks the call and pushes; the phone wakes and registers through node C;
// B learns it over Redis and hands the call to C, which delivers it over
// the phone's fresh flow. One push, one delivery, answered.
func TestCallParkedOnOneNodeIsDeliveredThroughAnother(t *testing.T) {
	nodes := []string{peertest.IP(t, 2) + "/32", peertest.IP(t, 7) + "/32", peertest.IP(t, 8) + "/32"}
	w := newWorld(t, redisBackend(t), func(c *config.Config) { c.Calls.TrustedSources = nodes })
	b, bAddr := w.node(7)
	c, cAddr := w.node(8)
	tok := pushtest.APNsToken(60)

	w.registerVia(w.swAddr, tok, 5070)
	w.registerVia(bAddr, tok, 5070) // the phone moved to B
	locs := w.locations("alice")
	if len(locs) != 1 || !locs[0].OnPath(bAddr) {
		t.Fatalf("registrar should route alice through node B %s: %+v", bAddr, locs)
	}

	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	w.registerVia(cAddr, tok, 5070) // the woken phone reaches node C
	device := peertest.StartSipp(t, peertest.SippOptions{
		Name: "uas-" + strconv.Itoa(5070), Scenario: peertest.Scenario(t, "uas_answer"),
		LocalIP: w.deviceIP, LocalPort: 5070, Timeout: 30 * time.Second,
	})
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)

	if n := len(w.fakes.APNs.Pushes()); n != 1 {
		t.Fatalf("%d pushes, want 1", n)
	}
	bw := &world{t: t, sw: b}
	if got := metric(t, bw, "sipwake_calls_total", "delivered"); got != 1 {
		t.Fatalf("node B delivered %v calls, want 1", got)
	}
	cw := &world{t: t, sw: c}
	if got := metric(t, cw, "sipwake_calls_total", "delivered"); got != 1 {
		t.Fatalf("node C delivered %v calls, want the one B handed over", got)
	}
	if got := metric(t, cw, "sipwake_call_push_latency_seconds", ""); got != 0 {
		t.Fatalf("node C pushed again (%v)", got)
	}
}

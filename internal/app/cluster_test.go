package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/sip"
)

// node starts another sipwake sharing w's Redis, key and push apps, on
// 127.x.y.n:5060.
func (w *world) node(n int) (*app.App, string) {
	w.t.Helper()
	cfg := w.cfg
	addr := peertest.Addr(w.t, n, 5060)
	cfg.SIP.Listen = sip.Listen{UDP: addr, TCP: addr}
	if cfg.Cluster.NodeAddress != "" {
		cfg.Cluster.NodeAddress = addr
	}
	cfg.Store.DataDir = w.t.TempDir()
	logs := &peertest.Buffer{}
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
	tok := w.fakes.APNs.VoIPToken(60)

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

// Handed-over accounts are kept registered by one node at a time (a lease
// in Redis). When that node stops, another takes the account over before
// the registrar would drop it, in the same registration dialog.
func TestHandoverTakenOverWhenItsNodeStops(t *testing.T) {
	apiAddr := peertest.Addr(t, 6, 8443)
	w := newWorld(t, redisBackend(t), func(c *config.Config) {
		c.Cluster.RescanInterval = 200 * time.Millisecond
		c.API.Listen = apiAddr
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
	})
	w.cfg.API.Listen = "" // the second node serves no API
	b, _ := w.node(7)
	body := `{"aor":"alice@` + domain + `","registrar":"sip:` + w.kam.Addr + `","transport":"udp","username":"alice",` +
		`"password":"` + password + `","expires":10,"push":{"provider":"apns","token":"` + pushtest.APNsToken(61) + `","param":"` + w.fakes.APNs.Param() + `"}}`
	if code := putAccount(t, apiAddr, "phone-1", body); code != http.StatusCreated {
		t.Fatalf("PUT answered %d", code)
	}
	before := w.locations("alice")
	if len(before) != 1 {
		t.Fatalf("registrar holds %+v", before)
	}
	bw := &world{t: t, sw: b}
	waitFor(t, func() bool { return metric(t, bw, "sipwake_upstream_registrations", "standby") == 1 }, "node B standing by for the account")

	w.stop() // node A goes away; its lease is given back
	// B tries at the account's refresh time (80% of the 10 s granted).
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, bw, "sipwake_upstream_registrations", "registered") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("node B did not take the account over")
		}
		time.Sleep(100 * time.Millisecond)
	}
	after := w.locations("alice")
	if len(after) != 1 || after[0].CallID != before[0].CallID || after[0].CSeq <= before[0].CSeq {
		t.Fatalf("not refreshed in the same dialog: before %+v after %+v", before, after)
	}
	if n := records(t, b); n != 1 {
		t.Fatalf("%d records after the takeover, want 1", n)
	}
}

func records(t *testing.T, a *app.App) int {
	t.Helper()
	n, err := a.Store().Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Three nodes behind Kamailio's dispatcher, which all of them advertise as
// their address: the phone registers through it, the registrar's call for
// it comes back through it to whichever node, the woken phone registers
// through it again (to whichever node), and the call is answered with one
// push.
func TestThreeNodesBehindDispatcher(t *testing.T) {
	wakeBehindDispatcher(t, func(lbAddr string, nodes []string) {
		peertest.StartKamailio(t, peertest.KamailioOptions{Addr: lbAddr, Domain: domain, Dispatch: nodes})
	})
}

// wakeBehindDispatcher tells TestThreeNodesBehindDispatcher's story with
// the dispatcher startLB starts on lbAddr in front of nodes (ip:port),
// once they run: the registrar is on 127.x.y.1, the nodes on .2, .7, .8.
func wakeBehindDispatcher(t *testing.T, startLB func(lbAddr string, nodes []string)) {
	t.Helper()
	lbAddr := peertest.Addr(t, 9, 5060)
	nodes := []string{peertest.Addr(t, 2, 5060), peertest.Addr(t, 7, 5060), peertest.Addr(t, 8, 5060)}
	trusted := []string{peertest.IP(t, 9) + "/32"}
	for i := range nodes {
		trusted = append(trusted, peertest.IP(t, []int{2, 7, 8}[i])+"/32")
	}
	w := newWorld(t, redisBackend(t), func(c *config.Config) {
		c.SIP.PublicAddress = lbAddr
		c.Cluster.NodeAddress = nodes[0]
		c.Calls.TrustedSources = trusted
	})
	b, _ := w.node(7)
	c, _ := w.node(8)
	startLB(lbAddr, nodes)
	tok := w.fakes.APNs.VoIPToken(62)

	w.registerVia(lbAddr, tok, 5070)
	if locs := w.locations("alice"); len(locs) != 1 || !locs[0].OnPath(lbAddr) {
		t.Fatalf("registrar should route alice through the dispatcher %s: %+v", lbAddr, locs)
	}
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	w.registerVia(lbAddr, tok, 5070)
	device := peertest.StartSipp(t, peertest.SippOptions{
		Name: "uas-lb", Scenario: peertest.Scenario(t, "uas_answer"),
		LocalIP: w.deviceIP, LocalPort: 5070, Timeout: 30 * time.Second,
	})
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)
	if n := len(w.fakes.APNs.Pushes()); n != 1 {
		t.Fatalf("%d pushes, want 1", n)
	}
	delivered := 0.0
	for _, a := range []*app.App{w.sw, b, c} {
		delivered += metric(t, &world{t: t, sw: a}, "sipwake_calls_total", "delivered")
	}
	if delivered < 1 {
		t.Fatal("no node delivered the call")
	}
	t.Logf("deliveries across nodes: %v (2 = parked on one node, handed to another)", delivered)
	if n := records(t, w.sw); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// A handed-over app whose call is parked on the node that registered its
// account wakes and connects to another node: the call is handed there.
func TestHandedOverAppWakesThroughAnotherNode(t *testing.T) {
	apiAddr := peertest.Addr(t, 6, 8443)
	nodes := []string{peertest.IP(t, 2) + "/32", peertest.IP(t, 7) + "/32"}
	w := newWorld(t, redisBackend(t), func(c *config.Config) {
		c.API.Listen = apiAddr
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
		c.Calls.TrustedSources = nodes
	})
	w.cfg.API.Listen = ""
	_, bAddr := w.node(7)
	tok := w.fakes.APNs.VoIPToken(63)
	body := `{"aor":"alice@` + domain + `","registrar":"sip:` + w.kam.Addr + `","transport":"udp","username":"alice",` +
		`"password":"` + password + `","expires":600,"push":{"provider":"apns","token":"` + tok + `","param":"` + w.fakes.APNs.Param() + `"}}`
	if code := putAccount(t, apiAddr, "phone-1", body); code != http.StatusCreated {
		t.Fatalf("PUT answered %d", code)
	}
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	w.registerVia(bAddr, tok, 5070) // the app connects to node B
	device := peertest.StartSipp(t, peertest.SippOptions{
		Name: "uas-app", Scenario: peertest.Scenario(t, "uas_answer"),
		LocalIP: w.deviceIP, LocalPort: 5070, Timeout: 30 * time.Second,
	})
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "app", device)
}

package app_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sip"
)

const (
	domain   = "example.test"
	password = "s3cret-Pa55"
)

// world is one test's set of real peers: Kamailio as the provider's
// registrar and a sipwake between it and the devices.
type world struct {
	t        *testing.T
	kam      *peertest.Kamailio
	cfg      config.Config
	sw       *app.App
	swAddr   string
	logs     *peertest.Buffer
	deviceIP string
	fakes    *pushtest.Fakes
}

// newWorld starts Kamailio on 127.x.y.1 and sipwake on 127.x.y.2.
func newWorld(t *testing.T, mutate ...func(*config.Config)) *world {
	t.Helper()
	return newWorldWith(t, peertest.KamailioOptions{}, mutate...)
}

// newWorldWith is newWorld with more Kamailio options (domain and users
// are always the world's; the address is 127.x.y.1 unless given).
func newWorldWith(t *testing.T, kam peertest.KamailioOptions, mutate ...func(*config.Config)) *world {
	t.Helper()
	if kam.Addr == "" {
		kam.Addr = peertest.Addr(t, 1, 5060)
	}
	kam.Domain = domain
	kam.Users = map[string]string{"alice": password, "bob": password}
	return newWorldOn(t, peertest.StartKamailio(t, kam), mutate...)
}

// newWorldOn starts sipwake on 127.x.y.2 in front of k, a registrar that
// already runs and serves alice and bob with password at domain.
func newWorldOn(t *testing.T, k *peertest.Kamailio, mutate ...func(*config.Config)) *world {
	t.Helper()
	w := &world{t: t, kam: k, logs: &peertest.Buffer{}, deviceIP: peertest.IP(t, 3)}
	cfg := config.Default()
	w.swAddr = peertest.Addr(t, 2, 5060)
	cfg.SIP.Listen = sip.Listen{UDP: w.swAddr, TCP: w.swAddr}
	cfg.SIP.Upstream = "sip:" + w.kam.Addr
	cfg.SIP.UpstreamTimeout = 2 * time.Second
	cfg.Store.DataDir = t.TempDir()
	cfg.Log.Level = "debug"
	w.fakes = pushtest.NewFakes(t)
	cfg.Push = w.fakes.Config
	for _, m := range mutate {
		m(&cfg)
	}
	w.cfg = cfg
	w.start()
	return w
}

func (w *world) start(opts ...app.Option) {
	w.t.Helper()
	var level slog.Level
	if err := level.UnmarshalText([]byte(w.cfg.Log.Level)); err != nil {
		w.t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: level}))
	a, err := app.New(w.cfg, log, opts...)
	if err != nil {
		w.t.Fatalf("sipwake: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		w.t.Fatalf("sipwake start: %v", err)
	}
	w.sw = a
	w.t.Cleanup(func() {
		w.stop()
		if w.t.Failed() {
			w.t.Logf("sipwake log:\n%s", w.logs.String())
		}
	})
}

func (w *world) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.sw.Stop(ctx); err != nil {
		w.t.Errorf("sipwake stop: %v", err)
	}
}

// restartWith stops sipwake and starts it again on the same data dir.
func (w *world) restartWith(opts ...app.Option) {
	w.t.Helper()
	w.stop()
	w.start(opts...)
}

// fakeClock is a settable clock for TTL tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// register runs a sipp device that REGISTERs through sipwake with the
// given Contact parameters and answers the challenge.
func (w *world) register(user, contactParams string, expires, port int) (*peertest.SippResult, error) {
	w.t.Helper()
	return peertest.RunSipp(w.t, peertest.SippOptions{
		Scenario:  peertest.Scenario(w.t, "register_auth_params"),
		Remote:    w.swAddr,
		LocalIP:   w.deviceIP,
		LocalPort: port,
		Injection: peertest.RegisterInjection(peertest.SippUser{User: user, Domain: domain, Password: password}),
		Keys:      map[string]string{"expires": strconv.Itoa(expires), "contact_params": contactParams},
	})
}

// expect sends one REGISTER without credentials and expects a final code.
func (w *world) expect(user, contactParams string, code int) *peertest.SippResult {
	w.t.Helper()
	res, err := peertest.RunSipp(w.t, peertest.SippOptions{
		Scenario:  peertest.Scenario(w.t, "register_noauth_expect"),
		Remote:    w.swAddr,
		LocalIP:   w.deviceIP,
		LocalPort: 5090,
		Injection: peertest.RegisterInjection(peertest.SippUser{User: user, Domain: domain}),
		Keys:      map[string]string{"expires": "600", "expect": strconv.Itoa(code), "contact_params": contactParams},
	})
	if err != nil {
		w.t.Fatalf("expected %d: %v\n%s", code, err, res.Messages())
	}
	return res
}

func (w *world) bindings(user string) []relay.Binding {
	w.t.Helper()
	bs, err := w.sw.Relay().Bindings(context.Background(), relay.AOR(user+"@"+domain))
	if err != nil {
		w.t.Fatal(err)
	}
	return bs
}

func (w *world) records() int {
	w.t.Helper()
	n, err := w.sw.Store().Count(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	return n
}

func (w *world) locations(user string) []peertest.Binding {
	w.t.Helper()
	ls, err := w.kam.Locations(context.Background(), user+"@"+domain)
	if err != nil {
		w.t.Fatal(err)
	}
	return ls
}

// sendRaw writes one datagram to sipwake and returns the answer, if any
// arrives within wait.
func sendRaw(t *testing.T, from, to string, msg string, wait time.Duration) string {
	t.Helper()
	if _, _, err := net.SplitHostPort(from); err != nil {
		from = net.JoinHostPort(from, "0") // any port
	}
	laddr, _ := net.ResolveUDPAddr("udp", from)
	raddr, _ := net.ResolveUDPAddr("udp", to)
	conn, err := net.DialUDP("udp", laddr, raddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// putAccount hands an account over through the API at addr with the test
// key and returns the status.
func putAccount(t *testing.T, addr, id, body string) int {
	t.Helper()
	return handovertest.PutAccount(t, addr, apiKey, id, body)
}

// eachLabel calls fn with every label of every metric the instance exports.
func (w *world) eachLabel(fn func(metric, name, value string)) {
	w.t.Helper()
	fams, err := w.sw.Registry().Gather()
	if err != nil {
		w.t.Fatal(err)
	}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				fn(f.GetName(), l.GetName(), l.GetValue())
			}
		}
	}
}

package app_test

import (
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/sip"
)

// v6Port is a port on ::1 for the calling test: the loopback has one IPv6
// address, so tests tell their sockets apart by port, derived as
// peertest.IP derives addresses (test binary and name), in 20000-31999
// and in steps of 8 so that base+0..7 are the test's own. The range stays
// below Linux's ephemeral ports (32768-60999): a listener on [::]:port
// also takes the port on every IPv4 address, so any outgoing socket the
// kernel had given that port made it "address already in use".
func v6Port(t *testing.T, n int) int {
	t.Helper()
	h := fnv.New32a()
	h.Write([]byte(filepath.Base(os.Args[0])))
	h.Write([]byte{0})
	h.Write([]byte(t.Name()))
	return 20000 + int(h.Sum32()%1500)*8 + n
}

// needIPv6Loopback skips a test where ::1 cannot be bound (a container
// without IPv6), saying so.
func needIPv6Loopback(t *testing.T) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	_ = c.Close()
}

// newDualStackWorld is the world with sipwake listening on both families
// at once ([::]:port, UDP and TCP) in front of Kamailio on IPv4, and the
// phones on ::1: what a mobile network that gives phones only IPv6 looks
// like to a provider whose core is IPv4. Kamailio reaches sipwake at its
// IPv4 address, the phones at [::1].
func newDualStackWorld(t *testing.T, mutate ...func(*config.Config)) *world {
	t.Helper()
	needIPv6Loopback(t)
	port := v6Port(t, 0)
	w := newWorld(t, append([]func(*config.Config){func(c *config.Config) {
		listen := net.JoinHostPort("::", strconv.Itoa(port))
		c.SIP.Listen = sip.Listen{UDP: listen, TCP: listen}
		c.SIP.PublicAddress = peertest.IP(t, 2)
		c.SIP.PublicAddressIPv6 = "[::1]"
	}}, mutate...)...)
	w.swAddr = net.JoinHostPort("::1", strconv.Itoa(port))
	w.deviceIP = "::1"
	return w
}

// A phone on IPv6 registers through a dual-stacked sipwake to a registrar
// on IPv4, is woken by a push for a call from an IPv4 caller, and answers
// it over its IPv6 flow; the in-dialog requests reach it both ways.
func TestIPv6PhoneCalledFromIPv4(t *testing.T) {
	w := newDualStackWorld(t)
	phonePort := v6Port(t, 1)
	tok := w.fakes.APNs.VoIPToken(61)
	w.sleepingDevice("alice", tok, phonePort)

	bs := w.bindings("alice")
	if len(bs) != 1 || bs[0].Flow.Source != net.JoinHostPort("::1", strconv.Itoa(phonePort)) {
		t.Fatalf("binding after an IPv6 REGISTER: %+v", bs)
	}
	locs := w.locations("alice")
	if len(locs) != 1 || !strings.Contains(strings.Join(locs[0].Path, ","), "@"+peertest.IP(t, 2)+":") {
		t.Fatalf("the IPv4 registrar holds %+v; want a Path at sipwake's IPv4 address", locs)
	}

	caller := w.call("alice", "caller_dialog", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, phonePort, "uas_dialog")
	res := mustSucceed(t, "caller", caller)
	dev := mustSucceed(t, "device", device)

	invite := firstReceived(dev, "INVITE ")
	for _, want := range []string{
		"Via: SIP/2.0/UDP [::1]:",                                // sipwake's own Via, toward the phone
		"Record-Route: <sip:[::1]:" + strconv.Itoa(v6Port(t, 0)), // the phone's side of sipwake
		"Record-Route: <sip:" + peertest.IP(t, 2) + ":",          // the caller's side
	} {
		if !strings.Contains(invite, want) {
			t.Errorf("INVITE at the IPv6 phone lacks %q:\n%s", want, invite)
		}
	}
	for _, m := range []string{"INFO ", "UPDATE ", "BYE "} {
		if !strings.Contains(dev.Messages(), m) {
			t.Errorf("%s did not reach the IPv6 phone", m)
		}
	}
	if n := strings.Count(dev.Messages(), "INVITE sip:"); n != 2 {
		t.Errorf("the phone saw %d INVITEs, want the call and its re-INVITE", n)
	}
	if !strings.Contains(res.Messages(), "BYE ") {
		t.Error("the IPv4 caller's dialog did not end with its BYE")
	}
}

// firstReceived is the first message res received that starts with prefix.
func firstReceived(res *peertest.SippResult, prefix string) string {
	for _, m := range res.Received() {
		if strings.HasPrefix(m, prefix) {
			return m
		}
	}
	return ""
}

// linphonec on ::1 registers through the dual-stacked sipwake over TCP,
// is killed, is woken by the push for a call from an IPv4 caller,
// registers again over IPv6 and auto-answers.
func TestIPv6LinphoneWokenByPushAnswers(t *testing.T) {
	w := newDualStackWorld(t)
	tok := w.fakes.APNs.VoIPToken(62)
	start := func() *peertest.Linphone {
		l := peertest.StartLinphone(t, peertest.LinphoneOptions{
			Addr:          net.JoinHostPort("::1", strconv.Itoa(v6Port(t, 2))),
			Proxy:         w.swAddr,
			Transport:     "tcp",
			User:          "alice",
			Domain:        domain,
			Password:      password,
			ContactParams: "pn-provider=apns;pn-prid=" + tok + ";pn-param=" + w.fakes.APNs.Param(),
		})
		waitFor(t, func() bool { return len(w.bindings("alice")) == 1 && len(w.locations("alice")) > 0 }, "linphonec registered over IPv6")
		return l
	}
	phone := start()
	b := w.bindings("alice")[0]
	if b.Flow.Transport != "tcp" || !strings.HasPrefix(b.Flow.Source, "[::1]:") {
		t.Fatalf("linphonec's flow: %+v", b.Flow)
	}
	killed := b.Flow.Source
	phone.Kill()

	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	woken := start()
	if flow := w.newFlow("alice", killed); !strings.HasPrefix(flow, "[::1]:") {
		t.Fatalf("woken phone's flow %s", flow)
	}
	mustSucceed(t, "IPv4 caller through Kamailio to the woken IPv6 linphonec", caller)
	if err := woken.WaitOutput("Call", 5*time.Second); err != nil {
		t.Fatalf("linphonec saw no call: %v\n%s", err, woken.Output())
	}
}

// newIPv6OnlyWorld is an IPv6-only provider: Kamailio on [::1] as the
// registrar and sipwake on [::1] only.
func newIPv6OnlyWorld(t *testing.T) *world {
	t.Helper()
	needIPv6Loopback(t)
	sw := net.JoinHostPort("::1", strconv.Itoa(v6Port(t, 0)))
	w := newWorldWith(t, peertest.KamailioOptions{Addr: net.JoinHostPort("::1", strconv.Itoa(v6Port(t, 3)))},
		func(c *config.Config) { c.SIP.Listen = sip.Listen{UDP: sw, TCP: sw} })
	w.swAddr, w.deviceIP = sw, "::1"
	return w
}

// callFromIPv6 places a call to alice at remote from a sipp caller on ::1.
func (w *world) callFromIPv6(scenario, remote string) *peertest.Sipp {
	w.t.Helper()
	return peertest.StartSipp(w.t, peertest.SippOptions{
		Scenario: peertest.Scenario(w.t, scenario), Remote: remote,
		LocalIP: "::1", LocalPort: v6Port(w.t, 4), Service: "alice", Timeout: 40 * time.Second,
	})
}

// An IPv6-only provider: Kamailio on [::1] as the registrar, sipwake on
// [::1] only, phone and caller on ::1. The Path, the Record-Routes and the
// stateless REGISTER's Via name sipwake at [::1].
func TestIPv6Registrar(t *testing.T) {
	w := newIPv6OnlyWorld(t)
	tok := w.fakes.APNs.VoIPToken(63)
	phonePort := v6Port(t, 1)
	w.sleepingDevice("alice", tok, phonePort)
	locs := w.locations("alice")
	if len(locs) != 1 || !strings.Contains(strings.Join(locs[0].Path, ","), "@[::1]:"+strconv.Itoa(v6Port(t, 0))) {
		t.Fatalf("the IPv6 registrar holds %+v; want a Path at [::1]", locs)
	}

	caller := w.callFromIPv6("caller_dialog", w.kam.Addr)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, phonePort, "uas_dialog")
	mustSucceed(t, "IPv6 caller", caller)
	dev := mustSucceed(t, "IPv6 phone", device)
	invite := firstReceived(dev, "INVITE ")
	if n := strings.Count(invite, "Record-Route: <sip:[::1]:"+strconv.Itoa(v6Port(t, 0))); n != 1 {
		t.Errorf("INVITE at the phone has %d Record-Routes of sipwake, want one (same transport, same family):\n%s", n, invite)
	}
	for _, m := range []string{"INFO ", "UPDATE ", "BYE "} {
		if !strings.Contains(dev.Messages(), m) {
			t.Errorf("%s did not reach the IPv6 phone", m)
		}
	}
}

// TLS on both families: linphonec on ::1 registers over TLS to the
// dual-stacked sipwake ([::]:port) and is called over that flow, at once
// (no push), by an IPv4 caller through Kamailio.
func TestIPv6LinphoneOverTLS(t *testing.T) {
	certFile, keyFile := writeCert(t, t.TempDir(), "sipwake.test")
	tlsListen := net.JoinHostPort("::", strconv.Itoa(v6Port(t, 5)))
	w := newDualStackWorld(t, func(c *config.Config) {
		c.SIP.Listen.TLS, c.SIP.Listen.TLSCertFile, c.SIP.Listen.TLSKeyFile = tlsListen, certFile, keyFile
	})
	tok := w.fakes.APNs.VoIPToken(64)
	peertest.StartLinphone(t, peertest.LinphoneOptions{
		Addr:  net.JoinHostPort("::1", strconv.Itoa(v6Port(t, 2))),
		Proxy: net.JoinHostPort("::1", strconv.Itoa(v6Port(t, 5))), Transport: "tls",
		User: "alice", Domain: domain, Password: password,
		ContactParams: "pn-provider=apns;pn-prid=" + tok + ";pn-param=" + w.fakes.APNs.Param(),
	})
	waitFor(t, func() bool {
		bs := w.bindings("alice")
		return len(bs) == 1 && bs[0].Flow.Transport == "tls" && strings.HasPrefix(bs[0].Flow.Source, "[::1]:")
	}, "linphonec registered over TLS on IPv6")
	mustSucceed(t, "IPv4 caller to linphonec on its IPv6 TLS flow", w.call("alice", "caller_answered", nil))
	if n := len(w.fakes.APNs.Pushes()); n != 0 {
		t.Fatalf("%d pushes to a phone with a live flow", n)
	}
}

// A trunk's IPv6 prefix: a carrier on ::1 calls sipwake over IPv6 straight
// (no registrar in between); one outside the prefix is refused.
func TestIPv6TrunkPrefix(t *testing.T) {
	w := newDualStackWorld(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Sources: []string{"::1/128"}, Domain: domain}}
	})
	tok := w.fakes.APNs.VoIPToken(65)
	phonePort := v6Port(t, 1)
	w.sleepingDevice("alice", tok, phonePort)
	caller := w.callFromIPv6("caller_answered", w.swAddr)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, phonePort, "uas_answer")
	mustSucceed(t, "IPv6 trunk caller", caller)
	mustSucceed(t, "IPv6 phone", device)

	// The same carrier from its IPv4 address is no trunk.
	if _, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "caller_expect"),
		Remote:    net.JoinHostPort(peertest.IP(t, 2), strconv.Itoa(v6Port(t, 0))),
		LocalIP:   callerIP(t),
		LocalPort: 5060,
		Service:   "alice",
		Keys:      map[string]string{"expect": "403"},
	}); err != nil {
		t.Fatalf("IPv4 source outside the IPv6 trunk prefix: %v", err)
	}
}

// The woken phone hangs up: its BYE leaves over its IPv6 TCP flow and
// follows the route set to the IPv6 registrar ([::1] in a Route URI) and
// on to the IPv6 caller.
func TestIPv6LinphoneHangsUpThroughIPv6Registrar(t *testing.T) {
	w := newIPv6OnlyWorld(t)
	tok := w.fakes.APNs.VoIPToken(66)
	start := func() *peertest.Linphone {
		l := peertest.StartLinphone(t, peertest.LinphoneOptions{
			Addr: net.JoinHostPort("::1", strconv.Itoa(v6Port(t, 5))), Proxy: w.swAddr, Transport: "tcp",
			User: "alice", Domain: domain, Password: password,
			ContactParams: "pn-provider=apns;pn-prid=" + tok + ";pn-param=" + w.fakes.APNs.Param(),
		})
		waitFor(t, func() bool { return len(w.bindings("alice")) == 1 && len(w.locations("alice")) > 0 }, "linphonec registered over IPv6")
		return l
	}
	start().Kill()
	killed := w.bindings("alice")[0].Flow.Source
	caller := peertest.StartSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "caller_hungup"),
		Remote:    w.kam.Addr,
		LocalIP:   "::1",
		LocalPort: v6Port(t, 4),
		Service:   "alice",
		Timeout:   40 * time.Second,
	})
	waitPushes(t, w.fakes.APNs, 1)
	woken := start()
	w.newFlow("alice", killed)
	if err := woken.WaitOutput("connected", 10*time.Second); err != nil {
		t.Fatalf("call not connected: %v\n%s", err, woken.Output())
	}
	if err := woken.Command("terminate"); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, "IPv6 caller receives the phone's BYE", caller)
}

package app_test

import (
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
)

// linphone starts linphonec as alice's phone, registering through sipwake
// over TCP with its pn-* parameters in the Contact.
func (w *world) linphone(tok string) *peertest.Linphone {
	w.t.Helper()
	l := peertest.StartLinphone(w.t, peertest.LinphoneOptions{
		Addr:          peertest.Addr(w.t, 5, 5080),
		Proxy:         w.swAddr,
		Transport:     "tcp",
		User:          "alice",
		Domain:        domain,
		Password:      password,
		ContactParams: "pn-provider=apns;pn-prid=" + tok + ";pn-param=" + w.fakes.APNs.Param(),
	})
	waitFor(w.t, func() bool { return len(w.bindings("alice")) == 1 && len(w.locations("alice")) > 0 }, "linphonec registered through sipwake")
	return l
}

// newFlow waits for user's binding to name a flow other than old (the
// woken phone's REGISTER stored) and returns its source.
func (w *world) newFlow(user, old string) string {
	w.t.Helper()
	var src string
	waitFor(w.t, func() bool {
		bs := w.bindings(user)
		if len(bs) == 1 {
			src = bs[0].Flow.Source
		}
		return src != "" && src != old
	}, "the woken phone's flow stored")
	return src
}

// The app is killed by the OS (no un-register, its TCP flow drops); a call
// pushes, the app starts again, registers, and auto-answers.
func TestLinphoneWokenByPushAnswers(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(20)
	phone := w.linphone(tok)
	if b := w.bindings("alice")[0]; b.Flow.Transport != "tcp" {
		t.Fatalf("linphonec's flow: %+v", b.Flow)
	}
	phone.Kill()

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	if ps[0].Header.Get("apns-push-type") != "voip" {
		t.Fatalf("call push: %v", ps[0].Header)
	}
	woken := w.linphone(tok)
	mustSucceed(t, "caller through Kamailio to the woken linphonec", caller)
	if err := woken.WaitOutput("Call", 5*time.Second); err != nil {
		t.Fatalf("linphonec saw no call: %v\n%s", err, woken.Output())
	}
}

// A phone still connected over TCP is called at once, without a push.
func TestLinphoneOnLiveFlowNeedsNoPush(t *testing.T) {
	w := newWorld(t)
	w.linphone(w.fakes.APNs.VoIPToken(21))
	mustSucceed(t, "caller", w.call("alice", "caller_answered", nil))
	if n := len(w.fakes.APNs.Pushes()); n != 0 {
		t.Fatalf("%d pushes to a phone with a live flow", n)
	}
}

// The woken phone hangs up: its BYE goes back over TCP to sipwake and on,
// along the double Record-Route, over UDP to Kamailio and the caller.
func TestLinphoneHangsUp(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(22)
	w.linphone(tok).Kill()
	killed := w.bindings("alice")[0].Flow.Source
	caller := w.call("alice", "caller_hungup", nil)
	waitPushes(t, w.fakes.APNs, 1)
	woken := w.linphone(tok)
	flow := w.newFlow("alice", killed)
	if err := woken.WaitOutput("connected", 10*time.Second); err != nil {
		t.Fatalf("call not connected: %v\n%s", err, woken.Output())
	}
	if err := woken.Command("terminate"); err != nil {
		t.Fatal(err)
	}
	res := mustSucceed(t, "caller receives the phone's BYE", caller)
	// Neither the Record-Route of the 200 nor the Vias of the phone's
	// BYE tell the caller where the phone connected from.
	hidesFlow(t, res, flow)
}

// The same over TLS: linphonec registers through sipwake's TLS listener, is
// killed, is woken by push, registers again over TLS and auto-answers; the
// call goes out over its TLS flow, and the phone hangs up. The caller never
// learns where the phone connected from.
func TestLinphoneOverTLSWokenByPush(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "sipwake.test")
	tlsAddr := peertest.Addr(t, 2, 5061)
	w := newWorld(t, func(c *config.Config) {
		c.SIP.Listen.TLS, c.SIP.Listen.TLSCertFile, c.SIP.Listen.TLSKeyFile = tlsAddr, certFile, keyFile
	})
	tok := w.fakes.APNs.VoIPToken(23)
	start := func() *peertest.Linphone {
		l := peertest.StartLinphone(w.t, peertest.LinphoneOptions{
			Addr: peertest.Addr(t, 5, 5080), Proxy: tlsAddr, Transport: "tls",
			User: "alice", Domain: domain, Password: password,
			ContactParams: "pn-provider=apns;pn-prid=" + tok + ";pn-param=" + w.fakes.APNs.Param(),
		})
		waitFor(t, func() bool { bs := w.bindings("alice"); return len(bs) == 1 && bs[0].Flow.Transport == "tls" }, "linphonec registered over TLS")
		return l
	}
	start().Kill()
	killed := w.bindings("alice")[0].Flow.Source
	caller := w.call("alice", "caller_hungup", nil)
	waitPushes(t, w.fakes.APNs, 1)
	woken := start()
	flow := w.newFlow("alice", killed)
	if err := woken.WaitOutput("connected", 10*time.Second); err != nil {
		t.Fatalf("call not connected: %v\n%s", err, woken.Output())
	}
	if err := woken.Command("terminate"); err != nil {
		t.Fatal(err)
	}
	res := mustSucceed(t, "caller through Kamailio to the woken linphonec over TLS, and its BYE", caller)
	hidesFlow(t, res, flow)
}

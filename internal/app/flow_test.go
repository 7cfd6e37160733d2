package app_test

import (
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

// hidesFlow fails the test when a message the caller received holds the
// device's flow: the ip:port it connected from, or that source port in any
// position a port takes. Its IP alone may appear: its own Contact and SDP
// publish it.
func hidesFlow(t *testing.T, caller *peertest.SippResult, source string) {
	t.Helper()
	_, port, err := net.SplitHostPort(source)
	if err != nil {
		t.Fatalf("flow source %q: %v", source, err)
	}
	received := caller.Received()
	if len(received) == 0 {
		t.Fatal("the caller's trace is empty: nothing was checked")
	}
	leak := regexp.MustCompile(`[:=]` + regexp.QuoteMeta(port) + `\b`)
	for _, m := range received {
		if strings.Contains(m, source) || leak.MatchString(m) {
			t.Errorf("the caller received the device's flow %s:\n%s", source, m)
		}
	}
}

// countAccepts listens on a TCP address and counts the connections made
// to it.
func countAccepts(t *testing.T, addr string) *atomic.Int64 {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	}()
	return &n
}

// A caller that edits the flow token in its route set, or names an
// address in the old clear form, or leaves the token out, is answered 403
// and sipwake connects nowhere because of it; the call itself goes on and
// is hung up along the real route set.
func TestForgedFlowTokenIsRefused(t *testing.T) {
	w := newWorld(t)
	w.linphone(w.fakes.APNs.VoIPToken(24))
	forged := peertest.Addr(t, 9, 5090)
	accepts := countAccepts(t, forged)
	host, port, _ := net.SplitHostPort(w.swAddr)
	caller := w.call("alice", "caller_forged_flow", map[string]string{"sw_host": host, "sw_port": port, "forged": forged})
	res := mustSucceed(t, "caller with a forged route set", caller)
	if n := strings.Count(res.Messages(), "SIP/2.0 403 Forbidden"); n != 3 {
		t.Fatalf("%d answers 403 to the 3 forged INFOs\n%s", n, res.Messages())
	}
	time.Sleep(200 * time.Millisecond)
	if n := accepts.Load(); n != 0 {
		t.Fatalf("sipwake opened %d connections to the forged address", n)
	}
}

// A token taken from one dialog opens in no other: a request of another
// Call-ID that carries it is refused before sipwake sends anything.
func TestFlowTokenReplayedInAnotherDialogIsRefused(t *testing.T) {
	w := newWorld(t)
	w.linphone(w.fakes.APNs.VoIPToken(25))
	res := mustSucceed(t, "caller", w.call("alice", "caller_answered", nil))
	tok := regexp.MustCompile(`sw-flow=([A-Za-z0-9_-]+)`).FindStringSubmatch(res.Messages())
	if tok == nil {
		t.Fatalf("no flow token in what the caller saw:\n%s", res.Messages())
	}
	from := peertest.IP(t, 4)
	bye := "BYE sip:alice@" + w.swAddr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + from + ":5064;rport;branch=z9hG4bK-replay1\r\n" +
		"From: <sip:mallory@" + domain + ">;tag=m1\r\n" +
		"To: <sip:alice@" + domain + ">;tag=a1\r\n" +
		"Call-ID: another-dialog@" + from + "\r\n" +
		"CSeq: 7 BYE\r\n" +
		"Route: <sip:" + w.swAddr + ";transport=tcp;lr;sw-flow=" + tok[1] + ">\r\n" +
		"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if got := sendRaw(t, from, w.swAddr, bye, 2*time.Second); !strings.HasPrefix(got, "SIP/2.0 403") {
		t.Fatalf("a replayed token was answered:\n%s", got)
	}
}

// The phone's flow goes away during the call (the app is killed): the
// caller's BYE is answered 430 Flow Failed, and sipwake does not dial the
// address the flow came from.
func TestGoneFlowAnswers430(t *testing.T) {
	w := newWorld(t)
	phone := w.linphone(w.fakes.APNs.VoIPToken(26))
	source := w.bindings("alice")[0].Flow.Source
	caller := w.call("alice", "caller_flow_failed", map[string]string{"wait_ms": "3000"})
	if err := phone.WaitOutput("connected", 10*time.Second); err != nil {
		t.Fatalf("call not connected: %v\n%s", err, phone.Output())
	}
	phone.Kill()
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", source, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, "the phone's flow closed")
	accepts := countAccepts(t, source)
	res := mustSucceed(t, "caller's BYE answered 430", caller)
	hidesFlow(t, res, source)
	if n := accepts.Load(); n != 0 {
		t.Fatalf("sipwake dialled the dead flow's address %d times", n)
	}
}

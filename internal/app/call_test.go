package app_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// callerIP is where sipp callers run: 127.x.y.4.
func callerIP(t *testing.T) string { return peertest.IP(t, 4) }

// sleepingDevice registers user's iPhone through sipwake from port, then
// "sleeps" (the sipp process ends, nothing listens there). It registers as
// Linphone for iOS does (clients_test.go): tok as its PushKit token, a
// remote-notification token of its own (remoteOf), and an instance id of
// its own, so that two phones of one user are two devices.
func (w *world) sleepingDevice(user, tok string, port int) {
	w.t.Helper()
	phone := &clientPhone{w: w, user: user, port: port, contact: linphoneContact(user, w.deviceIP, port,
		linphoneIOSParams("apns", w.fakes.APNs.BundleID, tok, w.remoteOf(tok)), instanceID(port))}
	phone.register()
}

// remoteOf is the remote-notification token of the iPhone whose PushKit
// token is tok, issued by the fake APNs for the app's own topic.
func (w *world) remoteOf(tok string) string {
	sum := sha256.Sum256([]byte("remote-" + tok))
	remote := hex.EncodeToString(sum[:])
	w.fakes.APNs.BindToken(remote, w.fakes.APNs.BundleID)
	return remote
}

// wake acts as the app after a push: it re-registers from port and then
// answers there with the given scenario (uas_answer, uas_ring_cancel).
func (w *world) wake(user, tok string, port int, scenario string) *peertest.Sipp {
	w.t.Helper()
	w.sleepingDevice(user, tok, port)
	return peertest.StartSipp(w.t, peertest.SippOptions{
		Name:      scenario + "-" + strconv.Itoa(port),
		Scenario:  peertest.Scenario(w.t, scenario),
		LocalIP:   w.deviceIP,
		LocalPort: port,
		Timeout:   30 * time.Second,
	})
}

// call places a call to user through Kamailio from a sipp caller.
func (w *world) call(user, scenario string, keys map[string]string) *peertest.Sipp {
	w.t.Helper()
	return peertest.StartSipp(w.t, peertest.SippOptions{
		Scenario:  peertest.Scenario(w.t, scenario),
		Remote:    w.kam.Addr,
		LocalIP:   callerIP(w.t),
		LocalPort: 5060,
		Service:   user,
		Keys:      keys,
		Timeout:   40 * time.Second,
	})
}

func waitPushes(t *testing.T, rec interface {
	WaitFor(context.Context, int) ([]pushtest.Push, error)
}, n int) []pushtest.Push {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ps, err := rec.WaitFor(ctx, n)
	if err != nil {
		t.Fatalf("waiting for %d pushes: %v (got %d)", n, err, len(ps))
	}
	return ps
}

func mustSucceed(t *testing.T, name string, s *peertest.Sipp) *peertest.SippResult {
	t.Helper()
	res, err := s.Wait(45 * time.Second)
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, res.Messages())
	}
	return res
}

func TestCallWakesSleepingPhone(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(1)
	w.sleepingDevice("alice", tok, 5070)

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	p := ps[0]
	if p.Token != tok || p.Header.Get("apns-push-type") != "voip" || p.Header.Get("apns-topic") != w.fakes.APNs.BundleID+".voip" || p.Header.Get("apns-priority") != "10" {
		t.Fatalf("call push headers: token %s, %v", p.Token, p.Header)
	}
	body := string(p.Payload)
	for _, want := range []string{"Carol Caller", "+15550100"} {
		if !strings.Contains(body, want) {
			t.Fatalf("call push lacks %q for CallKit: %s", want, body)
		}
	}
	device := w.wake("alice", tok, 5070, "uas_answer")
	res := mustSucceed(t, "caller", caller)
	dev := mustSucceed(t, "device", device)

	invite := ""
	for _, m := range dev.Received() {
		if strings.HasPrefix(m, "INVITE ") {
			invite = m
		}
	}
	first, _, _ := strings.Cut(invite, "\n")
	if first == "" || strings.Contains(first, "pn-") {
		t.Fatalf("device got INVITE %q: pn-* must be stripped from the Request-URI", first)
	}
	if !strings.Contains(dev.Messages(), "BYE ") {
		t.Fatal("BYE did not reach the device")
	}
	if !strings.Contains(res.Messages(), "X-Sipwake-Progress: push-sent") {
		t.Fatal("caller saw no SIPIS progress 180")
	}
	if n := len(w.fakes.APNs.Pushes()); n != 1 {
		t.Fatalf("%d pushes for one answered call, want 1", n)
	}
}

func TestCallerCancelSendsCancelPush(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(2)
	w.sleepingDevice("alice", tok, 5070)
	caller := w.call("alice", "caller_cancel", nil)
	mustSucceed(t, "caller cancel (200 to CANCEL, 487)", caller)
	ps := waitPushes(t, w.fakes.APNs, 2)
	if ps[1].Header.Get("apns-push-type") != "alert" || ps[1].Token != w.remoteOf(tok) {
		t.Fatalf("the missed-call push went to %s as %q", ps[1].Token, ps[1].Header.Get("apns-push-type"))
	}
	if !strings.Contains(string(ps[1].Payload), "missed") {
		t.Fatalf("cancel push payload: %s", ps[1].Payload)
	}
	if w.records() != 1 {
		t.Fatal("a cancelled call changed the records")
	}
}

func TestCallNoDeviceTimesOut(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.Calls.Wait = 2 * time.Second })
	w.sleepingDevice("alice", w.fakes.APNs.VoIPToken(3), 5070)
	start := time.Now()
	res := mustSucceed(t, "caller", w.call("alice", "caller_expect", map[string]string{"expect": "480"}))
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("480 after %v, before the wait ran out", took)
	}
	if !strings.Contains(res.Messages(), "no device answered within 2s") {
		t.Fatalf("480 lacks a readable reason:\n%s", res.Messages())
	}
	waitPushes(t, w.fakes.APNs, 2) // the call push and the "missed" follow-up
}

func TestDeadTokenErasesAndRejects(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(4)
	w.fakes.APNs.Program(tok, pushtest.Behavior{Status: 410, Reason: "Unregistered"})
	w.sleepingDevice("alice", tok, 5070)
	start := time.Now()
	mustSucceed(t, "caller", w.call("alice", "caller_expect", map[string]string{"expect": "480"}))
	if took := time.Since(start); took > w.cfg.Calls.Wait {
		t.Fatalf("dead token held the call for %v", took)
	}
	if w.records() != 0 {
		t.Fatal("dead token's record kept")
	}
}

// answeredByOne wakes alice's two phones (registered from 5070 and 5072)
// for caller's call: the second rings and is cancelled, the first answers.
// It returns what the cancelled one saw.
func (w *world) answeredByOne(caller *peertest.Sipp, tokA, tokB string) *peertest.SippResult {
	w.t.Helper()
	waitPushes(w.t, w.fakes.APNs, 2)
	ringing := w.wake("alice", tokB, 5072, "uas_ring_cancel")
	time.Sleep(500 * time.Millisecond)
	answering := w.wake("alice", tokA, 5070, "uas_answer")
	mustSucceed(w.t, "caller", caller)
	mustSucceed(w.t, "answering phone", answering)
	return mustSucceed(w.t, "ringing phone gets CANCEL", ringing)
}

func TestTwoDevicesFirstAnswerWins(t *testing.T) {
	w := newWorld(t)
	tokA, tokB := w.fakes.APNs.VoIPToken(5), w.fakes.APNs.VoIPToken(6)
	w.sleepingDevice("alice", tokA, 5070)
	w.sleepingDevice("alice", tokB, 5072)
	w.answeredByOne(w.call("alice", "caller_answered", nil), tokA, tokB)
	ps := waitPushes(t, w.fakes.APNs, 3)
	cancelPush := ps[2]
	if cancelPush.Token != w.remoteOf(tokB) || !strings.Contains(string(cancelPush.Payload), "answered-elsewhere") {
		t.Fatalf("answered-elsewhere push: %+v %s", cancelPush.Token, cancelPush.Payload)
	}
}

func TestTrunkFromUnlistedSourceIsForbidden(t *testing.T) {
	w := newWorld(t, func(c *config.Config) {
		c.Trunks = []config.Trunk{{Name: "carrier", Sources: []string{"192.0.2.0/24"}, Domain: domain}}
	})
	w.sleepingDevice("alice", w.fakes.APNs.VoIPToken(7), 5070)
	_, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "caller_expect"),
		Remote:    w.swAddr,
		LocalIP:   callerIP(t),
		LocalPort: 5060,
		Service:   "alice",
		Keys:      map[string]string{"expect": "403"},
	})
	if err != nil {
		t.Fatalf("unlisted trunk: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(w.fakes.APNs.Pushes()); n != 0 {
		t.Fatalf("a stranger's INVITE sent %d pushes", n)
	}
}

func TestTrunkCallWakesPhone(t *testing.T) {
	w := newWorld(t)
	w.cfg.Trunks = []config.Trunk{{Name: "carrier", Sources: []string{callerIP(t) + "/32"}, Domain: domain}}
	w.restartWith()
	tok := w.fakes.APNs.VoIPToken(8)
	w.sleepingDevice("alice", tok, 5070)
	caller := peertest.StartSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "caller_answered"),
		Remote:    w.swAddr,
		LocalIP:   callerIP(t),
		LocalPort: 5060,
		Service:   "alice",
		Timeout:   40 * time.Second,
	})
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "trunk caller", caller)
	mustSucceed(t, "device", device)
}

func TestMessageWakesSleepingPhone(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(9)
	w.sleepingDevice("alice", tok, 5070)
	sender := w.call("alice", "sender_message", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	if ps[0].Header.Get("apns-push-type") == "voip" {
		t.Fatal("a MESSAGE woke the phone with a VoIP push (iOS would kill the app)")
	}
	device := w.wake("alice", tok, 5070, "uas_message")
	mustSucceed(t, "sender", sender)
	dev := mustSucceed(t, "device", device)
	if !strings.Contains(dev.Messages(), "hello from carol") {
		t.Fatal("message body did not reach the device")
	}
}

// metric reads one counter or gauge value by name and label value.
func metric(t *testing.T, w *world, name, label string) float64 {
	t.Helper()
	fams, err := w.sw.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == label }) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func TestMetricsMoveAndStayAggregate(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(10)
	w.sleepingDevice("alice", tok, 5070)
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)

	for _, c := range []struct {
		name, label string
		min         float64
	}{
		{"sipwake_sip_registers_total", "stored", 2},
		{"sipwake_calls_total", "delivered", 1},
		{"sipwake_call_push_latency_seconds", "", 1},
		{"sipwake_push_sent_total", "apns", 1},
		{"sipwake_store_records", "", 1},
		{"sipwake_bindings_stored_total", "", 1},
		// The woken phone's REGISTER changed nothing but the time.
		{"sipwake_binding_refreshes_unwritten_total", "", 1},
	} {
		if got := metric(t, w, c.name, c.label); got < c.min {
			t.Errorf("%s{%s} = %v, want >= %v", c.name, c.label, got, c.min)
		}
	}
	if got := metric(t, w, "sipwake_calls_parked", ""); got != 0 {
		t.Errorf("calls_parked = %v after the call ended", got)
	}
	w.eachLabel(func(metric, name, v string) {
		if strings.Contains(v, "alice") || strings.Contains(v, tok[:12]) || strings.Contains(v, "15550100") {
			t.Fatalf("metric %s carries a personal label %s=%s", metric, name, v)
		}
	})
}

// After a woken phone answers, the dialog keeps going through sipwake:
// INFO, UPDATE, a re-INVITE with its ACK, and the BYE, each along the
// Record-Route and answered end to end.
func TestInDialogRequestsFollowTheRoute(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.APNs.VoIPToken(11)
	w.sleepingDevice("alice", tok, 5070)
	caller := w.call("alice", "caller_dialog", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_dialog")
	mustSucceed(t, "caller", caller)
	dev := mustSucceed(t, "device", device)
	for _, m := range []string{"INFO ", "UPDATE ", "BYE "} {
		if !strings.Contains(dev.Messages(), m) {
			t.Fatalf("%s did not reach the device", m)
		}
	}
	if n := strings.Count(dev.Messages(), "INVITE sip:"); n != 2 {
		t.Fatalf("the device saw %d INVITEs, want the call and its re-INVITE", n)
	}
}

// A trunk's call forks inside sipwake to both of alice's phones: when one
// answers, the other's CANCEL says the call was completed elsewhere (RFC
// 3326), which Linphone shows instead of a missed call.
func TestTrunkCallAnsweredElsewhereSaysSo(t *testing.T) {
	w := newWorld(t)
	w.cfg.Trunks = []config.Trunk{{Name: "carrier", Sources: []string{callerIP(t) + "/32"}, Domain: domain}}
	w.restartWith()
	tokA, tokB := w.fakes.APNs.VoIPToken(12), w.fakes.APNs.VoIPToken(13)
	w.sleepingDevice("alice", tokA, 5070)
	w.sleepingDevice("alice", tokB, 5072)
	caller := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: peertest.Scenario(t, "caller_answered"), Remote: w.swAddr, LocalIP: callerIP(t), LocalPort: 5060,
		Service: "alice", Timeout: 40 * time.Second,
	})
	rang := w.answeredByOne(caller, tokA, tokB)
	if !strings.Contains(rang.Messages(), `Reason: SIP;cause=200;text="Call completed elsewhere"`) {
		t.Fatalf("the CANCEL does not say the call was answered elsewhere:\n%s", rang.Messages())
	}
}

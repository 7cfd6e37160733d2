package sip

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// The call state machine (call.go) driven event by event: a Server on
// 127.0.0.1 with a fake relay whose wake events the test fires by hand, a
// caller and devices as bare UDP sockets that say exactly what a step
// says. The end-to-end tests in internal/app run the same paths through
// Kamailio, sipp and the push fakes.

// fakeRelay holds bindings in memory and hands every Wake to the test.
// Methods a call never uses are left to the nil interface: calling one
// fails the test with a panic that names it.
type fakeRelay struct {
	Relay
	traces   *relay.Traces
	bindings []relay.Binding
	wakes    chan *fakeWake
}

// fakeWake is one Wake: the devices pushed, the events to fire, and how
// the call ended its wait.
type fakeWake struct {
	devices []relay.Binding
	on      relay.WakeEvents
	ended   chan endedWait
}

type endedWait struct {
	reason   string
	answered []relay.Binding
}

func (f *fakeRelay) Bindings(context.Context, relay.AOR) ([]relay.Binding, error) {
	return f.bindings, nil
}

func (f *fakeRelay) Wake(_ context.Context, _ relay.Call, devices []relay.Binding, _ time.Duration, on relay.WakeEvents) relay.EndWait {
	w := &fakeWake{devices: devices, on: on, ended: make(chan endedWait, 1)}
	f.wakes <- w
	var once sync.Once
	return func(reason string, answered ...relay.Binding) {
		once.Do(func() { w.ended <- endedWait{reason, answered} })
	}
}

func (f *fakeRelay) BindingID(aor relay.AOR, d relay.Device) store.ID {
	sum := sha256.Sum256([]byte(string(aor) + "\x00" + d.Token))
	return store.ID(sum[:store.IDSize])
}

func (f *fakeRelay) BindingIDs(b relay.Binding) []store.ID {
	return append([]store.ID{f.BindingID(b.AOR, b.Device)}, b.Replaced...)
}

func (f *fakeRelay) Same(a, b relay.Binding) bool {
	return f.BindingID(a.AOR, a.Device) == f.BindingID(b.AOR, b.Device)
}

func (f *fakeRelay) Node() string          { return "" }
func (f *fakeRelay) Traces() *relay.Traces { return f.traces }

// peer is a caller or a device: a UDP socket and what reached it.
type peer struct {
	t    *testing.T
	conn *net.UDPConn
	in   chan sip.Message
}

func newPeer(t *testing.T) *peer {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, conn: conn, in: make(chan sip.Message, 64)}
	t.Cleanup(func() { _ = conn.Close() })
	go func() {
		parser := sip.NewParser()
		buf := make([]byte, 65535)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if m, err := parser.ParseSIP(slices.Clone(buf[:n])); err == nil {
				p.in <- m
			}
		}
	}()
	return p
}

func (p *peer) addr() string { return p.conn.LocalAddr().String() }

func (p *peer) send(to string, m sip.Message) {
	p.t.Helper()
	ua, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.conn.WriteToUDP([]byte(m.String()), ua); err != nil {
		p.t.Fatal(err)
	}
}

// next is the next message matching keep; sipwake's retransmissions and
// anything else are passed over.
func (p *peer) next(keep func(sip.Message) bool) sip.Message {
	p.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-p.in:
			if keep(m) {
				return m
			}
		case <-deadline:
			p.t.Fatalf("peer %s: the message it waited for never came", p.addr())
			return nil
		}
	}
}

func request(method sip.RequestMethod) func(sip.Message) bool {
	return func(m sip.Message) bool {
		r, ok := m.(*sip.Request)
		return ok && r.Method == method
	}
}

func final(m sip.Message) bool {
	r, ok := m.(*sip.Response)
	return ok && r.StatusCode >= 200 && r.CSeq().MethodName == sip.INVITE
}

func ringing(m sip.Message) bool {
	r, ok := m.(*sip.Response)
	return ok && r.StatusCode == sip.StatusRinging
}

// answer replies to a request a device got, from the device.
func (p *peer) answer(req *sip.Request, code int, phrase string) {
	p.t.Helper()
	res := sip.NewResponseFromRequest(req, code, phrase, nil)
	if to := res.To(); to != nil && !to.Params.Has("tag") && code > 100 {
		to.Params.Add("tag", "dev")
	}
	p.send(req.Source(), res)
}

// harness is one call's world.
type harness struct {
	t       *testing.T
	srv     *Server
	relay   *fakeRelay
	metrics *Metrics
	caller  *peer
	devices []*peer
	invite  *sip.Request
	wake    *fakeWake
}

func newHarness(t *testing.T, devices int, wait time.Duration) *harness {
	t.Helper()
	h := &harness{t: t, relay: &fakeRelay{traces: relay.NewTraces(time.Now), wakes: make(chan *fakeWake, 4)}, caller: newPeer(t)}
	for i := range devices {
		d := newPeer(t)
		h.devices = append(h.devices, d)
		port := d.conn.LocalAddr().(*net.UDPAddr).Port
		h.relay.bindings = append(h.relay.bindings, relay.Binding{
			AOR:     "alice@example.test",
			Device:  relay.Device{Provider: "apns", Token: "token-" + string(rune('a'+i))},
			Contact: "sip:alice@127.0.0.1:" + strconv.Itoa(port),
			Flow:    relay.Flow{Transport: "udp", Source: d.addr()},
		})
	}
	h.metrics = NewMetrics(prometheus.NewRegistry())
	srv, err := New(Options{
		Listen:          Listen{UDP: "127.0.0.1:0"},
		Upstream:        Upstream{Host: "127.0.0.1", Port: 9, Transport: "udp"},
		UpstreamTimeout: time.Second,
		UserAgent:       "harness",
		CallWait:        wait,
		Ringing:         true,
		Trunks:          []Trunk{{Name: "t", Sources: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Domain: "example.test"}},
		Metrics:         h.metrics,
	}, h.relay, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		stopCtx, stopped := context.WithTimeout(context.Background(), 10*time.Second)
		defer stopped()
		if err := srv.Stop(stopCtx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	h.srv = srv
	return h
}

// call sends the caller's INVITE and waits for the push sipwake asks the
// relay for.
func (h *harness) call() {
	h.t.Helper()
	inv := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"})
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1",
		Port: h.caller.conn.LocalAddr().(*net.UDPAddr).Port, Params: sip.NewParams()}
	via.Params.Add("branch", sip.GenerateBranch())
	inv.AppendHeader(via)
	from := &sip.FromHeader{DisplayName: "Carol", Address: sip.Uri{Scheme: "sip", User: "+15550100", Host: "example.test"}, Params: sip.NewParams()}
	from.Params.Add("tag", "caller")
	inv.AppendHeader(from)
	inv.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "example.test"}, Params: sip.NewParams()})
	callID := sip.CallIDHeader("harness-" + sip.GenerateTagN(8))
	inv.AppendHeader(&callID)
	inv.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	maxFwd := sip.MaxForwardsHeader(70)
	inv.AppendHeader(&maxFwd)
	inv.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "carol", Host: "127.0.0.1", Port: via.Port}})
	inv.SetBody(nil)
	h.invite = inv
	h.caller.send(h.srv.Addr("udp"), inv)
	select {
	case h.wake = <-h.relay.wakes:
	case <-time.After(5 * time.Second):
		h.t.Fatal("sipwake never asked the relay to wake the devices")
	}
}

// cancel is the caller's CANCEL, with a Reason header when reason is set.
func (h *harness) cancel(reason string) {
	c := sip.NewRequest(sip.CANCEL, h.invite.Recipient)
	for _, name := range []string{"Via", "From", "To", "Call-ID"} {
		c.AppendHeader(sip.HeaderClone(h.invite.GetHeader(name)))
	}
	c.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.CANCEL})
	if reason != "" {
		c.AppendHeader(sip.NewHeader("Reason", reason))
	}
	c.SetBody(nil)
	h.caller.send(h.srv.Addr("udp"), c)
}

// ended is how the call ended its wait for the devices.
func (h *harness) ended() endedWait {
	h.t.Helper()
	select {
	case e := <-h.wake.ended:
		return e
	case <-time.After(5 * time.Second):
		h.t.Fatal("the call never ended its wait")
		return endedWait{}
	}
}

func (h *harness) binding(i int) relay.Binding { return h.relay.bindings[i] }

// wakeDevice reports device i awake and returns the INVITE it then gets.
func (h *harness) wakeDevice(i int) *sip.Request {
	h.t.Helper()
	h.wake.on.Awake(h.binding(i))
	return h.devices[i].next(request(sip.INVITE)).(*sip.Request)
}

// TestDeliveryEvents walks the call state machine through each event that
// drives it: what the caller hears last, how the wait for the devices ends
// (why, and who took the call), and the outcome counted.
func TestDeliveryEvents(t *testing.T) {
	const long = 10 * time.Second
	cases := []struct {
		name    string
		devices int
		wait    time.Duration
		// steps drive the call after its INVITE reached sipwake and the
		// devices were pushed.
		steps        func(h *harness)
		wantCode     int
		wantReason   string
		wantAnswered []int
		wantOutcome  string
	}{
		{
			name: "woken device answers", devices: 1, wait: long,
			steps: func(h *harness) {
				h.wake.on.Pushed()
				inv := h.wakeDevice(0)
				h.devices[0].answer(inv, sip.StatusRinging, "Ringing")
				h.devices[0].answer(inv, sip.StatusOK, "OK")
			},
			wantCode: sip.StatusOK, wantReason: relay.ReasonAnsweredElsewhere, wantAnswered: []int{0}, wantOutcome: callDelivered,
		},
		{
			name: "push fails", devices: 1, wait: long,
			steps:    func(h *harness) { h.wake.on.Failed(h.binding(0)) },
			wantCode: sip.StatusTemporarilyUnavailable, wantReason: relay.ReasonMissed, wantOutcome: callFailed,
		},
		{
			name: "no device wakes within the wait", devices: 1, wait: 200 * time.Millisecond,
			steps:    func(*harness) {},
			wantCode: sip.StatusTemporarilyUnavailable, wantReason: relay.ReasonMissed, wantOutcome: callTimedOut,
		},
		{
			name: "caller cancels while the device sleeps", devices: 1, wait: long,
			steps:    func(h *harness) { h.cancel("") },
			wantCode: sip.StatusRequestTerminated, wantReason: relay.ReasonMissed, wantOutcome: callCancelled,
		},
		{
			name: "caller cancels, answered elsewhere, while the device rings", devices: 1, wait: long,
			steps: func(h *harness) {
				inv := h.wakeDevice(0)
				h.devices[0].answer(inv, sip.StatusRinging, "Ringing")
				h.caller.next(func(m sip.Message) bool {
					return ringing(m) && m.(*sip.Response).GetHeader(ProgressHeader) == nil // the device's own 180
				})
				h.cancel(`SIP;cause=200;text="Call completed elsewhere"`)
				c := h.devices[0].next(request(sip.CANCEL)).(*sip.Request)
				if r := c.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "cause=200") {
					h.t.Errorf("the device's CANCEL says %v, want the caller's cause=200", r)
				}
				h.devices[0].answer(c, sip.StatusOK, "OK")
				h.devices[0].answer(inv, sip.StatusRequestTerminated, "Request Terminated")
			},
			wantCode: sip.StatusRequestTerminated, wantReason: relay.ReasonAnsweredElsewhere, wantOutcome: callCancelled,
		},
		{
			name: "woken device declines", devices: 1, wait: long,
			steps: func(h *harness) {
				inv := h.wakeDevice(0)
				h.devices[0].answer(inv, sip.StatusBusyHere, "Busy Here")
			},
			wantCode: sip.StatusBusyHere, wantReason: relay.ReasonMissed, wantOutcome: callRejected,
		},
		{
			name: "one device busy, the other answers", devices: 2, wait: long,
			steps: func(h *harness) {
				busy := h.wakeDevice(0)
				h.devices[0].answer(busy, sip.StatusBusyHere, "Busy Here")
				inv := h.wakeDevice(1)
				h.devices[1].answer(inv, sip.StatusOK, "OK")
			},
			wantCode: sip.StatusOK, wantReason: relay.ReasonAnsweredElsewhere, wantAnswered: []int{1}, wantOutcome: callDelivered,
		},
		{
			name: "a busy device's answer waits for the one still pushed", devices: 2, wait: long,
			steps: func(h *harness) {
				busy := h.wakeDevice(0)
				h.devices[0].answer(busy, sip.StatusBusyHere, "Busy Here")
				// Still waiting for device 1: no final answer yet.
				h.caller.expectNone(final)
				h.wake.on.Failed(h.binding(1))
			},
			wantCode: sip.StatusBusyHere, wantReason: relay.ReasonMissed, wantOutcome: callRejected,
		},
		{
			name: "the second answer wins over a ringing branch, which is cancelled", devices: 2, wait: long,
			steps: func(h *harness) {
				slow := h.wakeDevice(0)
				h.devices[0].answer(slow, sip.StatusRinging, "Ringing")
				inv := h.wakeDevice(1)
				h.devices[1].answer(inv, sip.StatusOK, "OK")
				c := h.devices[0].next(request(sip.CANCEL)).(*sip.Request)
				if r := c.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "cause=200") {
					h.t.Errorf("the losing branch's CANCEL says %v, want cause=200 (completed elsewhere)", r)
				}
			},
			wantCode: sip.StatusOK, wantReason: relay.ReasonAnsweredElsewhere, wantAnswered: []int{1}, wantOutcome: callDelivered,
		},
		{
			name: "a device woken twice gets one INVITE", devices: 1, wait: long,
			steps: func(h *harness) {
				h.wake.on.Awake(h.binding(0))
				inv := h.wakeDevice(0)
				h.devices[0].answer(inv, sip.StatusOK, "OK")
				h.devices[0].expectNone(func(m sip.Message) bool {
					r, ok := m.(*sip.Request)
					return ok && r.Method == sip.INVITE && branchOf(r) != branchOf(inv)
				})
			},
			wantCode: sip.StatusOK, wantReason: relay.ReasonAnsweredElsewhere, wantAnswered: []int{0}, wantOutcome: callDelivered,
		},
		{
			name: "drain runs out", devices: 1, wait: long,
			steps: func(h *harness) {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				defer cancel()
				if err := h.srv.Drain(ctx); err == nil {
					h.t.Error("Drain returned nil with a call still parked")
				}
			},
			wantCode: sip.StatusServiceUnavailable, wantReason: relay.ReasonMissed, wantOutcome: callFailed,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each case has its own server and peers; some wait out CallWait
			h := newHarness(t, tc.devices, tc.wait)
			h.call()
			if len(h.wake.devices) != tc.devices {
				t.Fatalf("pushed %d devices, want %d", len(h.wake.devices), tc.devices)
			}
			tc.steps(h)
			res := h.caller.next(final).(*sip.Response)
			if res.StatusCode != tc.wantCode {
				t.Errorf("caller got %d %s, want %d", res.StatusCode, res.Reason, tc.wantCode)
			}
			e := h.ended()
			if e.reason != tc.wantReason {
				t.Errorf("wait ended as %q, want %q", e.reason, tc.wantReason)
			}
			var answered []int
			for _, b := range e.answered {
				answered = append(answered, slices.IndexFunc(h.relay.bindings, func(x relay.Binding) bool { return h.relay.Same(x, b) }))
			}
			if !slices.Equal(answered, tc.wantAnswered) {
				t.Errorf("answered by devices %v, want %v", answered, tc.wantAnswered)
			}
			var counted dto.Metric
			if err := h.metrics.calls.WithLabelValues(tc.wantOutcome).Write(&counted); err != nil {
				t.Fatal(err)
			}
			if n := counted.GetCounter().GetValue(); n != 1 {
				t.Errorf("calls_total{outcome=%q} = %v, want 1", tc.wantOutcome, n)
			}
		})
	}
}

// expectNone checks that nothing matching bad reaches the peer for a
// while; what else arrives is kept for next.
func (p *peer) expectNone(bad func(sip.Message) bool) {
	p.t.Helper()
	var kept []sip.Message
	defer func() {
		for _, m := range kept {
			p.in <- m
		}
	}()
	for {
		select {
		case m := <-p.in:
			if bad(m) {
				p.t.Fatalf("peer %s got:\n%s", p.addr(), m)
			}
			kept = append(kept, m)
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}

// TestDeliveryRangAfterEnd: a phone a VoIP push made ring, waking after
// its call ended, gets the INVITE its push announced and then the CANCEL
// with why the call ended, so its app ends the CallKit call.
func TestDeliveryRangAfterEnd(t *testing.T) {
	h := newHarness(t, 1, 200*time.Millisecond)
	h.call()
	res := h.caller.next(final).(*sip.Response)
	if res.StatusCode != sip.StatusTemporarilyUnavailable {
		t.Fatalf("caller got %d, want 480 after the wait", res.StatusCode)
	}
	if e := h.ended(); e.reason != relay.ReasonMissed {
		t.Fatalf("wait ended as %q, want missed", e.reason)
	}
	h.wake.on.Rang(h.binding(0))
	dev := h.devices[0]
	inv := dev.next(request(sip.INVITE)).(*sip.Request)
	if inv.CallID().Value() != h.invite.CallID().Value() {
		t.Errorf("the late INVITE has Call-ID %q, want the call's %q", inv.CallID().Value(), h.invite.CallID().Value())
	}
	dev.answer(inv, sip.StatusRinging, "Ringing")
	c := dev.next(request(sip.CANCEL)).(*sip.Request)
	if c.GetHeader("Reason") != nil {
		t.Errorf("a missed call's CANCEL carries %q; only a call answered elsewhere says so", c.GetHeader("Reason").Value())
	}
}

func branchOf(r *sip.Request) string {
	b, _ := r.Via().Params.Get("branch")
	return b
}

// TestDeliveryCancelRacesEnd: the caller's CANCEL arrives as the call ends
// for another reason (here a failed push). sipgo runs the CANCEL handler
// holding the transaction's lock, and ending the call answers on that
// transaction: the two must not wait for each other. The caller hears one
// final answer and the server stops.
func TestDeliveryCancelRacesEnd(t *testing.T) {
	for range 30 {
		h := newHarness(t, 1, 10*time.Second)
		h.call()
		go h.wake.on.Failed(h.binding(0))
		h.cancel("")
		res := h.caller.next(final).(*sip.Response)
		if res.StatusCode != sip.StatusTemporarilyUnavailable && res.StatusCode != sip.StatusRequestTerminated {
			t.Errorf("caller got %d, want 480 or 487", res.StatusCode)
		}
		h.ended()
	}
}

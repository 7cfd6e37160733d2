package handover_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// scriptedRegistrar answers REGISTERs from a script, for what Kamailio
// cannot be made to do on cue (423, 503): each answer is a status code,
// and the script's last entry repeats.
type scriptedRegistrar struct {
	mu      sync.Mutex
	script  []int
	seen    []*sip.Request
	minExp  int
	granted int
}

func (r *scriptedRegistrar) handle(req *sip.Request, tx sip.ServerTransaction) {
	r.mu.Lock()
	r.seen = append(r.seen, req.Clone())
	code := r.script[0]
	if len(r.script) > 1 {
		r.script = r.script[1:]
	}
	r.mu.Unlock()
	reason := map[int]string{200: "OK", 423: "Interval Too Brief", 503: "Service Unavailable"}[code]
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	switch code {
	case 200:
		exp, _ := strconv.Atoi(req.GetHeader("Expires").Value())
		if exp > r.granted {
			exp = r.granted
		}
		c := req.Contact().Clone()
		c.Params = sip.NewParams()
		c.Params.Add("expires", strconv.Itoa(exp))
		res.AppendHeader(c)
	case 423:
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(r.minExp)))
	}
	_ = tx.Respond(res)
}

func (r *scriptedRegistrar) requests() []*sip.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*sip.Request(nil), r.seen...)
}

func startScripted(t *testing.T, addr string, r *scriptedRegistrar) {
	t.Helper()
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnRegister(r.handle)
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeUDP(conn) }()
	t.Cleanup(func() { _ = ua.Close(); _ = conn.Close() })
}

// memAccounts is an in-memory Accounts for policy tests.
type memAccounts struct {
	mu sync.Mutex
	m  map[store.ID]relay.Binding
}

func (m *memAccounts) AccountID(app, id string) store.ID {
	var s store.ID
	copy(s[:], app+"/"+id)
	return s
}

func (m *memAccounts) Binding(_ context.Context, id store.ID) (relay.Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.m[id]
	if !ok {
		return relay.Binding{}, store.ErrNotFound
	}
	return b, nil
}

func (m *memAccounts) RegisterAccount(_ context.Context, b relay.Binding, ttl time.Duration) (relay.Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b.ExpiresAt = time.Now().Add(ttl)
	m.m[m.AccountID(b.Account.App, b.Account.ID)] = b
	return b, nil
}

func (m *memAccounts) UpdateAccount(_ context.Context, b relay.Binding) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.m[m.AccountID(b.Account.App, b.Account.ID)] = b
	return nil
}

func (m *memAccounts) EraseAccount(_ context.Context, id store.ID, _ string) (relay.Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.m[id]
	if !ok {
		return relay.Binding{}, store.ErrNotFound
	}
	delete(m.m, id)
	return b, nil
}

// startPolicy runs registrations of accts with opts, a fixed contact and
// short retries (300 ms to 1 s), until the test ends.
func startPolicy(t *testing.T, accts *memAccounts, opts handover.Options) *handover.Registrations {
	t.Helper()
	opts.ContactFor = func(id store.ID, tr string) string { return "sip:sw-x@127.0.0.1:5060;transport=" + tr }
	opts.RetryMin, opts.RetryMax = 300*time.Millisecond, time.Second
	k, err := handover.New(accts, nil, opts, handovertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Stop(ctx) })
	return k
}

// policyAccount is account "a" of app "app": alice at the registrar at
// addr, asking for expires seconds.
func policyAccount(addr string, expires int) relay.Binding {
	return relay.Binding{AOR: "alice@example.test", Device: relay.Device{Provider: "fcm", Token: "tok"},
		Account: &relay.Account{ID: "a", App: "app", Registrar: addr, Username: "alice", Password: "p", Expires: expires}}
}

func TestIntervalTooBriefAndBackoff(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out real SIP back-offs and a 3 s registration (3 s); skipped with -short")
	}
	t.Parallel()
	addr := peertest.Addr(t, 1, 5060)
	reg := &scriptedRegistrar{script: []int{423, 200, 503, 503, 200}, minExp: 3, granted: 3}
	startScripted(t, addr, reg)
	accts := &memAccounts{m: map[store.ID]relay.Binding{}}
	k := startPolicy(t, accts, handover.Options{Timeout: 2 * time.Second})
	ctx := context.Background()
	saved, _, err := k.Hand(ctx, policyAccount(addr, 1), time.Hour)
	if err != nil {
		t.Fatalf("Hand: %v", err)
	}
	if saved.Upstream.Expires != 3 || saved.Account.Expires != 3 {
		t.Fatalf("423 not followed: granted %d asked %d", saved.Upstream.Expires, saved.Account.Expires)
	}
	id := accts.AccountID("app", "a")

	// The refresh (at ~2.4 s) meets two 503s, backs off, then succeeds.
	var sawFailure bool
	handovertest.Eventually(t, 6*time.Second, "refresh through two 503s", func() bool {
		st, _ := k.Status(id)
		if st.Phase == handover.PhaseFailed && st.LastError == "registrar failed (503 Service Unavailable)" {
			sawFailure = true
		}
		return len(reg.requests()) >= 5 && st.Phase == handover.PhaseRegistered
	})
	if !sawFailure {
		t.Fatal("the 503s never showed as phase failed with the registrar's status")
	}
	reqs := reg.requests()
	callID := reqs[0].CallID().Value()
	for i, r := range reqs {
		if r.CallID().Value() != callID {
			t.Fatalf("request %d changed Call-ID", i)
		}
		if i > 0 && r.CSeq().SeqNo <= reqs[i-1].CSeq().SeqNo {
			t.Fatalf("CSeq did not increase: %d then %d", reqs[i-1].CSeq().SeqNo, r.CSeq().SeqNo)
		}
		if !strings.Contains(r.Via().Params.String(), "rport") {
			t.Fatalf("request %d Via without rport: %s", i, r.Via())
		}
	}
	if got := reqs[0].GetHeader("Expires").Value(); got != "1" {
		t.Fatalf("first REGISTER asked %s", got)
	}
	if got := reqs[1].GetHeader("Expires").Value(); got != "3" {
		t.Fatalf("REGISTER after 423 asked %s, want Min-Expires 3", got)
	}
	gap := reqs[3].CSeq().SeqNo - reqs[2].CSeq().SeqNo
	if gap != 1 {
		t.Fatalf("retries skipped CSeqs: %d", gap)
	}
}

package app_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/relay"
)

const (
	token   = "a3f1c0ffee00deadbeef0123456789abcdef0123456789abcdef0123456789ab"
	pnParam = "ABCDE12345.org.example.phone.voip"
)

func apnsParams(tok string) string {
	return ";pn-provider=apns;pn-prid=" + tok + ";pn-param=" + pnParam
}

// finalResponses are the final answers sipp received, status lines only.
func finalResponses(res *peertest.SippResult) []string {
	var out []string
	for _, m := range res.Received() {
		line, _, _ := strings.Cut(m, "\n")
		if strings.HasPrefix(line, "SIP/2.0 ") && !strings.HasPrefix(line, "SIP/2.0 100") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// phone is user's phone n on port: the Contact URI parameters given, and
// an instance id of its own.
func (w *world) phone(user, params string, port, n int) *clientPhone {
	return &clientPhone{w: w, user: user, port: port,
		contact: "<sip:" + user + "@" + w.deviceIP + ":" + strconv.Itoa(port) + ";transport=udp" + params +
			`>;+sip.instance="<urn:uuid:` + instanceID(n) + `>"`}
}

func lastReceived(res *peertest.SippResult) string {
	r := res.Received()
	if len(r) == 0 {
		return ""
	}
	return r[len(r)-1]
}

func TestRegisterWithPushThroughSipwake(t *testing.T) {
	w := newWorld(t)

	res, err := w.register("alice", apnsParams(token), 600, 5070)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, res.Messages())
	}
	got := finalResponses(res)
	if len(got) != 2 || !strings.HasPrefix(got[0], "SIP/2.0 401") || !strings.HasPrefix(got[1], "SIP/2.0 200") {
		t.Fatalf("device saw %q, want the registrar's 401 then 200", got)
	}
	ok := lastReceived(res)
	if !strings.Contains(ok, `Feature-Caps: *;+sip.pns="apns"`) {
		t.Fatalf("200 lacks Feature-Caps:\n%s", ok)
	}

	locs := w.locations("alice")
	if len(locs) != 1 {
		t.Fatalf("Kamailio holds %d bindings for alice, want 1: %+v", len(locs), locs)
	}
	if !locs[0].OnPath(w.swAddr) {
		t.Fatalf("sipwake %s not on the binding's path: %+v", w.swAddr, locs[0].Path)
	}
	if locs[0].Params["pn-prid"] != token {
		t.Fatalf("registrar contact lost pn-prid: %s", locs[0].Contact)
	}

	bs := w.bindings("alice")
	if len(bs) != 1 || w.records() != 1 {
		t.Fatalf("sipwake holds %d bindings (%d records), want 1", len(bs), w.records())
	}
	b := bs[0]
	if b.Device.Token != token || b.Device.Provider != "apns" || b.Device.Param != pnParam {
		t.Fatalf("stored device %+v", b.Device)
	}
	if b.Upstream.Expires <= 0 || b.Upstream.Expires > 600 || !b.Upstream.Path {
		t.Fatalf("upstream state %+v", b.Upstream)
	}
	if d := time.Until(b.ExpiresAt); d < w.cfg.Store.RecordTTL-time.Minute || d > w.cfg.Store.RecordTTL {
		t.Fatalf("record expires in %v, want the TTL %v", d, w.cfg.Store.RecordTTL)
	}

	// The woken app comes back from another port with a new Call-ID: still
	// one binding, found by its pn-* parameters.
	if res, err := w.register("alice", apnsParams(token), 600, 5072); err != nil {
		t.Fatalf("re-register: %v\n%s", err, res.Messages())
	}
	if bs := w.bindings("alice"); len(bs) != 1 || !strings.Contains(bs[0].Flow.Source, ":5072") {
		t.Fatalf("after re-register from a new address: %+v", bs)
	}

	// A second phone (another token, its own +sip.instance) of the same AOR
	// is its own binding.
	w.phone("alice", apnsParams("ff"+token[2:]), 5074, 1).register()
	if n := len(w.bindings("alice")); n != 2 {
		t.Fatalf("two devices, %d bindings", n)
	}
	// The first phone, which sends no instance, comes back with a new token
	// (its contact user and app the same): still the same phone.
	renewed := "ee" + token[2:]
	if res, err := w.register("alice", apnsParams(renewed), 600, 5072); err != nil {
		t.Fatalf("new token: %v\n%s", err, res.Messages())
	}
	bs = w.bindings("alice")
	if len(bs) != 2 || !slices.ContainsFunc(bs, func(b relay.Binding) bool { return b.Device.Token == renewed }) {
		t.Fatalf("after a new token: %+v", bs)
	}
	token := renewed

	// Expires: 0 erases that device at sipwake and at the registrar.
	if res, err := w.register("alice", apnsParams(token), 0, 5072); err != nil {
		t.Fatalf("unregister: %v\n%s", err, res.Messages())
	}
	bs = w.bindings("alice")
	if len(bs) != 1 || bs[0].Device.Token == token {
		t.Fatalf("after Expires: 0: %+v", bs)
	}
	for _, l := range w.locations("alice") {
		if l.Params["pn-prid"] == token && strings.Contains(l.Contact, ":5072") {
			t.Fatalf("registrar still holds the unregistered contact %s", l.Contact)
		}
	}
}

func TestRegisterContactMode(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.SIP.UpstreamMode = "contact" })
	res, err := w.register("bob", apnsParams(token), 600, 5070)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, res.Messages())
	}
	ok := lastReceived(res)
	if !strings.Contains(ok, `+sip.pns="apns"`) || !strings.Contains(ok, "pn-prid="+token) {
		t.Fatalf("200 to the device should carry Feature-Caps and its own Contact:\n%s", ok)
	}
	locs := w.locations("bob")
	if len(locs) != 1 {
		t.Fatalf("registrar holds %+v", locs)
	}
	c := locs[0].Contact
	if !strings.Contains(c, "sip:sw-") || !strings.Contains(c, "@"+w.swAddr) || strings.Contains(c, token) {
		t.Fatalf("registrar contact %q should be sipwake's opaque binding contact", c)
	}
	if len(locs[0].Path) != 0 {
		t.Fatalf("contact mode added a Path: %v", locs[0].Path)
	}
	if len(w.bindings("bob")) != 1 {
		t.Fatal("binding not stored")
	}
	if res, err := w.register("bob", apnsParams(token), 0, 5071); err != nil {
		t.Fatalf("unregister: %v\n%s", err, res.Messages())
	}
	if len(w.locations("bob")) != 0 || w.records() != 0 {
		t.Fatalf("Expires: 0 left %d registrar bindings, %d records", len(w.locations("bob")), w.records())
	}
}

func TestRegisterPushParameterCases(t *testing.T) {
	w := newWorld(t)

	res := w.expect("alice", ";pn-provider=bogus;pn-prid=abc;pn-param=x", 555)
	if !strings.Contains(lastReceived(res), "Push Notification Service Not Supported") {
		t.Fatalf("555 reason:\n%s", lastReceived(res))
	}
	w.expect("alice", ";pn-provider=apns;pn-param=x", 400)
	if w.records() != 0 {
		t.Fatal("a refused REGISTER stored a record")
	}

	// A bare pn-provider asks what sipwake supports and enables nothing.
	res, err := w.register("alice", ";pn-provider", 600, 5070)
	if err != nil {
		t.Fatalf("query: %v\n%s", err, res.Messages())
	}
	ok := lastReceived(res)
	for _, p := range []string{"apns", "fcm"} {
		if !strings.Contains(ok, fmt.Sprintf(`+sip.pns="%s"`, p)) {
			t.Fatalf("query answer lacks %s:\n%s", p, ok)
		}
	}
	if w.records() != 0 {
		t.Fatal("capability query stored a record")
	}

	// Without pn-* the REGISTER passes through untouched.
	res, err = w.register("bob", "", 600, 5071)
	if err != nil {
		t.Fatalf("plain: %v\n%s", err, res.Messages())
	}
	if strings.Contains(lastReceived(res), "Feature-Caps") || w.records() != 0 {
		t.Fatal("plain REGISTER got push treatment")
	}
	if len(w.locations("bob")) != 1 {
		t.Fatal("plain REGISTER did not reach the registrar")
	}

	// A refresh that drops the pn-* parameters turns push off: erased.
	if res, err := w.register("alice", apnsParams(token), 600, 5072); err != nil {
		t.Fatalf("register: %v\n%s", err, res.Messages())
	}
	if w.records() != 1 {
		t.Fatal("binding not stored")
	}
	if res, err := w.register("alice", "", 600, 5072); err != nil {
		t.Fatalf("refresh without pn: %v\n%s", err, res.Messages())
	}
	if w.records() != 0 {
		t.Fatal("refresh without pn-* parameters kept the record")
	}

	// A wrong password: the registrar refuses, nothing is stored.
	res, err = peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "register_auth_params"),
		Remote:    w.swAddr,
		LocalIP:   w.deviceIP,
		LocalPort: 5073,
		Injection: peertest.RegisterInjection(peertest.SippUser{User: "alice", Domain: domain, Password: "wrong"}),
		Keys:      map[string]string{"expires": "600", "contact_params": apnsParams(token)},
	})
	if err == nil {
		t.Fatalf("wrong password registered:\n%s", res.Messages())
	}
	if w.records() != 0 {
		t.Fatal("a REGISTER the registrar refused stored a record")
	}
}

func TestRestartKeepsBindings(t *testing.T) {
	w := newWorld(t)
	if res, err := w.register("alice", apnsParams(token), 600, 5070); err != nil {
		t.Fatalf("register: %v\n%s", err, res.Messages())
	}
	before := w.bindings("alice")
	w.restartWith()
	after := w.bindings("alice")
	if len(after) != 1 || !after[0].ExpiresAt.Equal(before[0].ExpiresAt) || after[0].Device != before[0].Device {
		t.Fatalf("restart changed bindings: before %+v after %+v", before, after)
	}
}

func TestUnreachableRegistrarAnswersQuickly(t *testing.T) {
	w := newWorld(t, func(c *config.Config) {
		c.SIP.Upstream = "sip:" + peertest.Addr(t, 9, 5060)
		c.SIP.UpstreamTimeout = 500 * time.Millisecond
	})
	start := time.Now()
	w.expect("alice", apnsParams(token), 408)
	if w.records() != 0 {
		t.Fatal("stored a record without the registrar's 200")
	}
	t.Logf("408 after %v", time.Since(start))
}

func TestMalformedSIPNeverCrashes(t *testing.T) {
	w := newWorld(t)
	from := w.deviceIP
	for _, junk := range []string{
		"\x00\x01garbage\r\n\r\n",
		"REGISTER sip:example.test SIP/2.0\r\n\r\n",
		"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP " + from + ":5099;branch=z9hG4bK1\r\nContent-Length: 99999\r\n\r\n",
	} {
		sendRaw(t, from, w.swAddr, junk, 200*time.Millisecond)
	}
	register := func(branch, to, contact string) string {
		return strings.Join([]string{
			"REGISTER sip:example.test SIP/2.0",
			"Via: SIP/2.0/UDP " + from + ":5099;rport;branch=z9hG4bK-" + branch,
			"From: <sip:alice@example.test>;tag=1",
			"To: " + to,
			"Call-ID: " + branch + "@test",
			"CSeq: 1 REGISTER",
			"Contact: " + contact,
			"Max-Forwards: 70",
			"Content-Length: 0",
			"", "",
		}, "\r\n")
	}
	// Unparseable: dropped on UDP (the parser refuses it), no answer.
	if ans := sendRaw(t, from, w.swAddr, register("bad-contact", "<sip:alice@example.test>", "<sip:alice@"+from+";pn-provider=apns"), 300*time.Millisecond); ans != "" {
		t.Fatalf("unparseable REGISTER answered %q", ans)
	}
	// Parseable but meaningless: a clear 400.
	for _, tc := range []struct{ name, msg string }{
		{"no pn-prid", register("no-prid", "<sip:alice@example.test>", "<sip:alice@"+from+";pn-provider=apns>")},
		{"no AOR", register("no-aor", "<sip:example.test>", "<sip:alice@"+from+";pn-provider=apns;pn-prid=x>")},
		{"two devices", register("two", "<sip:alice@example.test>", "<sip:a@"+from+";pn-provider=apns;pn-prid=x>, <sip:b@"+from+";pn-provider=apns;pn-prid=y>")},
	} {
		if ans := sendRaw(t, from, w.swAddr, tc.msg, 2*time.Second); !strings.HasPrefix(ans, "SIP/2.0 400 Bad Request: ") {
			t.Fatalf("%s: answered %q, want 400 with a reason", tc.name, ans)
		}
	}
	// Still serving, and nothing was stored.
	if res, err := w.register("alice", apnsParams(token), 600, 5070); err != nil {
		t.Fatalf("register after junk: %v\n%s", err, res.Messages())
	}
	if w.records() != 1 {
		t.Fatalf("%d records, want 1", w.records())
	}
}

func TestSweeperErasesExpiredRecords(t *testing.T) {
	clock := &fakeClock{}
	clock.set(time.Now())
	w := newWorld(t, func(c *config.Config) { c.Store.SweepInterval = time.Second })
	w.restartWith(app.WithClock(clock.now))
	if res, err := w.register("alice", apnsParams(token), 600, 5070); err != nil {
		t.Fatalf("register: %v\n%s", err, res.Messages())
	}
	clock.set(clock.now().Add(w.cfg.Store.RecordTTL - time.Minute))
	time.Sleep(1500 * time.Millisecond)
	if w.records() != 1 {
		t.Fatal("record erased before its TTL")
	}
	clock.set(clock.now().Add(2 * time.Minute))
	deadline := time.Now().Add(10 * time.Second)
	for w.records() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("expired record still stored")
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), "binding expired and erased") }, "expiry logged")
	// The un-register reached the registrar (which challenges it: a
	// SIP-native device's password is never held by sipwake).
	waitFor(t, func() bool { return strings.Contains(w.logs.String(), "upstream un-register of expired binding") }, "upstream un-register attempted")
}

// The registrar's 200 lists every contact of the AOR; with a handful of
// devices (pn-* parameters and a Path each) it outgrows 1,300 bytes and
// must still reach the device over UDP. (sipgo refuses such datagrams by
// default: once an AOR had enough contacts, its devices never got a 200.)
func TestLargeRegistrarAnswerReachesDeviceOverUDP(t *testing.T) {
	w := newWorld(t)
	for i := range 8 {
		tok := fmt.Sprintf("%02x%s", i, token[2:])
		res := w.phone("alice", apnsParams(tok), 5070+i, i).register()
		if i == 7 && len(lastReceived(res)) < 1300 {
			t.Fatalf("the 200 is only %d bytes: the test does not exercise a large answer", len(lastReceived(res)))
		}
	}
	if n := len(w.bindings("alice")); n != 8 {
		t.Fatalf("%d bindings, want 8", n)
	}
}

// A registrar (or a proxy of its own) that already pushes says so in its
// 2xx; sipwake then passes the REGISTER through and keeps nothing, so the
// phone is never pushed twice.
func TestUpstreamThatPushesIsPassedThrough(t *testing.T) {
	w := newWorldWith(t, peertest.KamailioOptions{PushProvider: "apns"})
	res, err := w.register("alice", apnsParams(token), 600, 5070)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, res.Messages())
	}
	ok := lastReceived(res)
	if n := strings.Count(ok, "+sip.pns="); n != 1 {
		t.Fatalf("the 200 carries %d push announcements, want the registrar's one:\n%s", n, ok)
	}
	if w.records() != 0 {
		t.Fatal("sipwake kept a binding although upstream pushes")
	}
	if len(w.locations("alice")) != 1 {
		t.Fatal("the REGISTER did not reach the registrar")
	}
}

// A phone refreshes as RFC 3261 §10.2.4 says, in one Call-ID with a rising
// CSeq; sipwake does not write refreshes that change nothing but the time
// (store.refresh_staleness), so the CSeq it holds is the first one. An
// operator's erasure must still remove the binding at the registrar (an
// open one, which honours an un-register): sipwake un-registers under a
// Call-ID of its own, which no stale CSeq can get refused.
func TestErasureUnregistersAfterUnwrittenRefreshes(t *testing.T) {
	w := newWorldWith(t, peertest.KamailioOptions{Open: true}, withAdmin(t))
	from := w.deviceIP
	contact := "<sip:alice@" + from + ":5099" + apnsParams(token) + ">"
	for cseq := 1; cseq <= 3; cseq++ {
		msg := strings.Join([]string{
			"REGISTER sip:" + domain + " SIP/2.0",
			"Via: SIP/2.0/UDP " + from + ":5099;rport;branch=z9hG4bK-refresh-" + strconv.Itoa(cseq),
			"From: <sip:alice@" + domain + ">;tag=refresh",
			"To: <sip:alice@" + domain + ">",
			"Call-ID: one-boot-cycle@" + from,
			"CSeq: " + strconv.Itoa(cseq) + " REGISTER",
			"Contact: " + contact,
			"Expires: 600",
			"Max-Forwards: 70",
			"Content-Length: 0",
			"", "",
		}, "\r\n")
		if ans := sendRaw(t, from+":5099", w.swAddr, msg, 2*time.Second); !strings.HasPrefix(ans, "SIP/2.0 200 ") {
			t.Fatalf("REGISTER CSeq %d answered %q", cseq, ans)
		}
	}
	bs := w.bindings("alice")
	if len(bs) != 1 || bs[0].Upstream.CSeq != 1 {
		t.Fatalf("stored %+v; want one binding still holding CSeq 1 (refreshes 2 and 3 changed nothing)", bs)
	}
	if len(w.locations("alice")) != 1 {
		t.Fatalf("registrar holds %+v, want alice's one contact", w.locations("alice"))
	}
	if code, body := w.adminDo("POST", "/admin/aors/alice@"+domain+"/erase"); code != 200 || !strings.Contains(body, `"erased": 1`) {
		t.Fatalf("erase: %d %s", code, body)
	}
	waitFor(t, func() bool { return len(w.locations("alice")) == 0 }, "the registrar's binding removed by the un-register")
}

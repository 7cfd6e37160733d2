package push_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/fcm"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

type env struct {
	*pushtest.Fakes
	d   *push.Dispatcher
	log *peertest.Buffer
	reg *prometheus.Registry
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{Fakes: pushtest.NewFakes(t), log: &peertest.Buffer{}, reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewJSONHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := push.New(e.Config, log, e.reg, push.WithBackoff(10*time.Millisecond, 100*time.Millisecond), push.WithFCM(fcm.New))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	e.d = d
	return e
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func callMsg() push.Message {
	return push.Message{Kind: push.KindCall, CallID: "a84b4c76e66710@pc33.example.com",
		CallerName: "Alice Example", CallerNumber: "+4930123456", Expiration: 30 * time.Second}
}

func payload(t *testing.T, p pushtest.Push) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(p.Payload, &m); err != nil {
		t.Fatalf("payload %s: %v", p.Payload, err)
	}
	return m
}

func TestAPNsCall(t *testing.T) {
	e := newEnv(t)
	tok := e.APNs.VoIPToken(1)
	before := time.Now()
	res := e.d.Send(ctxFor(t, 5*time.Second), e.APNs.Target(tok), callMsg())
	if res.Outcome != push.Delivered || res.Attempts != 1 || res.EraseRecord {
		t.Fatalf("result %+v", res)
	}
	ps := e.APNs.Accepted()
	if len(ps) != 1 {
		t.Fatalf("fake accepted %d pushes, want 1", len(ps))
	}
	h := ps[0].Header
	for k, want := range map[string]string{
		"apns-push-type":   "voip",
		"apns-topic":       e.APNs.BundleID + ".voip",
		"apns-priority":    "10",
		"apns-collapse-id": "call-a84b4c76e66710@pc33.example.com",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	exp, err := strconv.ParseInt(h.Get("apns-expiration"), 10, 64)
	if err != nil {
		t.Fatalf("apns-expiration %q", h.Get("apns-expiration"))
	}
	if d := time.Unix(exp, 0).Sub(before); d < 29*time.Second || d > 32*time.Second {
		t.Errorf("apns-expiration %v after send, want ~30s", d)
	}
	p := payload(t, ps[0])
	for k, want := range map[string]string{"kind": "call", "call_id": "a84b4c76e66710@pc33.example.com",
		"caller_name": "Alice Example", "caller_number": "+4930123456"} {
		if p[k] != want {
			t.Errorf("payload %s = %v, want %q", k, p[k], want)
		}
	}
	if p["push_id"] == "" || p["push_id"] != h.Get("apns-id") {
		t.Errorf("push_id %v, apns-id %q: want equal and set", p["push_id"], h.Get("apns-id"))
	}
	if got := sentTotal(t, e.reg, "apns", "delivered"); got != 1 {
		t.Errorf("sent_total{apns,delivered} = %v", got)
	}
}

func sentTotal(t *testing.T, reg *prometheus.Registry, provider, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != "sipwake_push_sent_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) != 2 {
				t.Errorf("sent_total has labels %v, want provider and outcome only", labels)
			}
			if labels["provider"] == provider && labels["outcome"] == outcome {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func TestAPNsKinds(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name     string
		m        push.Message
		pushType string
		priority string
		check    func(t *testing.T, p map[string]any)
	}{
		{"cancel missed", push.Message{Kind: push.KindCancel, CallID: "c1", CallerName: "Alice", Reason: push.ReasonMissed},
			"alert", "10", func(t *testing.T, p map[string]any) {
				if p["reason"] != "missed" || p["aps"].(map[string]any)["alert"] == nil {
					t.Errorf("payload %v", p)
				}
			}},
		{"cancel answered elsewhere", push.Message{Kind: push.KindCancel, CallID: "c1", Reason: push.ReasonAnsweredElsewhere},
			"background", "5", func(t *testing.T, p map[string]any) {
				if p["reason"] != "answered-elsewhere" {
					t.Errorf("payload %v", p)
				}
			}},
		{"register", push.Message{Kind: push.KindRegister}, "background", "5", func(t *testing.T, p map[string]any) {
			if p["aps"].(map[string]any)["content-available"] != 1.0 {
				t.Errorf("payload %v", p)
			}
		}},
		{"expiry warning", push.Message{Kind: push.KindExpiryWarning}, "alert", "10", func(t *testing.T, p map[string]any) {
			if p["aps"].(map[string]any)["alert"] == nil {
				t.Errorf("payload %v", p)
			}
		}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A phone with both tokens: everything but a call goes to the
			// remote-notification one (TestAPNsMatrix has the rest).
			tgt, toks := iphone(e.APNs, 100+i, "voip", "remote")
			if res := e.d.Send(ctxFor(t, 5*time.Second), tgt, c.m); res.Outcome != push.Delivered {
				t.Fatalf("result %+v", res)
			}
			if n := len(e.APNs.PushesTo(toks["voip"])); n != 0 {
				t.Fatalf("%d pushes to the PushKit token", n)
			}
			ps := e.APNs.PushesTo(toks["remote"])
			if len(ps) != 1 {
				t.Fatalf("%d pushes", len(ps))
			}
			h := ps[0].Header
			if h.Get("apns-push-type") == "voip" || strings.HasSuffix(h.Get("apns-topic"), ".voip") {
				t.Fatalf("non-call push sent as voip: %v", h)
			}
			if h.Get("apns-push-type") != c.pushType || h.Get("apns-priority") != c.priority || h.Get("apns-topic") != e.APNs.BundleID {
				t.Errorf("headers type=%q priority=%q topic=%q", h.Get("apns-push-type"), h.Get("apns-priority"), h.Get("apns-topic"))
			}
			c.check(t, payload(t, ps[0]))
		})
	}
}

func TestAPNsCertificateAuth(t *testing.T) {
	f := pushtest.NewAPNs(t)
	d, err := push.New(push.Config{Apps: []push.AppConfig{f.CertApp("ios-cert")}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if res := d.Send(ctxFor(t, 5*time.Second), f.Target(f.VoIPToken(1)), callMsg()); res.Outcome != push.Delivered {
		t.Fatalf("result %+v (pushes %+v)", res, f.Pushes())
	}
	if h := f.Pushes()[0].Header; h.Get("Authorization") != "" {
		t.Errorf("certificate auth sent a JWT too")
	}
}

// push links no Firebase SDK: an FCM app needs the constructor from
// WithFCM, and a renewed Dispatcher keeps it.
func TestFCMClientComesFromWithFCM(t *testing.T) {
	f := pushtest.NewFCM(t)
	cfg := push.Config{Apps: []push.AppConfig{f.App("android")}}
	if _, err := push.New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "WithFCM") {
		t.Fatalf("New without WithFCM: %v", err)
	}
	d, err := push.New(cfg, nil, nil, push.WithFCM(fcm.New))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fresh, err := d.Renew(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if res := fresh.Send(ctxFor(t, 5*time.Second), f.Target(f.Token(1)), callMsg()); res.Outcome != push.Delivered {
		t.Fatalf("result %+v", res)
	}
}

func TestFCMKinds(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		m        push.Message
		priority string
		ttl      string
	}{
		{callMsg(), "high", "30s"},
		{push.Message{Kind: push.KindCancel, CallID: "c1", Reason: push.ReasonMissed}, "high", ""},
		{push.Message{Kind: push.KindRegister}, "normal", ""},
		{push.Message{Kind: push.KindExpiryWarning, Expiration: time.Hour}, "normal", "3600s"},
	}
	for i, c := range cases {
		t.Run(c.m.Kind.String(), func(t *testing.T) {
			tok := e.FCM.Token(i)
			if res := e.d.Send(ctxFor(t, 5*time.Second), e.FCM.Target(tok), c.m); res.Outcome != push.Delivered || res.Attempts != 1 {
				t.Fatalf("result %+v", res)
			}
			ps := e.FCM.PushesTo(tok)
			if len(ps) != 1 || !ps[0].Accepted() {
				t.Fatalf("pushes %+v", ps)
			}
			var m struct {
				Token        string
				Data         map[string]string
				Notification any
				Android      struct{ Priority, TTL string }
			}
			if err := json.Unmarshal(ps[0].Payload, &m); err != nil {
				t.Fatal(err)
			}
			if m.Token != tok || m.Notification != nil || m.Data["kind"] != c.m.Kind.String() {
				t.Errorf("message %s", ps[0].Payload)
			}
			if m.Android.Priority != c.priority || m.Android.TTL != c.ttl {
				t.Errorf("android priority %q ttl %q, want %q %q", m.Android.Priority, m.Android.TTL, c.priority, c.ttl)
			}
			if c.m.Kind == push.KindCall && (m.Data["caller_name"] != "Alice Example" ||
				m.Data["caller_number"] != "+4930123456" || m.Data["call_id"] != c.m.CallID || m.Data["push_id"] == "") {
				t.Errorf("call data %v", m.Data)
			}
		})
	}
	if n := e.FCM.TokenRequests(); n != 1 {
		t.Errorf("%d OAuth token requests, want 1 (token reused)", n)
	}
}

func TestOutcomes(t *testing.T) {
	t.Parallel() // waits out deadlines; overlaps the other tests that do
	type fake interface {
		Program(string, pushtest.Behavior)
		PushesTo(string) []pushtest.Push
		WaitFor(context.Context, int) ([]pushtest.Push, error)
	}
	cases := []struct {
		name       string
		b          pushtest.Behavior
		outcome    push.Outcome
		reason     string
		attempts   int
		erase      bool
		acceptedTo int
	}{
		{"apns 410", pushtest.Behavior{Status: 410, Reason: "Unregistered"}, push.TokenDead, "Unregistered", 1, true, 0},
		{"apns 500 then 200", pushtest.Behavior{Status: 500, Reason: "InternalServerError", Times: 1}, push.Delivered, "", 2, false, 1},
		{"apns 429 twice", pushtest.Behavior{Status: 429, Reason: "TooManyRequests", Times: 2}, push.Delivered, "", 3, false, 1},
		{"apns 503 always", pushtest.Behavior{Status: 503, Reason: "ServiceUnavailable"}, push.Failed, "ServiceUnavailable", -1, false, 0},
		{"apns 403 topic", pushtest.Behavior{Status: 400, Reason: "TopicDisallowed"}, push.ConfigError, "TopicDisallowed", 1, false, 0},
		{"fcm UNREGISTERED", pushtest.Behavior{Reason: "UNREGISTERED"}, push.TokenDead, "UNREGISTERED", 1, true, 0},
		{"fcm INTERNAL then ok", pushtest.Behavior{Reason: "INTERNAL", Times: 1}, push.Delivered, "", 2, false, 1},
		{"fcm UNAVAILABLE then ok", pushtest.Behavior{Reason: "UNAVAILABLE", Times: 1}, push.Delivered, "", 2, false, 1},
		{"fcm QUOTA_EXCEEDED then ok", pushtest.Behavior{Reason: "QUOTA_EXCEEDED", Times: 2}, push.Delivered, "", 3, false, 1},
		{"fcm THIRD_PARTY_AUTH_ERROR", pushtest.Behavior{Reason: "THIRD_PARTY_AUTH_ERROR"}, push.ConfigError, "THIRD_PARTY_AUTH_ERROR", 1, false, 0},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each case has its own fakes
			e := newEnv(t)
			var f fake
			var tgt push.Target
			if strings.HasPrefix(c.name, "apns") {
				tgt, f = e.APNs.Target(e.APNs.VoIPToken(i)), e.APNs
			} else {
				tgt, f = e.FCM.Target(e.FCM.Token(i)), e.FCM
			}
			f.Program(tgt.Token, c.b)
			res := e.d.Send(ctxFor(t, time.Second), tgt, callMsg())
			if res.Outcome != c.outcome || res.Reason != c.reason || res.EraseRecord != c.erase {
				t.Fatalf("result %+v, want %v %q erase=%v", res, c.outcome, c.reason, c.erase)
			}
			if c.attempts > 0 && res.Attempts != c.attempts {
				t.Errorf("attempts %d, want %d", res.Attempts, c.attempts)
			}
			if c.attempts < 0 && res.Attempts < 2 {
				t.Errorf("attempts %d, want retries", res.Attempts)
			}
			// A request the deadline cut after it left is counted; the
			// fake's handler may record it only after Send has returned.
			_, _ = f.WaitFor(ctxFor(t, 2*time.Second), res.Attempts)
			ps := f.PushesTo(tgt.Token)
			accepted := 0
			for _, p := range ps {
				if p.Accepted() {
					accepted++
				}
			}
			if accepted != c.acceptedTo {
				t.Errorf("fake accepted %d pushes, want %d", accepted, c.acceptedTo)
			}
			if len(ps) != res.Attempts {
				t.Errorf("fake saw %d requests, result says %d attempts", len(ps), res.Attempts)
			}
			// Retries carry the same push id, so a duplicate could be dropped.
			if strings.HasPrefix(c.name, "apns") && len(ps) > 1 && ps[0].Header.Get("apns-id") != ps[1].Header.Get("apns-id") {
				t.Errorf("retry changed apns-id")
			}
		})
	}
}

// TestRejectedTokens: a rejected token is erased only when the app's other
// tokens deliver; when most are rejected, the records are kept and the
// mismatch logged loudly.
func TestRejectedTokens(t *testing.T) {
	for _, prov := range []string{"apns", "fcm"} {
		t.Run(prov, func(t *testing.T) {
			e := newEnv(t)
			target := func(i int) push.Target {
				if prov == "apns" {
					return e.APNs.Target(e.APNs.VoIPToken(i))
				}
				return e.FCM.Target(e.FCM.Token(i))
			}
			reject := func(tok string) {
				if prov == "apns" {
					e.APNs.Program(tok, pushtest.Behavior{Status: 400, Reason: "BadDeviceToken"})
				} else {
					e.FCM.Program(tok, pushtest.Behavior{Reason: "INVALID_ARGUMENT"})
				}
			}
			ctx := ctxFor(t, 5*time.Second)
			// First ever push rejected: nothing proves the config right, keep.
			reject(target(0).Token)
			if res := e.d.Send(ctx, target(0), callMsg()); res.Outcome != push.TokenRejected || res.EraseRecord {
				t.Fatalf("lone rejection: %+v", res)
			}
			for i := 1; i <= 3; i++ {
				if res := e.d.Send(ctx, target(i), callMsg()); res.Outcome != push.Delivered {
					t.Fatalf("good token %d: %+v", i, res)
				}
			}
			reject(target(10).Token)
			res := e.d.Send(ctx, target(10), callMsg())
			if res.Outcome != push.TokenRejected || !res.EraseRecord || res.Attempts != 1 {
				t.Fatalf("rejection among delivering tokens: %+v, want erase", res)
			}
			// Now most tokens are rejected: a mismatch, keep the records.
			var last push.Result
			for i := 20; i < 26; i++ {
				reject(target(i).Token)
				last = e.d.Send(ctx, target(i), callMsg())
			}
			if last.Outcome != push.TokenRejected || last.EraseRecord {
				t.Fatalf("mass rejection: %+v, want keep", last)
			}
			if !strings.Contains(e.log.String(), "most recent tokens of this app are rejected") {
				t.Errorf("mismatch not logged loudly:\n%s", e.log.String())
			}
		})
	}
}

// TestUnreachableServiceCountsNoAttempt: tries that never put a request on
// the wire (the service is down) are retried until the deadline but are not
// attempts the service saw.
func TestUnreachableServiceCountsNoAttempt(t *testing.T) {
	t.Parallel() // waits out deadlines; overlaps the other tests that do
	e := newEnv(t)
	e.APNs.Close()
	res := e.d.Send(ctxFor(t, 300*time.Millisecond), e.APNs.Target(e.APNs.VoIPToken(8)), callMsg())
	if res.Outcome != push.Failed || res.Reason != "transport" || res.Attempts != 0 || res.EraseRecord {
		t.Fatalf("result %+v, want failed with no attempt", res)
	}
}

func TestStallReturnsBeforeDeadline(t *testing.T) {
	t.Parallel() // waits out deadlines; overlaps the other tests that do
	e := newEnv(t)
	for _, tgt := range []push.Target{e.APNs.Target(e.APNs.VoIPToken(7)), e.FCM.Target(e.FCM.Token(7))} {
		t.Run(tgt.Provider, func(t *testing.T) {
			if tgt.Provider == push.ProviderAPNs {
				e.APNs.Program(tgt.Token, pushtest.Behavior{Stall: true})
			} else {
				e.FCM.Program(tgt.Token, pushtest.Behavior{Stall: true})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
			defer cancel()
			res := e.d.Send(ctx, tgt, callMsg())
			if ctx.Err() != nil {
				t.Errorf("Send returned after its context ended")
			}
			if res.Outcome != push.Failed || res.Reason != "Timeout" || res.Attempts != 1 || res.EraseRecord {
				t.Fatalf("result %+v, want one unanswered attempt", res)
			}
			var got int
			if tgt.Provider == push.ProviderAPNs {
				got = len(e.APNs.PushesTo(tgt.Token))
			} else {
				got = len(e.FCM.PushesTo(tgt.Token))
			}
			if got != 1 {
				t.Errorf("fake got %d requests, want 1 (no retry of a push that may have arrived)", got)
			}
		})
	}
}

func TestBadCredentials(t *testing.T) {
	f := pushtest.NewFakes(t)
	dir := t.TempDir()
	ios := f.APNs.App("ios")
	ios.APNs.KeyFile = filepath.Join(dir, "other.p8")
	if err := pushtest.WriteP8Key(ios.APNs.KeyFile); err != nil {
		t.Fatal(err)
	}
	android := f.FCM.App("android")
	android.FCM.CredentialsFile = filepath.Join(dir, "other-sa.json")
	if err := f.FCM.WriteForeignServiceAccount(android.FCM.CredentialsFile); err != nil {
		t.Fatal(err)
	}
	var logs peertest.Buffer
	reg := prometheus.NewRegistry()
	d, err := push.New(push.Config{Apps: []push.AppConfig{ios, android}},
		slog.New(slog.NewJSONHandler(&logs, nil)), reg, push.WithFCM(fcm.New))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := range 3 {
		ctx := ctxFor(t, 5*time.Second)
		if res := d.Send(ctx, f.APNs.Target(f.APNs.VoIPToken(i)), callMsg()); res.Outcome != push.ConfigError ||
			res.Reason != "InvalidProviderToken" || res.Attempts != 1 || res.EraseRecord {
			t.Fatalf("apns: %+v", res)
		}
		if res := d.Send(ctx, f.FCM.Target(f.FCM.Token(i)), callMsg()); res.Outcome != push.ConfigError ||
			res.Reason != "OAUTH:invalid_grant" || res.Attempts != 0 || res.EraseRecord {
			t.Fatalf("fcm: %+v", res)
		}
	}
	if n := len(f.APNs.Pushes()); n != 3 {
		t.Errorf("fake APNs got %d requests, want 3 (no retries)", n)
	}
	if n := f.FCM.TokenRequests(); n != 3 {
		t.Errorf("fake FCM token endpoint got %d requests, want 3 (no retries)", n)
	}
	if n := strings.Count(logs.String(), "configuration error"); n != 2 {
		t.Errorf("config error logged %d times, want once per app:\n%s", n, logs.String())
	}
	if got := sentTotal(t, reg, "apns", "config_error"); got != 3 {
		t.Errorf("config_error count %v", got)
	}
}

func TestUnknownApp(t *testing.T) {
	e := newEnv(t)
	res := e.d.Send(ctxFor(t, time.Second), push.Target{Provider: "apns", Token: pushtest.APNsToken(1), Param: "TEAM.org.other.voip"}, callMsg())
	if res.Outcome != push.ConfigError || res.Reason != "UnknownApp" || res.Attempts != 0 {
		t.Fatalf("%+v", res)
	}
	res = e.d.Send(ctxFor(t, time.Second), push.Target{Provider: "webpush", Token: "x"}, callMsg())
	if res.Outcome != push.ConfigError {
		t.Fatalf("%+v", res)
	}
}

// TestTokenNeverLogged runs every outcome with debug logging and checks no
// full token reaches the log.
func TestTokenNeverLogged(t *testing.T) {
	t.Parallel() // waits out deadlines; overlaps the other tests that do
	e := newEnv(t)
	var toks []string
	behaviors := []pushtest.Behavior{{}, {Status: 410, Reason: "Unregistered"}, {Status: 400, Reason: "BadDeviceToken"},
		{Status: 500, Times: 1}, {Status: 403, Reason: "InvalidProviderToken"}, {Stall: true}}
	fb := []pushtest.Behavior{{}, {Reason: "UNREGISTERED"}, {Reason: "INVALID_ARGUMENT"}, {Reason: "INTERNAL", Times: 1},
		{Reason: "THIRD_PARTY_AUTH_ERROR"}, {Stall: true}}
	for i := range behaviors {
		at, ft := e.APNs.VoIPToken(500+i), e.FCM.Token(500+i)
		e.APNs.Program(at, behaviors[i])
		e.FCM.Program(ft, fb[i])
		toks = append(toks, at, ft)
		e.d.Send(ctxFor(t, 300*time.Millisecond), e.APNs.Target(at), callMsg())
		e.d.Send(ctxFor(t, 300*time.Millisecond), e.FCM.Target(ft), callMsg())
	}
	e.d.Send(ctxFor(t, time.Second), push.Target{Provider: "apns", Token: toks[0], Param: "nope"}, callMsg())
	var out bytes.Buffer
	cfg := push.Config{Apps: []push.AppConfig{e.APNs.App("ios")}}
	_ = push.RunTestPush(ctxFor(t, time.Second), cfg, "apns", toks[0], "ios", push.KindRegister, &out, slog.New(slog.NewJSONHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})))
	logs := e.log.String() + out.String()
	if !strings.Contains(logs, push.MaskToken(toks[0])) {
		t.Fatalf("masked token not in logs; is logging on?\n%s", logs)
	}
	for _, tok := range toks {
		if strings.Contains(logs, tok) || strings.Contains(logs, tok[:20]) {
			t.Fatalf("token %s leaked into logs:\n%s", push.MaskToken(tok), logs)
		}
	}
}

func TestMaskToken(t *testing.T) {
	for in, want := range map[string]string{"": "******", "abc": "******", "abcdef": "******", "0123456789abcdef": "...abcdef"} {
		if got := push.MaskToken(in); got != want {
			t.Errorf("MaskToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRunTestPush(t *testing.T) {
	f := pushtest.NewFakes(t)
	var out bytes.Buffer
	tok := f.APNs.VoIPToken(3)
	if err := push.RunTestPush(ctxFor(t, 5*time.Second), f.Config, "apns", tok, "ios", push.KindCall, &out, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "outcome=delivered") || strings.Contains(out.String(), tok) {
		t.Errorf("output %q", out.String())
	}
	f.FCM.Program(f.FCM.Token(3), pushtest.Behavior{Reason: "UNREGISTERED"})
	out.Reset()
	err := push.RunTestPush(ctxFor(t, 5*time.Second), f.Config, "fcm", pushtest.FCMToken(3), "", push.KindRegister, &out, nil, push.WithFCM(fcm.New))
	if err == nil || !strings.Contains(out.String(), "outcome=token_dead") {
		t.Errorf("err %v, output %q", err, out.String())
	}
	if err := push.RunTestPush(ctxFor(t, time.Second), f.Config, "apns", tok, "nope", push.KindCall, &out, nil); err == nil {
		t.Error("unknown app accepted")
	}
}

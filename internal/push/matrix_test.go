package push_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/fcm"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// iphone is a device as liblinphone registers it on iOS: upper-case hex
// tokens tagged with their service (src/core/app/ios-app-delegate.mm,
// stringFromToken), pn-param "<team>.<bundle>.<services>" with Linphone's
// placeholder team (src/push-notification/push-notification-config.cpp,
// generatePushParams). The fake issued the tokens for their topics.
func iphone(f *pushtest.APNs, i int, services ...string) (push.Target, map[string]string) {
	toks := map[string]string{}
	var prid []string
	for _, sv := range services {
		tok := strings.ToUpper(f.VoIPToken(i))
		if sv == "remote" {
			tok = strings.ToUpper(f.RemoteToken(i))
			f.BindToken(tok, f.BundleID)
		} else {
			f.BindToken(tok, f.BundleID+".voip")
		}
		toks[sv] = tok
		prid = append(prid, tok+":"+sv)
	}
	return push.Target{Provider: "apns", Token: strings.Join(prid, "&"),
		Param: "ABCD1234." + f.BundleID + "." + strings.Join(services, "&")}, toks
}

// The matrix of docs/PUSH.md, against a fake APNs that refuses what Apple
// refuses: each kind goes to the token and topic APNs takes for it, and a
// device without such a token gets nothing (no refused push).
func TestAPNsMatrix(t *testing.T) {
	call := callMsg()
	missed := push.Message{Kind: push.KindCancel, CallID: call.CallID, CallerName: "Alice Example", Reason: push.ReasonMissed}
	elsewhere := push.Message{Kind: push.KindCancel, CallID: call.CallID, Reason: push.ReasonAnsweredElsewhere}
	message := push.Message{Kind: push.KindMessage, CallID: "m1@example.org", CallerName: "Alice Example", CallerURI: "sip:alice@example.org"}
	refresh := push.Message{Kind: push.KindRegister, Expiration: 2 * time.Minute}
	warning := push.Message{Kind: push.KindExpiryWarning, Expiration: time.Hour}
	type want struct{ service, pushType, priority string } // service "" = nothing sent
	cases := []struct {
		name     string
		services []string
		m        push.Message
		want     want
	}{
		{"call, both tokens", []string{"voip", "remote"}, call, want{"voip", "voip", "10"}},
		{"call, PushKit only", []string{"voip"}, call, want{"voip", "voip", "10"}},
		{"call, remote only", []string{"remote"}, call, want{"remote", "alert", "10"}},
		{"missed, both", []string{"voip", "remote"}, missed, want{"remote", "alert", "10"}},
		{"missed, PushKit only", []string{"voip"}, missed, want{}},
		{"answered elsewhere, both", []string{"remote", "voip"}, elsewhere, want{"remote", "background", "5"}},
		{"answered elsewhere, PushKit only", []string{"voip"}, elsewhere, want{}},
		{"message, both", []string{"voip", "remote"}, message, want{"remote", "alert", "10"}},
		{"message, PushKit only", []string{"voip"}, message, want{}},
		{"message, remote only", []string{"remote"}, message, want{"remote", "alert", "10"}},
		{"refresh, both", []string{"voip", "remote"}, refresh, want{"remote", "background", "5"}},
		{"refresh, PushKit only", []string{"voip"}, refresh, want{}},
		{"expiry warning, both", []string{"voip", "remote"}, warning, want{"remote", "alert", "10"}},
		{"expiry warning, PushKit only", []string{"voip"}, warning, want{}},
	}
	e := newEnv(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tgt, toks := iphone(e.APNs, 200+i, c.services...)
			res := e.d.Send(ctxFor(t, 5*time.Second), tgt, c.m)
			if c.want.service == "" {
				if res.Outcome != push.NotSent || res.EraseRecord {
					t.Fatalf("result %+v, want not_sent", res)
				}
				for _, tok := range toks {
					if n := len(e.APNs.PushesTo(tok)); n != 0 {
						t.Fatalf("%d pushes reached APNs", n)
					}
				}
				return
			}
			if res.Outcome != push.Delivered {
				t.Fatalf("result %+v, want delivered", res)
			}
			ps := e.APNs.PushesTo(toks[c.want.service])
			if len(ps) != 1 || !ps[0].Accepted() {
				t.Fatalf("pushes to the %s token: %+v", c.want.service, ps)
			}
			h := ps[0].Header
			topic := e.APNs.BundleID
			if c.want.service == "voip" {
				topic += ".voip"
			}
			if h.Get("apns-topic") != topic || h.Get("apns-push-type") != c.want.pushType || h.Get("apns-priority") != c.want.priority {
				t.Errorf("topic %q type %q priority %q, want %q %q %q", h.Get("apns-topic"), h.Get("apns-push-type"),
					h.Get("apns-priority"), topic, c.want.pushType, c.want.priority)
			}
		})
	}
	if got := counter(t, e, "sipwake_push_sent_total", "not_sent"); got != 5 {
		t.Errorf("sipwake_push_sent_total{outcome=not_sent} = %v, want 5", got)
	}
}

// What a stock Linphone app reads (Flexisip apple-request.cc and
// firebase-v1-request.cc): call-id in aps for a VoIP push and at the top
// for an alert, loc-key from the Contact's pn-*-str.
func TestLinphonePayloadFields(t *testing.T) {
	e := newEnv(t)
	tgt, toks := iphone(e.APNs, 300, "voip", "remote")
	tgt.Instance = "<urn:uuid:4f1c0f2e-6f7a-4b8e-9d39-0b6c4b0e7d1a>"
	tgt.Alerts = push.Alerts{MsgStr: "MY_MSG"}
	call := callMsg()
	call.CallerURI = "sip:+4930123456@example.org"
	for _, m := range []push.Message{call, {Kind: push.KindMessage, CallID: "m1@example.org", CallerName: "Alice Example"}} {
		if res := e.d.Send(ctxFor(t, 5*time.Second), tgt, m); res.Outcome != push.Delivered {
			t.Fatalf("%s: %+v", m.Kind, res)
		}
	}
	voip := payload(t, e.APNs.PushesTo(toks["voip"])[0])
	aps := voip["aps"].(map[string]any)
	if aps["call-id"] != call.CallID || aps["loc-key"] != "IC_MSG" || aps["uuid"] != tgt.Instance || aps["send-time"] == nil {
		t.Errorf("VoIP aps %v", aps)
	}
	if voip["from-uri"] != call.CallerURI || voip["display-name"] != "Alice Example" || voip["pn_ttl"] != 30.0 ||
		voip["call_id"] != call.CallID || voip["kind"] != "call" {
		t.Errorf("VoIP payload %v", voip)
	}
	msg := payload(t, e.APNs.PushesTo(toks["remote"])[0])
	alert := msg["aps"].(map[string]any)["alert"].(map[string]any)
	if msg["call-id"] != "m1@example.org" || alert["loc-key"] != "MY_MSG" || msg["aps"].(map[string]any)["mutable-content"] != 1.0 {
		t.Errorf("MESSAGE payload %v", msg)
	}

	tok := e.FCM.Token(300)
	if res := e.d.Send(ctxFor(t, 5*time.Second), e.FCM.Target(tok), call); res.Outcome != push.Delivered {
		t.Fatalf("fcm: %+v", res)
	}
	var m struct{ Data map[string]string }
	if err := json.Unmarshal(e.FCM.PushesTo(tok)[0].Payload, &m); err != nil {
		t.Fatal(err)
	}
	if m.Data["call-id"] != call.CallID || m.Data["call_id"] != call.CallID || m.Data["from-uri"] != call.CallerURI ||
		m.Data["loc-key"] != "IC_MSG" || m.Data["display-name"] != "Alice Example" {
		t.Errorf("FCM data %v", m.Data)
	}
}

// A caller's name of any size never fails a push: the fakes refuse more
// than 5 KB (VoIP), 4 KB (alert) or 4 KB of FCM data, as the services do.
func TestHugeCallerNameIsCut(t *testing.T) {
	e := newEnv(t)
	tgt, toks := iphone(e.APNs, 400, "voip", "remote")
	huge := push.Message{Kind: push.KindCall, CallID: "c1@example.org", CallerName: strings.Repeat("Ä", 6000),
		CallerURI: "sip:" + strings.Repeat("x", 6000) + "@example.org", Expiration: 30 * time.Second}
	missed := huge
	missed.Kind, missed.Reason = push.KindCancel, push.ReasonMissed
	for _, m := range []push.Message{huge, missed} {
		if res := e.d.Send(ctxFor(t, 5*time.Second), tgt, m); res.Outcome != push.Delivered {
			t.Fatalf("%s with a huge name: %+v", m.Kind, res)
		}
	}
	for sv, limit := range map[string]int{"voip": 5120, "remote": 4096} {
		p := e.APNs.PushesTo(toks[sv])[0]
		if len(p.Payload) > limit || !strings.Contains(string(p.Payload), "c1@example.org") {
			t.Errorf("%s payload %d bytes (limit %d), call id kept: %v", sv, len(p.Payload), limit, strings.Contains(string(p.Payload), "c1@example.org"))
		}
	}
	tok := e.FCM.Token(400)
	if res := e.d.Send(ctxFor(t, 5*time.Second), e.FCM.Target(tok), huge); res.Outcome != push.Delivered {
		t.Fatalf("fcm with a huge name: %+v", res)
	}
}

// apns.dev tokens were issued by the sandbox: they go there, through the
// same app, and the production service never sees them.
func TestSandboxProviderGoesToSandbox(t *testing.T) {
	f := pushtest.NewAPNs(t)
	sandbox := f.StartSandbox(t)
	d, err := push.New(push.Config{Apps: []push.AppConfig{f.App("ios")}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	tok := strings.ToUpper(pushtest.APNsToken(500))
	sandbox.BindToken(tok, sandbox.BundleID+".voip")
	tgt := push.Target{Provider: "apns.dev", Token: tok + ":voip", Param: "ABCD1234." + f.BundleID + ".voip"}
	if res := d.Send(ctxFor(t, 5*time.Second), tgt, callMsg()); res.Outcome != push.Delivered {
		t.Fatalf("apns.dev: %+v", res)
	}
	if len(sandbox.Accepted()) != 1 || len(f.Pushes()) != 0 {
		t.Fatalf("sandbox got %d, production %d pushes", len(sandbox.Accepted()), len(f.Pushes()))
	}
	// The same token as pn-provider=apns reaches production, which did
	// not issue it: BadDeviceToken, the environment mismatch.
	tgt.Provider = "apns"
	if res := d.Send(ctxFor(t, 5*time.Second), tgt, callMsg()); res.Outcome != push.TokenRejected || res.Reason != "BadDeviceToken" {
		t.Fatalf("sandbox token to production: %+v", res)
	}
}

// A token pushed under a topic it was not issued for is sipwake's mistake,
// never the device's: the record is kept, however many other tokens of
// the app deliver.
func TestWrongTopicNeverErases(t *testing.T) {
	e := newEnv(t)
	for i := range 4 {
		if res := e.d.Send(ctxFor(t, 5*time.Second), e.APNs.Target(e.APNs.VoIPToken(600+i)), callMsg()); res.Outcome != push.Delivered {
			t.Fatalf("good token: %+v", res)
		}
	}
	// A remote token that claims to be a PushKit one: its call push goes
	// under <bundle>.voip and APNs refuses the topic.
	tok := strings.ToUpper(e.APNs.RemoteToken(610))
	e.APNs.BindToken(tok, e.APNs.BundleID)
	res := e.d.Send(ctxFor(t, 5*time.Second), push.Target{Provider: "apns", Token: tok + ":voip", Param: e.APNs.Param()}, callMsg())
	if res.Outcome != push.WrongTopic || res.Reason != "DeviceTokenNotForTopic" || res.EraseRecord {
		t.Fatalf("result %+v, want wrong_topic, kept", res)
	}
}

// Linphone Android sends the sender id (the project number) as pn-param;
// with one FCM app it is found even before sender_id is set, and the log
// says once what to set.
func TestFCMUnknownSenderIDWithOneApp(t *testing.T) {
	f := pushtest.NewFCM(t)
	app := f.App("android")
	app.FCM.SenderID = ""
	logs := &peertest.Buffer{}
	d, err := push.New(push.Config{Apps: []push.AppConfig{app}}, slog.New(slog.NewTextHandler(logs, nil)), nil, push.WithFCM(fcm.New))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	for i := range 2 {
		tgt := push.Target{Provider: "fcm", Token: f.Token(700 + i), Param: f.SenderID}
		if res := d.Send(ctxFor(t, 5*time.Second), tgt, callMsg()); res.Outcome != push.Delivered {
			t.Fatalf("result %+v", res)
		}
	}
	if n := strings.Count(logs.String(), "Set its sender_id"); n != 1 || !strings.Contains(logs.String(), f.SenderID) {
		t.Fatalf("sender_id hint logged %d times:\n%s", n, logs.String())
	}
	// A token of another sender is refused by FCM.
	other := pushtest.FCMToken(799)
	f.BindToken(other, "999999999999")
	if res := d.Send(ctxFor(t, 5*time.Second), push.Target{Provider: "fcm", Token: other, Param: f.SenderID}, callMsg()); res.Outcome != push.TokenRejected || res.Reason != "SENDER_ID_MISMATCH" {
		t.Fatalf("foreign token: %+v", res)
	}
}

func counter(t *testing.T, e *env, name, label string) float64 {
	t.Helper()
	fams, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

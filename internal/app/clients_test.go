package app_test

// Real clients' REGISTERs, byte for byte: what liblinphone (Linphone for iOS
// and Android) puts in its Contact, and what Flexisip, the proxy Linphone is
// built against, makes of it. Sources (BelledonneCommunications/liblinphone
// @ 9896e6c9, flexisip @ b3cf98c0):
//
//   - liblinphone src/account/account.cpp: the Contact is the account's
//     contact URI with, in this order, pn-prid, pn-provider, pn-param,
//     pn-silent, pn-timeout and, only when remote push is allowed, pn-msg-str,
//     pn-call-str, pn-groupchat-str, pn-call-snd, pn-msg-snd.
//   - liblinphone src/push-notification/push-notification-config.cpp:
//     the defaults (pn-silent=1, pn-timeout=0, IM_MSG, IC_MSG, GC_MSG,
//     notes_of_the_optimistic.caf, msg.caf, team id "ABCD1234") and
//     generatePushParams: pn-prid "<voip>&<remote>", pn-param
//     "<team>.<bundle>.voip&remote" (or one service).
//   - liblinphone src/core/app/ios-app-delegate.mm: each token is %02X
//     (upper-case hex) with ":voip" or ":remote" appended; it reads only
//     aps["call-id"] of a PushKit push.
//   - liblinphone wrappers/java/.../AndroidPlatformHelper.java and
//     firebase/FirebaseMessaging.java: pn-provider=fcm, pn-prid the FCM
//     token, pn-param the sender id; it reads only data["call-id"].
//   - flexisip src/pushnotification/rfc8599-push-params.cc and
//     apple/apple-request.cc: apns.dev goes to the sandbox, a PushKit token
//     gets VoIP pushes only (so no MESSAGE or missed-call push to it), the
//     VoIP payload carries aps.call-id and aps.loc-key (pn-call-str), the
//     alert payload aps.alert.loc-key (pn-msg-str) and mutable-content.

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// linphoneTeam is the team id liblinphone puts in pn-param when the app
// never sets one (PushNotificationConfig's constructor); linphone-iphone
// never does.
const linphoneTeam = "ABCD1234"

// iosTokens returns an iPhone's PushKit and remote-notification tokens as
// liblinphone sends them, upper-case hex without the ":voip"/":remote"
// suffix, bound in f (production or sandbox) to the topics Apple issues
// them for.
func iosTokens(f *pushtest.APNs, i int) (voip, remote string) {
	voip, remote = strings.ToUpper(f.VoIPToken(i)), strings.ToUpper(f.RemoteToken(i))
	f.BindToken(voip, f.BundleID+".voip")
	f.BindToken(remote, f.BundleID)
	return voip, remote
}

// linphoneIOSParams are the Contact URI parameters liblinphone generates on
// iOS (account.cpp, generatePushParams), without the leading ';'. An empty
// remote token is a PushKit-only app (remote push not allowed, the
// liblinphone default): pn-param ends in .voip and the pn-*-str/-snd
// parameters are left out.
func linphoneIOSParams(provider, bundle, voip, remote string) string {
	prid, services := voip+":voip", "voip"
	if remote != "" {
		prid += "&" + remote + ":remote"
		services += "&remote"
	}
	p := "pn-prid=" + prid + ";pn-provider=" + provider + ";pn-param=" + linphoneTeam + "." + bundle + "." + services +
		";pn-silent=1;pn-timeout=0"
	if remote != "" {
		p += ";pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG" +
			";pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf"
	}
	return p
}

// linphoneAndroidParams are liblinphone's Contact URI parameters on
// Android: the FCM token, the sender id, and no alert strings (remote push
// is off by default).
func linphoneAndroidParams(token, senderID string) string {
	return "pn-prid=" + token + ";pn-provider=fcm;pn-param=" + senderID + ";pn-silent=1;pn-timeout=0"
}

// linphoneContact is the whole Contact header value: the account's contact
// URI with params, then the instance id liblinphone adds as a header
// parameter.
func linphoneContact(user, ip string, port int, params, instance string) string {
	hostport := net.JoinHostPort(ip, strconv.Itoa(port))
	if strings.Contains(ip, ":") {
		// sipp reads a key's value as scenario text, where "[::1]" is an
		// unknown keyword; its own [local_ip] is the bracketed address.
		hostport = "[local_ip]:" + strconv.Itoa(port)
	}
	return "<sip:" + user + "@" + hostport + ";transport=udp;" + params +
		`>;+sip.instance="<urn:uuid:` + instance + `>"`
}

// instanceID is a fixed +sip.instance UUID for phone n of a test: an app
// keeps its instance across launches and token changes.
func instanceID(n int) string {
	return fmt.Sprintf("5d3c1b7e-8a42-4f0b-9c6d-%012x", n)
}

// clientPhone is a sipp device registering with a client's exact Contact.
type clientPhone struct {
	w       *world
	user    string
	port    int
	contact string
}

// linphoneIOS is alice's iPhone on w.deviceIP:port with Linphone's Contact.
func (w *world) linphoneIOS(port int, provider, voip, remote string, instance int) *clientPhone {
	params := linphoneIOSParams(provider, w.fakes.APNs.BundleID, voip, remote)
	return &clientPhone{w: w, user: "alice", port: port,
		contact: linphoneContact("alice", w.deviceIP, port, params, instanceID(instance))}
}

// register REGISTERs (answering the challenge) and then "sleeps": the
// sipp process ends and nothing listens on the port.
func (p *clientPhone) register() *peertest.SippResult {
	p.w.t.Helper()
	res, err := peertest.RunSipp(p.w.t, peertest.SippOptions{
		Name:      "register-" + strconv.Itoa(p.port),
		Scenario:  peertest.Scenario(p.w.t, "register_auth_contact"),
		Remote:    p.w.swAddr,
		LocalIP:   p.w.deviceIP,
		LocalPort: p.port,
		Injection: peertest.RegisterInjection(peertest.SippUser{User: p.user, Domain: domain, Password: password}),
		Keys:      map[string]string{"expires": "600", "contact": p.contact},
	})
	if err != nil {
		p.w.t.Fatalf("registration with Contact %s: %v\n%s", p.contact, err, res.Messages())
	}
	return res
}

// wake is the app after a push: it registers again from the same port with
// the same Contact, then serves scenario (uas_answer, uas_message) there.
func (p *clientPhone) wake(scenario string) *peertest.Sipp {
	p.w.t.Helper()
	p.register()
	return peertest.StartSipp(p.w.t, peertest.SippOptions{
		Name:      scenario + "-" + strconv.Itoa(p.port),
		Scenario:  peertest.Scenario(p.w.t, scenario),
		LocalIP:   p.w.deviceIP,
		LocalPort: p.port,
		Timeout:   30 * time.Second,
	})
}

// sipHeader returns the value of the first header name (or its compact form)
// in a SIP message, "" if absent.
func sipHeader(msg, name, compact string) string {
	for _, line := range strings.Split(msg, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if strings.EqualFold(k, name) || (compact != "" && strings.EqualFold(k, compact)) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// received returns the last message res received that starts with prefix
// ("INVITE ", "SIP/2.0 200").
func received(res *peertest.SippResult, prefix string) string {
	last := ""
	for _, m := range res.Received() {
		if strings.HasPrefix(m, prefix) {
			last = m
		}
	}
	return last
}

// payload decodes a recorded push's JSON body (APNs) or message (FCM).
func payload(t *testing.T, p pushtest.Push) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(p.Payload, &m); err != nil {
		t.Fatalf("push payload: %v: %s", err, p.Payload)
	}
	return m
}

// obj is m[key] as a JSON object (nil if it is not one).
func obj(m map[string]any, key string) map[string]any {
	o, _ := m[key].(map[string]any)
	return o
}

// allAccepted fails t if APNs or FCM refused any push sipwake sent.
func allAccepted(t *testing.T, fakes ...interface{ Pushes() []pushtest.Push }) {
	t.Helper()
	for _, f := range fakes {
		for _, p := range f.Pushes() {
			if p.Status != 200 {
				t.Errorf("push to %s refused: %d %s (type %q, topic %q): %s", p.Token, p.Status, p.Reason,
					p.Header.Get("apns-push-type"), p.Header.Get("apns-topic"), p.Payload)
			}
		}
	}
}

// checkVoIPCallPush checks a call push as liblinphone's PushKit delegate
// needs it and returns its aps["call-id"].
func checkVoIPCallPush(t *testing.T, p pushtest.Push, voip, bundle string) string {
	t.Helper()
	if !strings.EqualFold(p.Token, voip) || p.Header.Get("apns-topic") != bundle+".voip" || p.Header.Get("apns-push-type") != "voip" {
		t.Fatalf("call push went to token %s, topic %q, type %q; want the PushKit token %s, %s.voip, voip",
			p.Token, p.Header.Get("apns-topic"), p.Header.Get("apns-push-type"), voip, bundle)
	}
	aps := obj(payload(t, p), "aps")
	callID, _ := aps["call-id"].(string)
	if callID == "" || aps["loc-key"] != "IC_MSG" {
		t.Fatalf("call push aps: %v (want call-id and loc-key IC_MSG)", aps)
	}
	return callID
}

// Linphone for iOS with both tokens: the 200 to its REGISTER says who will
// push and when to refresh, and a call reaches it through PushKit with the
// Call-ID the woken app then sees in the INVITE (ios-app-delegate.mm
// matches the two to report the call to CallKit).
func TestLinphoneIOSCallByPushKit(t *testing.T) {
	w := newWorld(t)
	voip, remote := iosTokens(w.fakes.APNs, 30)
	phone := w.linphoneIOS(5070, "apns", voip, remote, 1)

	ok := received(phone.register(), "SIP/2.0 200")
	caps := sipHeader(ok, "Feature-Caps", "")
	lead := strconv.Itoa(int(w.cfg.Calls.RefreshLead / time.Second))
	if !strings.Contains(caps, `+sip.pns="apns"`) || !strings.Contains(caps, `+sip.pnsreg="`+lead+`"`) {
		t.Fatalf("200 to the REGISTER has Feature-Caps %q, want +sip.pns=\"apns\" and +sip.pnsreg=\"%s\":\n%s", caps, lead, ok)
	}
	bs := w.bindings("alice")
	if len(bs) != 1 {
		t.Fatalf("%d bindings after one REGISTER", len(bs))
	}

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	callID := checkVoIPCallPush(t, ps[0], voip, w.fakes.APNs.BundleID)
	device := phone.wake("uas_answer")
	mustSucceed(t, "caller", caller)
	dev := mustSucceed(t, "woken iPhone", device)
	invite := received(dev, "INVITE ")
	if got := sipHeader(invite, "Call-ID", "i"); got != callID {
		t.Fatalf("the push said call-id %q, the INVITE the phone got has %q: CallKit would report a call that never comes", callID, got)
	}
	allAccepted(t, w.fakes.APNs)
}

// A MESSAGE to the same iPhone is an alert on its remote token (never
// PushKit: iOS kills an app that gets a VoIP push and reports no call),
// with the app's pn-msg-str as the text to show.
func TestLinphoneIOSMessageByRemotePush(t *testing.T) {
	w := newWorld(t)
	voip, remote := iosTokens(w.fakes.APNs, 31)
	phone := w.linphoneIOS(5070, "apns", voip, remote, 1)
	phone.register()

	sender := w.call("alice", "sender_message", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	p := ps[0]
	if !strings.EqualFold(p.Token, remote) || p.Header.Get("apns-topic") != w.fakes.APNs.BundleID || p.Header.Get("apns-push-type") != "alert" {
		t.Fatalf("MESSAGE push went to token %s, topic %q, type %q; want the remote token %s, %s, alert",
			p.Token, p.Header.Get("apns-topic"), p.Header.Get("apns-push-type"), remote, w.fakes.APNs.BundleID)
	}
	aps := obj(payload(t, p), "aps")
	if obj(aps, "alert")["loc-key"] != "IM_MSG" || aps["mutable-content"] != float64(1) {
		t.Fatalf("MESSAGE push aps: %v (want alert.loc-key IM_MSG, mutable-content 1)", aps)
	}
	device := phone.wake("uas_message")
	mustSucceed(t, "sender", sender)
	dev := mustSucceed(t, "woken iPhone", device)
	if !strings.Contains(dev.Messages(), "hello from carol") {
		t.Fatal("the MESSAGE did not reach the woken phone")
	}
	allAccepted(t, w.fakes.APNs)
}

// A caller who gives up before the iPhone connected leaves a missed-call
// alert on the remote token, replacing the call's notification (same
// apns-collapse-id), as Flexisip's remote-push strategy does
// (remote-push-strategy.cc, pn-missing-call-str).
func TestLinphoneIOSMissedCall(t *testing.T) {
	w := newWorld(t)
	voip, remote := iosTokens(w.fakes.APNs, 32)
	w.linphoneIOS(5070, "apns", voip, remote, 1).register()

	mustSucceed(t, "caller cancel (200 to CANCEL, 487)", w.call("alice", "caller_cancel", nil))
	ps := waitPushes(t, w.fakes.APNs, 2)
	checkVoIPCallPush(t, ps[0], voip, w.fakes.APNs.BundleID)
	f := ps[1]
	if !strings.EqualFold(f.Token, remote) || f.Header.Get("apns-push-type") != "alert" || f.Header.Get("apns-topic") != w.fakes.APNs.BundleID {
		t.Fatalf("missed-call push went to token %s, topic %q, type %q; want an alert on the remote token %s",
			f.Token, f.Header.Get("apns-topic"), f.Header.Get("apns-push-type"), remote)
	}
	body := payload(t, f)
	if body["kind"] != "cancel" || body["reason"] != "missed" {
		t.Fatalf("missed-call push: %s (want kind cancel, reason missed)", f.Payload)
	}
	alert := obj(obj(body, "aps"), "alert")
	if lk := alert["loc-key"]; lk != "Missing call" {
		t.Fatalf("missed-call alert loc-key %v, want Flexisip's default \"Missing call\"", lk)
	}
	// Who called, as the caller's From says, and worth an hour at most.
	if args, _ := alert["loc-args"].([]any); len(args) != 1 || args[0] != "Carol Caller" || body["from-uri"] == "" {
		t.Fatalf("missed-call alert does not say who called: loc-args %v, from-uri %v", alert["loc-args"], body["from-uri"])
	}
	if f.Header.Get("apns-expiration") == "" {
		t.Fatal("missed-call alert without apns-expiration")
	}
	if c0, c1 := ps[0].Header.Get("apns-collapse-id"), f.Header.Get("apns-collapse-id"); c1 == "" || c1 != c0 {
		t.Fatalf("apns-collapse-id: call %q, missed call %q; want the same", c0, c1)
	}
	time.Sleep(300 * time.Millisecond) // nothing more may follow
	if n := len(w.fakes.APNs.Pushes()); n != 2 {
		t.Fatalf("%d pushes for one missed call, want 2", n)
	}
	allAccepted(t, w.fakes.APNs)
}

// A development build (linphone-iphone's DEBUG: pn-provider=apns.dev) holds
// sandbox tokens, which production APNs refuses: its pushes go to the app's
// sandbox endpoint.
func TestLinphoneIOSDevBuildUsesSandbox(t *testing.T) {
	w := newWorld(t)
	sandbox := w.fakes.APNs.StartSandbox(t)
	// App() names the sandbox only once it runs.
	w.cfg.Push.Apps = []push.AppConfig{w.fakes.APNs.App("ios"), w.fakes.FCM.App("android")}
	w.restartWith()

	voip, remote := iosTokens(sandbox, 33)
	phone := w.linphoneIOS(5070, "apns.dev", voip, remote, 1)
	phone.register()

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, sandbox, 1)
	checkVoIPCallPush(t, ps[0], voip, sandbox.BundleID)
	device := phone.wake("uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "woken development build", device)
	if n := len(w.fakes.APNs.Pushes()); n != 0 {
		t.Fatalf("%d pushes for an apns.dev device went to production APNs", n)
	}
	allAccepted(t, sandbox)
}

// Linphone for Android is woken through FCM; its FirebaseMessaging service
// reads data["call-id"] only, so that must be the INVITE's.
func TestLinphoneAndroidCallByFCM(t *testing.T) {
	w := newWorld(t)
	tok := w.fakes.FCM.Token(34)
	phone := &clientPhone{w: w, user: "alice", port: 5070,
		contact: linphoneContact("alice", w.deviceIP, 5070, linphoneAndroidParams(tok, w.fakes.FCM.SenderID), instanceID(2))}
	ok := received(phone.register(), "SIP/2.0 200")
	if caps := sipHeader(ok, "Feature-Caps", ""); !strings.Contains(caps, `+sip.pns="fcm"`) {
		t.Fatalf("200 to the REGISTER has Feature-Caps %q, want +sip.pns=\"fcm\"", caps)
	}

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.FCM, 1)
	if ps[0].Token != tok {
		t.Fatalf("FCM push to %q, want %q", ps[0].Token, tok)
	}
	msg := payload(t, ps[0])
	data := obj(msg, "data")
	if data == nil {
		data = obj(obj(msg, "android"), "data")
	}
	callID, _ := data["call-id"].(string)
	if callID == "" || data["call_id"] != callID {
		t.Fatalf("FCM data: %v (want call-id, and sipwake's call_id equal to it)", data)
	}
	device := phone.wake("uas_answer")
	mustSucceed(t, "caller", caller)
	dev := mustSucceed(t, "woken Android phone", device)
	if got := sipHeader(received(dev, "INVITE "), "Call-ID", "i"); got != callID {
		t.Fatalf("the push said call-id %q, the INVITE has %q", callID, got)
	}
	allAccepted(t, w.fakes.FCM)
}

// senderExpect sends one MESSAGE and succeeds only on the final answer
// [expect].
const senderExpect = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="sender_message_expect">
  <send retrans="500">
    <![CDATA[

      MESSAGE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: "Carol Caller" <sip:+15550100@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Max-Forwards: 70
      Content-Type: text/plain
      Content-Length: [len]

      hello from carol
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="[expect]"/>
</scenario>
`

// A Linphone that may only use PushKit (liblinphone's default:
// remote_push_notification_allowed=0) can be woken for calls only. A
// missed-call alert or a MESSAGE push would have to go to the PushKit
// token, which APNs refuses under the bundle's topic (and a VoIP push that
// reports no call gets the app killed), so like Flexisip
// (PNContextMessage::init: "no suitable destinations") sipwake sends none:
// the sender is told 480, the binding stays, and calls still wake it.
func TestLinphonePushKitOnly(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.Calls.Wait = 3 * time.Second })
	voip, _ := iosTokens(w.fakes.APNs, 35)
	phone := w.linphoneIOS(5070, "apns", voip, "", 1)
	phone.register()

	first := time.Now()
	mustSucceed(t, "caller cancel", w.call("alice", "caller_cancel", nil))
	waitPushes(t, w.fakes.APNs, 1)
	time.Sleep(500 * time.Millisecond) // a follow-up would be out by now

	start := time.Now()
	_, err := peertest.RunSipp(t, peertest.SippOptions{
		Name:        "sender_message_480",
		ScenarioXML: senderExpect,
		Remote:      w.kam.Addr,
		LocalIP:     callerIP(t),
		LocalPort:   5060,
		Service:     "alice",
		Keys:        map[string]string{"expect": "480"},
		Timeout:     40 * time.Second,
	})
	if err != nil {
		t.Fatalf("MESSAGE to a PushKit-only phone: want 480: %v", err)
	}
	t.Logf("MESSAGE answered 480 after %v", time.Since(start).Round(time.Millisecond))
	time.Sleep(300 * time.Millisecond)
	for _, p := range w.fakes.APNs.Pushes() {
		if p.Header.Get("apns-push-type") != "voip" {
			t.Errorf("a %q push (topic %q) went to a PushKit-only phone: %s", p.Header.Get("apns-push-type"), p.Header.Get("apns-topic"), p.Payload)
		}
	}
	if n := len(w.fakes.APNs.Pushes()); n != 1 {
		t.Errorf("%d pushes for a missed call and a MESSAGE, want the call's only", n)
	}
	allAccepted(t, w.fakes.APNs)
	if got := metric(t, w, "sipwake_push_sent_total", "not_sent"); got < 1 {
		t.Errorf(`sipwake_push_sent_total{outcome="not_sent"} = %v, want the pushes there was no token for`, got)
	}
	if n := len(w.bindings("alice")); n != 1 {
		t.Fatalf("%d bindings after a push that could not be sent, want the phone's 1", n)
	}

	// Past the first call's wait: a phone woken now is no longer sent that
	// call's INVITE to end it (TestWokenIPhoneGetsTheCancelledCallToEndIt),
	// and answers the next one.
	time.Sleep(time.Until(first.Add(w.cfg.Calls.Wait + 300*time.Millisecond)))
	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 2)
	checkVoIPCallPush(t, ps[1], voip, w.fakes.APNs.BundleID)
	device := phone.wake("uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "woken iPhone", device)
	allAccepted(t, w.fakes.APNs)
}

// An app reinstalled or restored gets new tokens but keeps its
// +sip.instance: its REGISTER replaces the old binding instead of adding a
// second one (Flexisip's registrar does the same, push-param.cc). A call
// parked on the old tokens while the phone slept goes to it when it wakes
// and registers with the new ones.
func TestLinphoneNewTokensReplaceBinding(t *testing.T) {
	// A call not delivered fails after 10 s, not the default 30.
	w := newWorld(t, func(c *config.Config) { c.Calls.Wait = 10 * time.Second })
	hasTokens := func(voip, remote string) bool {
		bs := w.bindings("alice")
		if len(bs) != 1 {
			return false
		}
		tok := strings.ToUpper(bs[0].Device.Token)
		return strings.Contains(tok, voip) && strings.Contains(tok, remote)
	}
	describe := func() string {
		var s []string
		for _, b := range w.bindings("alice") {
			s = append(s, b.Device.Token+" "+b.Instance)
		}
		return fmt.Sprintf("%d bindings: %v", len(s), s)
	}

	voip1, remote1 := iosTokens(w.fakes.APNs, 36)
	w.linphoneIOS(5070, "apns", voip1, remote1, 1).register()
	voip2, remote2 := iosTokens(w.fakes.APNs, 37)
	w.linphoneIOS(5070, "apns", voip2, remote2, 1).register()
	if !hasTokens(voip2, remote2) {
		t.Fatalf("after new tokens with the same instance: %s; want one, with the new tokens", describe())
	}
	if n := w.records(); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	checkVoIPCallPush(t, ps[0], voip2, w.fakes.APNs.BundleID)
	voip3, remote3 := iosTokens(w.fakes.APNs, 38)
	device := w.linphoneIOS(5070, "apns", voip3, remote3, 1).wake("uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "phone woken with new tokens", device)
	if !hasTokens(voip3, remote3) {
		t.Fatalf("after waking with new tokens: %s; want one, with the newest tokens", describe())
	}
	// The phone that answered is the one that was pushed, under its old
	// tokens: a follow-up ("answered elsewhere") for this call would tell
	// it to drop the call it has just answered.
	time.Sleep(500 * time.Millisecond)
	for _, p := range w.fakes.APNs.Pushes()[1:] {
		t.Errorf("push after the call was answered, to token %s (type %q): %s", p.Token, p.Header.Get("apns-push-type"), p.Payload)
	}
	allAccepted(t, w.fakes.APNs)
}

// linphonec given the pn-* parameters liblinphone generates for an iPhone
// with both tokens (account.cpp): over TCP it registers, is killed as iOS
// kills a suspended app, is woken by a PushKit push, registers again and
// auto-answers.
func TestLinphonecWithIOSParams(t *testing.T) {
	w := newWorld(t)
	voip, remote := iosTokens(w.fakes.APNs, 39)
	start := func() *peertest.Linphone {
		l := peertest.StartLinphone(t, peertest.LinphoneOptions{
			Addr: peertest.Addr(t, 5, 5080), Proxy: w.swAddr, Transport: "tcp",
			User: "alice", Domain: domain, Password: password,
			ContactParams: linphoneIOSParams("apns", w.fakes.APNs.BundleID, voip, remote),
		})
		waitFor(t, func() bool { return len(w.bindings("alice")) == 1 && len(w.locations("alice")) > 0 }, "linphonec registered through sipwake")
		return l
	}
	start().Kill()
	b := w.bindings("alice")[0]
	if tok := strings.ToUpper(b.Device.Token); b.Flow.Transport != "tcp" || !strings.Contains(tok, voip) || !strings.Contains(tok, remote) {
		t.Fatalf("linphonec's binding: flow %+v, pn-prid %q", b.Flow, b.Device.Token)
	}

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	checkVoIPCallPush(t, ps[0], voip, w.fakes.APNs.BundleID)
	woken := start()
	mustSucceed(t, "caller through Kamailio to the woken linphonec", caller)
	if err := woken.WaitOutput("Call", 5*time.Second); err != nil {
		t.Fatalf("linphonec saw no call: %v\n%s", err, woken.Output())
	}
	allAccepted(t, w.fakes.APNs)
}

// liveLinphone starts linphonec as alice's iPhone over TCP with the
// Contact parameters given, and waits until its flow is registered.
func (w *world) liveLinphone(params string) *peertest.Linphone {
	w.t.Helper()
	l := peertest.StartLinphone(w.t, peertest.LinphoneOptions{
		Addr: peertest.Addr(w.t, 5, 5080), Proxy: w.swAddr, Transport: "tcp",
		User: "alice", Domain: domain, Password: password, ContactParams: params,
	})
	waitFor(w.t, func() bool { bs := w.bindings("alice"); return len(bs) == 1 && bs[0].Flow.Transport == "tcp" }, "linphonec registered over TCP")
	return l
}

// A suspended app keeps its socket but cannot answer (RFC 8599 leaves the
// proxy to push it all the same): the call goes over the live flow at
// once, and when nothing answers within calls.awake_push_delay the phone is
// pushed; woken, it reads the INVITE waiting on its connection and answers.
func TestSuspendedPhoneOnLiveFlowIsPushed(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.Calls.AwakePushDelay = time.Second })
	voip, remote := iosTokens(w.fakes.APNs, 40)
	// No pn-timeout: sipwake's own delay holds.
	params := strings.Replace(linphoneIOSParams("apns", w.fakes.APNs.BundleID, voip, remote), ";pn-timeout=0", "", 1)
	phone := w.liveLinphone(params)
	phone.Suspend()
	start := time.Now()
	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	if took := ps[0].At.Sub(start); took < time.Second {
		t.Fatalf("pushed after %v, before the phone had its second to answer over its flow", took)
	}
	if ps[0].Token != voip || ps[0].Header.Get("apns-push-type") != "voip" {
		t.Fatalf("push to %s, %v", ps[0].Token, ps[0].Header)
	}
	phone.Resume()
	mustSucceed(t, "caller, answered by the resumed phone over its flow", caller)
	if n := len(w.fakes.APNs.Pushes()); n != 1 {
		t.Fatalf("%d pushes, want the one call push", n)
	}
}

// Linphone asks to be pushed at once (pn-timeout=0) even while its flow is
// up, as Flexisip does: an awake phone gets the INVITE over its flow and
// the push together, and the call reaches it once.
func TestAwakeLinphoneWithPnTimeoutZeroIsPushedAndCalledOnce(t *testing.T) {
	w := newWorld(t)
	voip, remote := iosTokens(w.fakes.APNs, 41)
	phone := w.liveLinphone(linphoneIOSParams("apns", w.fakes.APNs.BundleID, voip, remote))
	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	if ps[0].Token != voip {
		t.Fatalf("push to %s, want the PushKit token", ps[0].Token)
	}
	mustSucceed(t, "caller", caller)
	if err := phone.WaitOutput("Call", 5*time.Second); err != nil {
		t.Fatalf("linphonec saw no call: %v", err)
	}
	// The push told a phone that already rang: one call, one push.
	time.Sleep(500 * time.Millisecond)
	if n := len(w.fakes.APNs.Pushes()); n != 1 {
		t.Fatalf("%d pushes, want 1", n)
	}
	if n := metric(t, w, "sipwake_calls_total", "delivered"); n != 1 {
		t.Fatalf("calls delivered %v, want 1", n)
	}
}

// The caller gives up while the iPhone its VoIP push made ring is still
// waking: when the phone connects, within the call's wait, it gets the
// call's INVITE (which liblinphone matches by Call-ID to the CallKit call
// the push opened) and, at its 180, the CANCEL that ends it there, as
// Flexisip does (fork-context/branch-info.cc: a cancelled branch of an iOS
// VoIP device is kept until the device answers).
func TestWokenIPhoneGetsTheCancelledCallToEndIt(t *testing.T) {
	w := newWorld(t)
	voip, remote := iosTokens(w.fakes.APNs, 42)
	phone := w.linphoneIOS(5070, "apns", voip, remote, 1)
	phone.register()
	caller := w.call("alice", "caller_cancel", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	mustSucceed(t, "caller cancel", caller)
	woken := phone.wake("uas_ring_cancel")
	dev := mustSucceed(t, "woken phone: INVITE, 180, CANCEL, 487", woken)
	invite := ""
	for _, m := range dev.Received() {
		if strings.HasPrefix(m, "INVITE ") {
			invite = m
		}
	}
	if got := sipHeader(invite, "Call-ID", "i"); got == "" || got != obj(payload(t, ps[0]), "aps")["call-id"] {
		t.Fatalf("the late INVITE's Call-ID %q is not the push's call-id", got)
	}
	allAccepted(t, w.fakes.APNs)
}

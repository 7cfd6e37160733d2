package pushtest_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"

	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// apnsClient is a real APNs client (token auth) pointed at url and trusting
// only the fake's CA.
func apnsClient(t *testing.T, f *pushtest.APNs, url string) *apns2.Client {
	t.Helper()
	key, err := token.AuthKeyFromFile(f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: f.KeyID, TeamID: f.TeamID})
	return withFake(t, c, f, url, nil)
}

// apnsCertClient is a real APNs client using the fake's client
// certificate.
func apnsCertClient(t *testing.T, f *pushtest.APNs, url string) *apns2.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(f.ClientCertFile, f.ClientCertFile)
	if err != nil {
		t.Fatal(err)
	}
	return withFake(t, apns2.NewClient(cert), f, url, &cert)
}

func withFake(t *testing.T, c *apns2.Client, f *pushtest.APNs, url string, cert *tls.Certificate) *apns2.Client {
	t.Helper()
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatalf("no certificate in %s", f.CAFile)
	}
	conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: conf, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true) // as APNs: HTTP/2 only
	t.Cleanup(tr.CloseIdleConnections)
	c.HTTPClient = &http.Client{Transport: tr, Timeout: 5 * time.Second}
	c.Host = url
	return c
}

// sized returns an APNs payload of exactly n bytes whose aps is aps.
func sized(t *testing.T, aps string, n int) []byte {
	t.Helper()
	head, tail := `{"aps":`+aps+`,"pad":"`, `"}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("payload of %d bytes cannot hold aps %s", n, aps)
	}
	return []byte(head + strings.Repeat("x", pad) + tail)
}

func voip(tok string, payload []byte) *apns2.Notification {
	return &apns2.Notification{DeviceToken: tok, Topic: "org.sipwake.test.voip", PushType: apns2.PushTypeVOIP,
		Priority: apns2.PriorityHigh, Payload: payload}
}

func alert(tok string, payload []byte) *apns2.Notification {
	return &apns2.Notification{DeviceToken: tok, Topic: "org.sipwake.test", PushType: apns2.PushTypeAlert,
		Priority: apns2.PriorityHigh, Payload: payload}
}

func background(tok string, priority int, payload []byte) *apns2.Notification {
	return &apns2.Notification{DeviceToken: tok, Topic: "org.sipwake.test", PushType: apns2.PushTypeBackground,
		Priority: priority, Payload: payload}
}

// TestAPNsRefuses sends what Apple refuses, and what it takes at the very
// limits, through a real APNs client.
func TestAPNsRefuses(t *testing.T) {
	f := pushtest.NewAPNs(t)
	client := apnsClient(t, f, f.URL)
	voipTok, remoteTok := f.VoIPToken(1), f.RemoteToken(1)
	// A token as copied from a device capture: upper-case hex is the same
	// token.
	captured := strings.ToUpper(pushtest.APNsToken(900))
	f.BindToken(captured, f.BundleID+".voip")
	callAPS := `{}`
	cases := []struct {
		name   string
		n      *apns2.Notification
		status int
		reason string
	}{
		{"voip to a PushKit token", voip(voipTok, []byte(`{"aps":{}}`)), 200, ""},
		{"alert to a remote-notification token", alert(remoteTok, []byte(`{"aps":{"alert":"hi"}}`)), 200, ""},
		{"background to a remote-notification token", background(remoteTok, 5, []byte(`{"aps":{"content-available":1}}`)), 200, ""},
		{"captured token", voip(strings.ToLower(captured), []byte(`{"aps":{}}`)), 200, ""},

		{"alert to a PushKit token", alert(voipTok, []byte(`{"aps":{"alert":"hi"}}`)), 400, "DeviceTokenNotForTopic"},
		{"background to a PushKit token", background(voipTok, 5, []byte(`{"aps":{"content-available":1}}`)), 400, "DeviceTokenNotForTopic"},
		{"voip to a remote-notification token", voip(remoteTok, []byte(`{"aps":{}}`)), 400, "DeviceTokenNotForTopic"},
		{"token not issued", voip(pushtest.APNsToken(2), []byte(`{"aps":{}}`)), 400, "BadDeviceToken"},
		{"token not hex", voip("not-a-token", []byte(`{"aps":{}}`)), 400, "BadDeviceToken"},
		{"token too short", voip(voipTok[:62], []byte(`{"aps":{}}`)), 400, "BadDeviceToken"},
		{"topic of another app", &apns2.Notification{DeviceToken: voipTok, Topic: "org.other.voip", PushType: apns2.PushTypeVOIP,
			Payload: []byte(`{"aps":{}}`)}, 400, "TopicDisallowed"},

		{"background without content-available", background(remoteTok, 5, []byte(`{"aps":{}}`)), 400, "InvalidPushType"},
		{"background content-available 0", background(remoteTok, 5, []byte(`{"aps":{"content-available":0}}`)), 400, "InvalidPushType"},
		{"background with alert", background(remoteTok, 5, []byte(`{"aps":{"content-available":1,"alert":"hi"}}`)), 400, "InvalidPushType"},
		{"background with sound", background(remoteTok, 5, []byte(`{"aps":{"content-available":1,"sound":"ring.caf"}}`)), 400, "InvalidPushType"},
		{"background with badge", background(remoteTok, 5, []byte(`{"aps":{"content-available":1,"badge":1}}`)), 400, "InvalidPushType"},
		{"background priority 10", background(remoteTok, 10, []byte(`{"aps":{"content-available":1}}`)), 400, "BadPriority"},
		{"background without priority (10)", background(remoteTok, 0, []byte(`{"aps":{"content-available":1}}`)), 400, "BadPriority"},
		{"voip priority 5", &apns2.Notification{DeviceToken: voipTok, Topic: "org.sipwake.test.voip", PushType: apns2.PushTypeVOIP,
			Priority: apns2.PriorityLow, Payload: []byte(`{"aps":{}}`)}, 400, "BadPriority"},
		{"voip without priority (10)", &apns2.Notification{DeviceToken: voipTok, Topic: "org.sipwake.test.voip", PushType: apns2.PushTypeVOIP,
			Payload: []byte(`{"aps":{}}`)}, 200, ""},

		{"voip of 5120 bytes", voip(voipTok, sized(t, callAPS, 5120)), 200, ""},
		{"voip of 5121 bytes", voip(voipTok, sized(t, callAPS, 5121)), 413, "PayloadTooLarge"},
		{"alert of 4096 bytes", alert(remoteTok, sized(t, `{"alert":"hi"}`, 4096)), 200, ""},
		{"alert of 4097 bytes", alert(remoteTok, sized(t, `{"alert":"hi"}`, 4097)), 413, "PayloadTooLarge"},
		{"voip beyond the fake's read limit", voip(voipTok, sized(t, callAPS, 200<<10)), 413, "PayloadTooLarge"},
		{"no aps", voip(voipTok, []byte(`{"kind":"call"}`)), 400, "PayloadEmpty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := client.PushWithContext(ctx, c.n)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != c.status || res.Reason != c.reason {
				t.Fatalf("answer %d %q, want %d %q", res.StatusCode, res.Reason, c.status, c.reason)
			}
		})
	}
}

// TestAPNsSandbox: one key and one client certificate serve both
// environments, but each delivers only to the tokens it issued.
func TestAPNsSandbox(t *testing.T) {
	f := pushtest.NewAPNs(t)
	if got := f.App("ios").APNs.SandboxEndpoint; got != "" {
		t.Fatalf("SandboxEndpoint %q before a sandbox started", got)
	}
	sb := f.StartSandbox(t)
	if sb.URL == f.URL {
		t.Fatalf("sandbox serves production's URL %s", f.URL)
	}
	for _, app := range []string{"token", "cert"} {
		cfg := f.App("ios").APNs
		if app == "cert" {
			cfg = f.CertApp("ios").APNs
		}
		if cfg.Endpoint != f.URL || cfg.SandboxEndpoint != sb.URL || cfg.CAFile != f.CAFile {
			t.Errorf("%s app: endpoint %q sandbox %q ca %q; want %q %q %q", app,
				cfg.Endpoint, cfg.SandboxEndpoint, cfg.CAFile, f.URL, sb.URL, f.CAFile)
		}
	}
	if sb.KeyFile != f.KeyFile || sb.CAFile != f.CAFile || sb.ClientCertFile != f.ClientCertFile || sb.BundleID != f.BundleID {
		t.Errorf("sandbox credentials differ from production's")
	}
	if got := sb.Target(sb.VoIPToken(1)).Provider; got != "apns.dev" {
		t.Errorf("sandbox target provider %q, want apns.dev", got)
	}

	prodTok, sbTok := f.VoIPToken(1), sb.VoIPToken(1)
	if prodTok == sbTok || f.RemoteToken(1) == sb.RemoteToken(1) {
		t.Fatalf("sandbox and production issued the same token for 1")
	}
	call := []byte(`{"aps":{}}`)
	clients := map[string]*apns2.Client{
		"production key": apnsClient(t, f, f.URL), "production cert": apnsCertClient(t, f, f.URL),
		"sandbox key": apnsClient(t, f, sb.URL), "sandbox cert": apnsCertClient(t, f, sb.URL),
	}
	cases := []struct {
		client, tok string
		status      int
		reason      string
	}{
		{"production key", prodTok, 200, ""},
		{"production cert", prodTok, 200, ""},
		{"sandbox key", sbTok, 200, ""},
		{"sandbox cert", sbTok, 200, ""},
		{"production key", sbTok, 400, "BadDeviceToken"},
		{"sandbox key", prodTok, 400, "BadDeviceToken"},
		{"sandbox cert", prodTok, 400, "BadDeviceToken"},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := clients[c.client].PushWithContext(ctx, voip(c.tok, call))
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", c.client, err)
		}
		if res.StatusCode != c.status || res.Reason != c.reason {
			t.Errorf("%s, token of %s: answer %d %q, want %d %q", c.client, map[bool]string{true: "production", false: "sandbox"}[c.tok == prodTok],
				res.StatusCode, res.Reason, c.status, c.reason)
		}
	}
	if n, m := len(f.Pushes()), len(sb.Pushes()); n != 3 || m != 4 {
		t.Errorf("production recorded %d pushes, sandbox %d; want 3 and 4", n, m)
	}
	if n := len(sb.Accepted()); n != 2 {
		t.Errorf("sandbox accepted %d pushes, want 2", n)
	}
}

// TestProgramNeedsIssuedToken: a programmed answer replaces delivery, not
// the service's own checks.
func TestProgramNeedsIssuedToken(t *testing.T) {
	f := pushtest.NewAPNs(t)
	c := apnsClient(t, f, f.URL)
	gone := pushtest.Behavior{Status: 410, Reason: "Unregistered"}
	unbound := pushtest.APNsToken(5)
	f.Program(unbound, gone)
	bound := f.VoIPToken(6)
	f.Program(bound, gone)
	for tok, want := range map[string]string{unbound: "BadDeviceToken", bound: "Unregistered"} {
		res, err := c.PushWithContext(context.Background(), voip(tok, []byte(`{"aps":{}}`)))
		if err != nil {
			t.Fatal(err)
		}
		if res.Reason != want {
			t.Errorf("answer %d %q, want %q", res.StatusCode, res.Reason, want)
		}
	}
}

package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// TestIssuedTokens: a script gets exactly the tokens the flags issue, with
// the values the doc comment gives.
func TestIssuedTokens(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr peertest.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-apns", "127.0.0.1:0", "-fcm", "127.0.0.1:0", "-dir", dir,
			"-voip-tokens", "3", "-remote-tokens", "2", "-fcm-tokens", "3", "-sender", "555"}, &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	cfg := waitConfig(t, filepath.Join(dir, "push-config.yaml"), done)
	if len(cfg.Apps) != 2 {
		t.Fatalf("apps %+v", cfg.Apps)
	}
	ios, android := cfg.Apps[0], cfg.Apps[1]
	if android.FCM.SenderID != "555" {
		t.Errorf("sender_id %q, want 555", android.FCM.SenderID)
	}

	remote := func(i string) string {
		sum := sha256.Sum256([]byte("sipwake-remote-" + i))
		return hex.EncodeToString(sum[:])
	}
	c := apnsClient(t, ios.APNs)
	for _, p := range []struct {
		n      *apns2.Notification
		reason string
	}{
		{voip(ios.APNs.BundleID, pushtest.APNsToken(2)), ""},
		{voip(ios.APNs.BundleID, pushtest.APNsToken(3)), "BadDeviceToken"},
		{voip(ios.APNs.BundleID, remote("1")), "DeviceTokenNotForTopic"},
		{alert(ios.APNs.BundleID, remote("1")), ""},
		{alert(ios.APNs.BundleID, remote("2")), "BadDeviceToken"},
	} {
		res, err := c.PushWithContext(ctxFor(t), p.n)
		if err != nil {
			t.Fatal(err)
		}
		if res.Reason != p.reason {
			t.Errorf("%s push to ...%s: answer %d %q, want %q", p.n.PushType, p.n.DeviceToken[58:], res.StatusCode, res.Reason, p.reason)
		}
	}
	for tok, want := range map[string]int{pushtest.FCMToken(2): 200, pushtest.FCMToken(3): 400} {
		if got := fcmStatus(t, android.FCM, tok); got != want {
			t.Errorf("FCM push to token %s: %d, want %d", tok[:8], got, want)
		}
	}
	// One JSON line per push, on stdout.
	var lines int
	for sc := bufio.NewScanner(strings.NewReader(stdout.String())); sc.Scan(); lines++ {
		var p pushtest.Push
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Errorf("stdout line %q: %v", sc.Text(), err)
		}
	}
	if lines != 7 {
		t.Errorf("%d lines on stdout, want 7:\n%s", lines, stdout.String())
	}
}

func waitConfig(t *testing.T, path string, done <-chan error) push.Config {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("run ended early: %v", err)
		default:
		}
		if b, err := os.ReadFile(path); err == nil {
			var file struct{ Push push.Config }
			if err := yaml.Unmarshal(b, &file); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return file.Push
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s not written", path)
	return push.Config{}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func roots(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(ca) {
		t.Fatalf("no certificate in %s", caFile)
	}
	return p
}

func apnsClient(t *testing.T, cfg push.APNsConfig) *apns2.Client {
	t.Helper()
	key, err := token.AuthKeyFromFile(cfg.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots(t, cfg.CAFile), MinVersion: tls.VersionTLS12}, Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP2(true) // as APNs: HTTP/2 only
	t.Cleanup(tr.CloseIdleConnections)
	c.HTTPClient = &http.Client{Transport: tr}
	c.Host = cfg.Endpoint
	return c
}

func voip(bundle, tok string) *apns2.Notification {
	return &apns2.Notification{DeviceToken: tok, Topic: bundle + ".voip", PushType: apns2.PushTypeVOIP,
		Priority: apns2.PriorityHigh, Payload: []byte(`{"aps":{}}`)}
}

func alert(bundle, tok string) *apns2.Notification {
	return &apns2.Notification{DeviceToken: tok, Topic: bundle, PushType: apns2.PushTypeAlert,
		Priority: apns2.PriorityHigh, Payload: []byte(`{"aps":{"alert":"hi"}}`)}
}

// fcmStatus is FCM's status for a data-only message to tok.
func fcmStatus(t *testing.T, cfg push.FCMConfig, tok string) int {
	t.Helper()
	status, _ := pushtest.SendFCM(t, cfg, tok, map[string]string{"kind": "call"})
	return status
}

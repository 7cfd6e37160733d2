package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/admin"
	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// runCLI runs one sipwake command in-process.
func runCLI(t *testing.T, environ []string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := cli{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut, environ: environ}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.run(ctx, args)
	return out.String(), errOut.String(), err
}

func TestKeysGenerate(t *testing.T) {
	out, _, err := runCLI(t, nil, "", "keys", "generate")
	if err != nil {
		t.Fatal(err)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil || len(k) != 32 {
		t.Fatalf("keys generate printed %q (%d bytes, %v)", out, len(k), err)
	}
	if _, err := store.ParseKey(strings.TrimSpace(out)); err != nil {
		t.Fatal(err)
	}
}

func TestAdminTokenAndHash(t *testing.T) {
	out, _, err := runCLI(t, nil, "", "admin", "token")
	if err != nil {
		t.Fatal(err)
	}
	var tok, sum string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "token: "); ok {
			tok = v
		}
		if v, ok := strings.CutPrefix(line, "token_sha256: "); ok {
			sum = v
		}
	}
	want := sha256.Sum256([]byte(tok))
	if tok == "" || sum != hex.EncodeToString(want[:]) {
		t.Fatalf("admin token printed %q", out)
	}
	out, _, err = runCLI(t, nil, tok+"\n", "admin", "hash-token")
	if err != nil || strings.TrimSpace(out) != sum {
		t.Fatalf("hash-token: %q %v", out, err)
	}
	if _, _, err := runCLI(t, nil, "", "admin", "hash-token"); err == nil {
		t.Fatal("empty token hashed")
	}
	// The printed hash is what the config accepts.
	if _, _, err := runCLI(t, []string{"SIPWAKE_ADMIN_TOKEN_SHA256=" + sum, "SIPWAKE_ADMIN_LISTEN=127.0.0.1:9060"}, "", "config", "check"); err != nil {
		t.Fatal(err)
	}
	if sum != admin.HashToken(tok) {
		t.Fatal("hash differs from admin.HashToken")
	}
}

func TestPushTestCommand(t *testing.T) {
	fakes := pushtest.NewFakes(t)
	apps, err := yaml.Marshal(fakes.Config.Apps)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"SIPWAKE_PUSH_APPS=" + string(apps)}
	tok := fakes.APNs.VoIPToken(7)
	out, _, err := runCLI(t, env, "", "push", "test", "-provider", "apns", "-token", tok, "-app", "ios")
	if err != nil || !strings.Contains(out, "outcome=delivered") || strings.Contains(out, tok) {
		t.Fatalf("push test: %v\n%s", err, out)
	}
	if ps := fakes.APNs.PushesTo(tok); len(ps) != 1 || ps[0].Header.Get("apns-push-type") != "voip" {
		t.Fatalf("fake APNs got %d pushes", len(ps))
	}
	// push test sends any kind but a call to a bare token as to a
	// remote-notification token.
	dead := fakes.APNs.RemoteToken(8)
	fakes.APNs.Program(dead, pushtest.Behavior{Status: 410, Reason: "Unregistered"})
	out, _, err = runCLI(t, env, "", "push", "test", "-provider", "apns", "-token", dead, "-kind", "register")
	if err == nil || !strings.Contains(out, "outcome=token_dead") || !strings.Contains(out, "kind=register") {
		t.Fatalf("dead token: %v\n%s", err, out)
	}
	if _, _, err := runCLI(t, env, "", "push", "test", "-provider", "apns", "-token", tok, "-kind", "bogus"); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

// TestKeysUsage counts a stopped store's records per key without changing
// the file, and refuses clearly while sipwake holds the store.
func TestKeysUsage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs sipwake and waits out bbolt's lock timeout (2 s); skipped with -short")
	}
	dir := t.TempDir()
	k1 := base64.StdEncoding.EncodeToString(store.NewKey())
	cfgFile := filepath.Join(dir, "sipwake.yaml")
	sipAddr := peertest.Addr(t, 1, 5060)
	yml := "sip:\n  listen:\n    udp: " + sipAddr + "\n    tcp: \"\"\nstore:\n  data_dir: " + filepath.Join(dir, "data") + "\nseal:\n  key_id: k1\n  key: " + k1 + "\n"
	if err := os.WriteFile(cfgFile, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "bob"} {
		b := relay.Binding{AOR: relay.AOR(user + "@example.test"), Device: relay.Device{Provider: "apns", Token: pushtest.APNsToken(len(user))}}
		if _, err := a.Relay().Register(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Running: bbolt's lock refuses a second opener.
	_, _, err = runCLI(t, nil, "", "keys", "usage", "-config", cfgFile)
	if err == nil || !strings.Contains(err.Error(), "locked") || !strings.Contains(err.Error(), "/admin/keys") {
		t.Fatalf("keys usage on a running store: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	before := hashFile(t, app.StorePath(cfg))
	out, _, err := runCLI(t, nil, "", "keys", "usage", "-config", cfgFile)
	if err != nil || !strings.Contains(out, "k1\t2 records\tactive") {
		t.Fatalf("keys usage: %v\n%s", err, out)
	}
	if hashFile(t, app.StorePath(cfg)) != before {
		t.Fatal("keys usage changed the store file")
	}
}

func hashFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

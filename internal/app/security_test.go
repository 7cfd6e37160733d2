package app_test

import (
	"bytes"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
)

// The SIP TLS listener and the HTTPS API speak TLS 1.2 and 1.3 only: a
// TLS 1.1 (or 1.0) client is refused at the handshake.
func TestTLSListenersRefuseOldVersions(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "sipwake.test")
	tlsAddr, apiAddr := peertest.Addr(t, 2, 5061), peertest.Addr(t, 6, 8443)
	newWorld(t, func(c *config.Config) {
		c.SIP.Listen.TLS, c.SIP.Listen.TLSCertFile, c.SIP.Listen.TLSKeyFile = tlsAddr, certFile, keyFile
		c.API.Listen, c.API.TLSCertFile, c.API.TLSKeyFile = apiAddr, certFile, keyFile
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
	})
	for _, addr := range []string{tlsAddr, apiAddr} {
		for _, tc := range []struct {
			name    string
			version uint16
			ok      bool
		}{
			{"TLS 1.0", tls.VersionTLS10, false},
			{"TLS 1.1", tls.VersionTLS11, false},
			{"TLS 1.2", tls.VersionTLS12, true},
			{"TLS 1.3", tls.VersionTLS13, true},
		} {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, &tls.Config{
				InsecureSkipVerify: true, // the version is under test, not the certificate
				MinVersion:         tc.version, MaxVersion: tc.version,
			})
			if err == nil {
				got := conn.ConnectionState().Version
				_ = conn.Close()
				if !tc.ok {
					t.Errorf("%s accepted a %s handshake", addr, tc.name)
				} else if got != tc.version {
					t.Errorf("%s: negotiated %x, want %x", addr, got, tc.version)
				}
				continue
			}
			if tc.ok {
				t.Errorf("%s refused %s: %v", addr, tc.name, err)
			}
		}
	}
}

// A handed-over account (password and HA1 forms) goes through PUT, a call
// woken by push and answered, and DELETE of the second; then neither the
// data dir nor the default log holds its AOR, username, password, HA1,
// push token or API key.
func TestHandoverLeavesNothingPersonalOnDiskOrInLogs(t *testing.T) {
	apiAddr := peertest.Addr(t, 6, 8443)
	w := newWorld(t, func(c *config.Config) {
		c.Log.Level = "info"
		c.API.Listen = apiAddr
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
	})
	tok, tok2 := w.fakes.APNs.VoIPToken(80), w.fakes.APNs.VoIPToken(81)
	ha1Sum := md5.Sum([]byte("bob:" + domain + ":" + password))
	ha1 := hex.EncodeToString(ha1Sum[:])
	put := func(id, body string) int { return putAccount(t, apiAddr, id, body) }
	account := func(user, cred, tok string) string {
		return `{"aor":"` + user + `@` + domain + `","registrar":"sip:` + w.kam.Addr + `","username":"` + user + `",` + cred +
			`,"expires":600,"push":{"provider":"apns","token":"` + tok + `","param":"` + w.fakes.APNs.Param() + `"}}`
	}
	if code := put("phone-1", account("alice", `"password":"`+password+`"`, tok)); code != http.StatusCreated {
		t.Fatalf("PUT alice: %d", code)
	}
	if code := put("phone-2", account("bob", `"ha1":"`+ha1+`"`, tok2)); code != http.StatusCreated {
		t.Fatalf("PUT bob: %d", code)
	}
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "woken app", device)
	req, _ := http.NewRequest(http.MethodDelete, "http://"+apiAddr+"/v1/accounts/phone-2", nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %v %v", res, err)
	} else {
		res.Body.Close()
	}
	w.stop()

	secrets := []string{
		"alice@" + domain, "sip:alice", "bob@" + domain, "sip:bob", `username="alice"`, `username="bob"`,
		password, ha1, tok, tok[len(tok)-16:], tok2, tok2[len(tok2)-16:], apiKey, "+15550100", "Carol Caller",
	}
	files := 0
	err := filepath.WalkDir(w.cfg.Store.DataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(raw, []byte(s)) {
				t.Errorf("%s holds %q in plaintext", filepath.Base(path), s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := w.logs.String()
	if files == 0 || !strings.Contains(logs, "api request") {
		t.Fatal("nothing on disk or in the log: nothing was checked")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("default log holds %q", s)
		}
	}
}

package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
)

// writeCert writes a self-signed certificate for cn to dir/sip.crt and
// dir/sip.key (replacing what is there).
func writeCert(t *testing.T, dir, cn string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := filepath.Join(dir, "sip.crt"), filepath.Join(dir, "sip.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func servedCN(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the served cert
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestReloadSwapsTLSCertAndPushClients is what SIGHUP does: a renewed SIP
// TLS certificate is served to new connections, push clients are rebuilt,
// and a broken push config is refused while the running one stays.
func TestReloadSwapsTLSCertAndPushClients(t *testing.T) {
	dir := t.TempDir()
	cfg := operatorConfig(t)
	certPath, keyPath := writeCert(t, dir, "old.sipwake.test")
	cfg.SIP.Listen.TLS = peertest.Addr(t, 2, 5061)
	cfg.SIP.Listen.TLSCertFile, cfg.SIP.Listen.TLSKeyFile = certPath, keyPath
	a := startApp(t, cfg)
	if cn := servedCN(t, a.SIPAddr("tls")); cn != "old.sipwake.test" {
		t.Fatalf("served %q", cn)
	}

	writeCert(t, dir, "new.sipwake.test")
	if err := a.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if cn := servedCN(t, a.SIPAddr("tls")); cn != "new.sipwake.test" {
		t.Fatalf("after reload served %q", cn)
	}

	broken := cfg
	broken.Push = push.Config{Apps: []push.AppConfig{cfg.Push.Apps[0]}}
	broken.Push.Apps[0].APNs.KeyFile = filepath.Join(dir, "missing.p8")
	broken.SIP.Listen.TLSCertFile = filepath.Join(dir, "missing.crt")
	err := a.Reload(context.Background(), broken)
	if err == nil || !strings.Contains(err.Error(), "missing.p8") || !strings.Contains(err.Error(), "sip.listen.tls_cert_file") {
		t.Fatalf("broken reload: %v", err)
	}
	if cn := servedCN(t, a.SIPAddr("tls")); cn != "new.sipwake.test" {
		t.Fatalf("a failed reload changed the certificate: %q", cn)
	}
	if why := a.Ready(context.Background()); len(why) != 0 {
		t.Fatalf("not ready after a refused reload: %v", why)
	}
}

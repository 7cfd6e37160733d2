package pushtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
)

// serverHosts are the names the fakes' certificates are valid for.
func serverHosts(addr string) []string {
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	return hosts
}

func pkcs8PEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// certPEM encodes a certificate and its key in one PEM file, the way APNs
// push certificates are usually exported.
func certPEM(c tls.Certificate) ([]byte, error) {
	k, err := pkcs8PEM(c.PrivateKey)
	if err != nil {
		return nil, err
	}
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), k...), nil
}

func writeFile(dir, name string, b []byte) (string, error) {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		return "", fmt.Errorf("pushtest: write %s: %w", p, err)
	}
	return p, nil
}

// WriteP8Key writes a fresh ECDSA P-256 key as an APNs .p8 file (one no
// fake knows, for bad-credential tests) and returns its path.
func WriteP8Key(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	b, err := pkcs8PEM(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

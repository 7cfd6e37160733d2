package app

import (
	"crypto/tls"
	"fmt"
	"sync"
)

// certFile serves a certificate read from files, read again on reload
// (SIGHUP), so a renewed certificate is used for new handshakes without a
// restart; connections already up keep theirs.
type certFile struct {
	what string // config keys, for errors

	mu                sync.RWMutex
	cert              *tls.Certificate
	certPath, keyPath string
}

func loadCertFile(what, certPath, keyPath string) (*certFile, error) {
	c := &certFile{what: what}
	if err := c.reload(certPath, keyPath); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads the pair from the given paths; on error the old one stays.
func (c *certFile) reload(certPath, keyPath string) error {
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return fmt.Errorf("config: %s: %w", c.what, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert, c.certPath, c.keyPath = &cert, certPath, keyPath
	return nil
}

func (c *certFile) current() *tls.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cert
}

// config is a TLS config that always presents the current certificate.
func (c *certFile) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.current(), nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return c.current(), nil
		},
	}
}

package app

import (
	"crypto/tls"
	"fmt"

	"github.com/sipwake/sipwake/internal/config"
)

// sipTLS loads the SIP TLS listener's certificate; nil without a listener.
func sipTLS(l config.Listen) (*tls.Config, error) {
	if l.TLS == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(l.TLSCertFile, l.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("config: sip.listen.tls_cert_file/tls_key_file: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

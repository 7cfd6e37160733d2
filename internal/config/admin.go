package config

import (
	"encoding/hex"
	"time"

	"github.com/sipwake/sipwake/internal/configerr"
	"github.com/sipwake/sipwake/internal/httpserve"
)

// Bounds of an operator's troubleshooting trace.
const (
	DefaultMaxTrace = 24 * time.Hour
	// DefaultDrainTimeout bounds how long SIGTERM waits for parked calls.
	DefaultDrainTimeout = 20 * time.Second
)

// Admin is the operator listener: /metrics, /healthz, /readyz and the
// authenticated /admin/ API. It is separate from the handover API.
type Admin struct {
	// Listen is host:port; empty turns the listener off. Plain HTTP is
	// allowed only on a loopback address.
	Listen      string `yaml:"listen"`
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// TokenSHA256 is the hex SHA-256 of the bearer token the /admin/ API
	// accepts (`sipwake admin token` makes one). Empty: /admin/ is off;
	// /metrics and the health checks are still served.
	TokenSHA256 string `yaml:"token_sha256"`
	// MaxTrace bounds a troubleshooting trace's duration (1m..168h).
	MaxTrace time.Duration `yaml:"max_trace"`
}

// Shutdown bounds the graceful stop on SIGTERM.
type Shutdown struct {
	// DrainTimeout is how long parked calls may still be answered once
	// SIGTERM arrives; those left then get 503 (1s..10m).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// DefaultAdminListen is the operator listener's address in the shipped
// config and the image. The built-in default leaves the listener off, so
// that instances built from Default (tests, several per host) never fight
// over one port.
const DefaultAdminListen = "127.0.0.1:9060"

func defaultAdmin() Admin {
	return Admin{MaxTrace: DefaultMaxTrace}
}

func (a Admin) validate(problems *configerr.List) {
	if a.Listen != "" {
		if !isHostPort(a.Listen) {
			problems.Bad("admin.listen", a.Listen, "host:port, e.g. 127.0.0.1:9060")
		} else if (a.TLSCertFile == "") != (a.TLSKeyFile == "") {
			problems.Add("admin.tls_cert_file", "admin.tls_cert_file and admin.tls_key_file: set both or neither")
		} else if a.TLSCertFile == "" && !httpserve.Loopback(a.Listen) {
			problems.Add("admin.listen", "%q is not a loopback address; plain HTTP is refused there (set admin.tls_cert_file and admin.tls_key_file, or listen on 127.0.0.1)", a.Listen)
		}
	}
	if h := a.TokenSHA256; h != "" {
		if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
			problems.Bad("admin.token_sha256", h, "64 hex digits: the SHA-256 of the token; `sipwake admin token` prints one")
		}
	}
	if d := a.MaxTrace; d < time.Minute || d > 7*24*time.Hour {
		problems.Bad("admin.max_trace", d, "between 1m and 168h")
	}
}

func (s Shutdown) validate(problems *configerr.List) {
	if d := s.DrainTimeout; d < time.Second || d > 10*time.Minute {
		problems.Bad("shutdown.drain_timeout", d, "between 1s and 10m")
	}
}

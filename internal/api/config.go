package api

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"strings"

	"github.com/sipwake/sipwake/internal/configerr"
	"github.com/sipwake/sipwake/internal/httpserve"
)

// Config is the api: section of sipwake's config.
type Config struct {
	// Listen is host:port for the API; empty turns the API off. Plain HTTP
	// (no TLS files) is allowed only on a loopback address.
	Listen      string `yaml:"listen"`
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// Keys are the API clients: one per app, each key kept only as the
	// hex SHA-256 of the key the app sends (Authorization: Bearer <key>).
	Keys []Key `yaml:"keys"`
	// DefaultTTLDays is a handed-over account's record TTL when the app
	// does not send ttl_days (3–6; default 5).
	DefaultTTLDays int `yaml:"default_ttl_days"`
	// MaxBodyBytes bounds request bodies (default 16384).
	MaxBodyBytes int64     `yaml:"max_body_bytes"`
	RateLimit    RateLimit `yaml:"rate_limit"`
}

// Key is one app's API key, stored hashed.
type Key struct {
	App    string `yaml:"app"`
	SHA256 string `yaml:"sha256"`
}

// RateLimit bounds requests per API key and per source IP (token buckets:
// a sustained rate per second and a burst).
type RateLimit struct {
	PerKey         float64 `yaml:"per_key"`          // default 10/s
	PerKeyBurst    int     `yaml:"per_key_burst"`    // default 20
	PerSource      float64 `yaml:"per_source"`       // default 5/s
	PerSourceBurst int     `yaml:"per_source_burst"` // default 20
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.DefaultTTLDays == 0 {
		c.DefaultTTLDays = 5
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 16 << 10
	}
	if c.RateLimit.PerKey == 0 {
		c.RateLimit.PerKey = 10
	}
	if c.RateLimit.PerKeyBurst == 0 {
		c.RateLimit.PerKeyBurst = 20
	}
	if c.RateLimit.PerSource == 0 {
		c.RateLimit.PerSource = 5
	}
	if c.RateLimit.PerSourceBurst == 0 {
		c.RateLimit.PerSourceBurst = 20
	}
}

// Validate reports every problem at once, each naming its key path
// (api.keys[0].sha256: …). Unset fields that have defaults are fine.
func (c Config) Validate() configerr.List {
	var problems configerr.List
	if c.Listen == "" {
		return nil // API off: nothing else matters
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		problems.Add("api.listen", "%q is not host:port", c.Listen)
	}
	switch {
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		problems.Add("api.tls_cert_file", "tls_cert_file and tls_key_file go together")
	case c.TLSCertFile == "" && err == nil && !httpserve.Loopback(host):
		problems.Add("api.listen", "%q is not a loopback address: plain HTTP is only allowed on loopback; set api.tls_cert_file and api.tls_key_file", c.Listen)
	}
	if len(c.Keys) == 0 {
		problems.Add("api.keys", "at least one app key is needed, or no app can call the API")
	}
	apps, hashes := map[string]int{}, map[string]int{}
	for i, k := range c.Keys {
		key := fmt.Sprintf("api.keys[%d]", i)
		if !validApp(k.App) {
			problems.Add(key+".app", "%q: want 1–64 of A-Z a-z 0-9 . _ -", k.App)
		} else if j, dup := apps[k.App]; dup {
			problems.Add(key+".app", "%q repeats keys[%d].app", k.App, j)
		} else {
			apps[k.App] = i
		}
		h := strings.ToLower(k.SHA256)
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			problems.Add(key+".sha256", "want 64 hex digits (the SHA-256 of the key, e.g. from `printf %%s \"$KEY\" | sha256sum`), not the key itself")
		} else if j, dup := hashes[h]; dup {
			problems.Add(key+".sha256", "same key as keys[%d]", j)
		} else {
			hashes[h] = i
		}
	}
	if c.DefaultTTLDays != 0 && (c.DefaultTTLDays < minTTLDays || c.DefaultTTLDays > maxTTLDays) {
		problems.Add("api.default_ttl_days", "%d: want %d–%d", c.DefaultTTLDays, minTTLDays, maxTTLDays)
	}
	if c.MaxBodyBytes < 0 || c.MaxBodyBytes > 1<<20 {
		problems.Add("api.max_body_bytes", "%d: want 1–1048576", c.MaxBodyBytes)
	}
	r := c.RateLimit
	if r.PerKey < 0 || r.PerKeyBurst < 0 {
		problems.Add("api.rate_limit.per_key", "must not be negative")
	}
	if r.PerSource < 0 || r.PerSourceBurst < 0 {
		problems.Add("api.rate_limit.per_source", "must not be negative")
	}
	return problems
}

func validApp(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// HashKey is the form a key takes in the config: hex SHA-256 of the key.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// GenerateKey makes a new random API key (256 bits, URL-safe base64) and
// its config hash.
func GenerateKey() (key, sha256Hex string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	key = base64.RawURLEncoding.EncodeToString(b)
	return key, HashKey(key), nil
}

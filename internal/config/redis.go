package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/configerr"
)

// Redis is the shared store of a multi-node deployment (store.backend:
// redis). One address is a single Redis; several are Cluster seeds; with
// master_name they are Sentinels.
type Redis struct {
	Addrs        []string `yaml:"addrs"`
	Cluster      bool     `yaml:"cluster"`
	MasterName   string   `yaml:"master_name"`
	Username     string   `yaml:"username"`
	Password     Secret   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	DB           int      `yaml:"db"`
	Prefix       string   `yaml:"prefix"`
	// Grace is how long past a record's expiry Redis itself drops it, in
	// case no sweeper took it first.
	Grace time.Duration `yaml:"grace"`
	// SentinelUsername and SentinelPassword authenticate to the Sentinels
	// (with master_name), if they require it.
	SentinelUsername     string `yaml:"sentinel_username"`
	SentinelPassword     Secret `yaml:"sentinel_password"`
	SentinelPasswordFile string `yaml:"sentinel_password_file"`
	// MinReplicas above 0 makes every write sipwake acknowledges (a
	// REGISTER's 200, an account's 201, an erasure) wait until that many
	// replicas have it; fewer within ReplicaTimeout fail the request.
	MinReplicas    int           `yaml:"min_replicas"`
	ReplicaTimeout time.Duration `yaml:"replica_timeout"`
	// TLS turns on TLS to Redis and the Sentinels, never falling back to
	// plain text. TLSCAFile replaces the system roots; TLSCertFile and
	// TLSKeyFile are the client certificate for a Redis that asks for one
	// (tls-auth-clients); TLSServerName is the name to verify instead of
	// the address' host.
	TLS           bool   `yaml:"tls"`
	TLSCAFile     string `yaml:"tls_ca_file"`
	TLSCertFile   string `yaml:"tls_cert_file"`
	TLSKeyFile    string `yaml:"tls_key_file"`
	TLSServerName string `yaml:"tls_server_name"`
	// Timeout bounds each command to Redis (0: store.DefaultRedisTimeout),
	// so an unreachable Redis fails a REGISTER or a lease check in that
	// time instead of holding it.
	Timeout time.Duration `yaml:"timeout"`
}

func (r Redis) validate(problems *configerr.List, seal Seal) {
	if len(r.Addrs) == 0 {
		problems.Add("store.redis.addrs", "needs at least one host:port (or a unix socket path)")
	}
	for i, a := range r.Addrs {
		if !strings.HasPrefix(a, "/") && !isHostPort(a) {
			problems.Bad(fmt.Sprintf("store.redis.addrs[%d]", i), a, "host:port or /path/to/redis.sock")
		}
	}
	if r.Password != "" && r.PasswordFile != "" {
		problems.Add("store.redis.password", "set password or password_file, not both")
	}
	if r.SentinelPassword != "" && r.SentinelPasswordFile != "" {
		problems.Add("store.redis.sentinel_password", "set sentinel_password or sentinel_password_file, not both")
	}
	if r.MasterName == "" && (r.SentinelUsername != "" || r.SentinelPassword != "" || r.SentinelPasswordFile != "") {
		problems.Add("store.redis.sentinel_username", "sentinel credentials need master_name (the Sentinels' name of the primary)")
	}
	if r.DB < 0 || (r.DB != 0 && (r.Cluster || len(r.Addrs) > 1 && r.MasterName == "")) {
		problems.Add("store.redis.db", "%d is not allowed (0 on a Cluster; 0..15 otherwise)", r.DB)
	}
	if r.Grace < 0 {
		problems.Bad("store.redis.grace", r.Grace, "0 or more")
	}
	switch {
	case r.MinReplicas < 0 || r.MinReplicas > maxMinReplicas:
		problems.Bad("store.redis.min_replicas", r.MinReplicas, fmt.Sprintf("0 (do not wait) to %d", maxMinReplicas))
	case r.MinReplicas > 0 && (r.Cluster || len(r.Addrs) > 1 && r.MasterName == ""):
		problems.Add("store.redis.min_replicas", "not supported with a Redis Cluster (a single Redis or Sentinel only)")
	}
	if r.ReplicaTimeout != 0 && (r.ReplicaTimeout < 10*time.Millisecond || r.ReplicaTimeout > 5*time.Second) {
		problems.Bad("store.redis.replica_timeout", r.ReplicaTimeout, "between 10ms and 5s; 0 for 1s")
	}
	r.validateTLS(problems)
	if r.Timeout != 0 && (r.Timeout < 10*time.Millisecond || r.Timeout > time.Minute) {
		problems.Bad("store.redis.timeout", r.Timeout, "between 10ms and 1m (0: 1s)")
	}
	if seal.Key == "" && seal.KeyFile == "" {
		problems.Add("seal.key", "required with store.backend redis (every node must seal with the same key; a generated dev key is per node)")
	}
}

// maxMinReplicas bounds store.redis.min_replicas: more is a typo.
const maxMinReplicas = 16

// validateTLS checks the TLS keys go together and their files load.
func (r Redis) validateTLS(problems *configerr.List) {
	if !r.TLS {
		for _, kv := range [][2]string{{"tls_ca_file", r.TLSCAFile}, {"tls_cert_file", r.TLSCertFile}, {"tls_key_file", r.TLSKeyFile}, {"tls_server_name", r.TLSServerName}} {
			if kv[1] != "" {
				problems.Add("store.redis."+kv[0], "set, but store.redis.tls is off: set tls: true (sipwake does not guess whether to speak TLS)")
			}
		}
		return
	}
	if (r.TLSCertFile == "") != (r.TLSKeyFile == "") {
		problems.Add("store.redis.tls_cert_file", "store.redis.tls_cert_file and store.redis.tls_key_file: set both or neither")
		return
	}
	var ke *keyError
	if _, err := r.TLSConfig(); errors.As(err, &ke) {
		problems.Add(ke.key, "%v", ke.err)
	}
}

// keyError is a problem with the file one key names.
type keyError struct {
	key string
	err error
}

func (e *keyError) Error() string { return "config: " + e.key + ": " + e.err.Error() }
func (e *keyError) Unwrap() error { return e.err }

// TLSConfig is the client TLS configuration for Redis, nil when
// store.redis.tls is off. It reads the CA and client certificate files;
// an error names the key of the file at fault.
func (r Redis) TLSConfig() (*tls.Config, error) {
	if !r.TLS {
		return nil, nil
	}
	c := &tls.Config{ServerName: r.TLSServerName, MinVersion: tls.VersionTLS12}
	if r.TLSCAFile != "" {
		pem, err := os.ReadFile(r.TLSCAFile)
		if err != nil {
			return nil, &keyError{"store.redis.tls_ca_file", err}
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, &keyError{"store.redis.tls_ca_file", fmt.Errorf("file %q holds no PEM certificate", r.TLSCAFile)}
		}
	}
	if r.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.TLSCertFile, r.TLSKeyFile)
		if err != nil {
			return nil, &keyError{"store.redis.tls_cert_file", err}
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Secret returns the Redis password, read from password_file if set.
func (r Redis) Secret() (string, error) {
	return readSecret("store.redis.password_file", r.Password, r.PasswordFile)
}

// SentinelSecret returns the Sentinels' password, read from
// sentinel_password_file if set.
func (r Redis) SentinelSecret() (string, error) {
	return readSecret("store.redis.sentinel_password_file", r.SentinelPassword, r.SentinelPasswordFile)
}

// readSecret is value, or the trimmed content of file if set (key names it).
func readSecret(key string, value Secret, file string) (string, error) {
	if file == "" {
		return string(value), nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("config: %s: %w", key, err)
	}
	return strings.TrimSpace(string(raw)), nil
}

// Cluster is what several nodes sharing a Redis store need of each other.
type Cluster struct {
	// NodeAddress is host:port where the other nodes reach this node's SIP
	// UDP listener (to hand it calls for devices that woke through it).
	// Empty: sip.public_address, else the UDP listen address.
	NodeAddress string `yaml:"node_address"`
	// RescanInterval is how often a node looks for handed-over accounts
	// other nodes took in, to take them over if their node dies.
	RescanInterval time.Duration `yaml:"rescan_interval"`
}

func (c Cluster) validate(problems *configerr.List) {
	if c.NodeAddress != "" && !isHostPort(c.NodeAddress) {
		problems.Bad("cluster.node_address", c.NodeAddress, "host:port of this node's SIP UDP listener, an IPv6 host in brackets: [2001:db8::1]:5060")
	}
	if c.RescanInterval < 100*time.Millisecond || c.RescanInterval > time.Hour {
		problems.Bad("cluster.rescan_interval", c.RescanInterval, "between 100ms and 1h")
	}
}

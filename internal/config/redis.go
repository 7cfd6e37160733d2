package config

import (
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
	if r.DB < 0 || (r.DB != 0 && (r.Cluster || len(r.Addrs) > 1 && r.MasterName == "")) {
		problems.Add("store.redis.db", "%d is not allowed (0 on a Cluster; 0..15 otherwise)", r.DB)
	}
	if r.Grace < 0 {
		problems.Bad("store.redis.grace", r.Grace, "0 or more")
	}
	if seal.Key == "" && seal.KeyFile == "" {
		problems.Add("seal.key", "required with store.backend redis (every node must seal with the same key; a generated dev key is per node)")
	}
}

// Secret returns the Redis password, read from password_file if set.
func (r Redis) Secret() (string, error) {
	if r.PasswordFile == "" {
		return string(r.Password), nil
	}
	raw, err := os.ReadFile(r.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("config: store.redis.password_file: %w", err)
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

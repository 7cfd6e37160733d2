package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
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

func (r Redis) validate(seal Seal) []error {
	var errs []error
	if len(r.Addrs) == 0 {
		errs = append(errs, errors.New("store.redis.addrs: needs at least one host:port (or a unix socket path)"))
	}
	for i, a := range r.Addrs {
		if !strings.HasPrefix(a, "/") && !isHostPort(a) {
			errs = append(errs, fmt.Errorf("store.redis.addrs[%d]: %q is not allowed (host:port or /path/to/redis.sock)", i, a))
		}
	}
	if r.Password != "" && r.PasswordFile != "" {
		errs = append(errs, errors.New("store.redis.password: set password or password_file, not both"))
	}
	if r.DB < 0 || (r.DB != 0 && (r.Cluster || len(r.Addrs) > 1 && r.MasterName == "")) {
		errs = append(errs, fmt.Errorf("store.redis.db: %d is not allowed (0 on a Cluster; 0..15 otherwise)", r.DB))
	}
	if r.Grace < 0 {
		errs = append(errs, fmt.Errorf("store.redis.grace: %q is not allowed (0 or more)", r.Grace))
	}
	if seal.Key == "" && seal.KeyFile == "" {
		errs = append(errs, errors.New("seal.key: required with store.backend redis (every node must seal with the same key; a generated dev key is per node)"))
	}
	return errs
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

func (c Cluster) validate() []error {
	var errs []error
	if c.NodeAddress != "" && !isHostPort(c.NodeAddress) {
		errs = append(errs, fmt.Errorf("cluster.node_address: %q is not allowed (host:port of this node's SIP UDP listener, an IPv6 host in brackets: [2001:db8::1]:5060)", c.NodeAddress))
	}
	if c.RescanInterval < 100*time.Millisecond || c.RescanInterval > time.Hour {
		errs = append(errs, fmt.Errorf("cluster.rescan_interval: %q is not allowed (between 100ms and 1h)", c.RescanInterval))
	}
	return errs
}

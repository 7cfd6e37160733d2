package peertest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisHAOptions shape a Redis watched by Sentinels.
type RedisHAOptions struct {
	// Replicas of the primary (default 1).
	Replicas int
	// Sentinels watching it (default 3; a failover needs a majority).
	Sentinels int
	// Extra are more redis-server arguments for the primary and replicas.
	Extra []string
	// TLS, if set, makes every node and Sentinel speak only TLS, with a
	// server certificate from this CA, to clients and to each other
	// (tls-replication). Clients are not asked for certificates.
	TLS *TestCA
	// SentinelPassword, if set, is the password the Sentinels ask of their
	// clients (and of each other).
	SentinelPassword string
}

// RedisHA is a primary, its replicas and the Sentinels that promote a
// replica when the primary dies, as a Sentinel deployment runs. The data
// nodes listen on IP(tb, 200+i):6379 (the primary is i = 0), the Sentinels
// on IP(tb, 220+i):26379. Failure detection is fast (1 s) so a failover
// takes seconds. Everything is killed in tb.Cleanup.
type RedisHA struct {
	// MasterName is the name the Sentinels know the primary by.
	MasterName string
	// Sentinels are the Sentinels' host:port, for RedisOptions.Addrs.
	Sentinels []string

	nodes    map[string]*process // by host:port
	watchers []*process
	tls      *tls.Config // the helper's own clients'
	password string      // the Sentinels'
}

// haMasterName is the Sentinels' name of a RedisHA primary.
const haMasterName = "sipwake"

// StartRedisHA starts a primary, its replicas and Sentinels, and returns
// once every replica is in sync and every Sentinel knows every replica and
// the other Sentinels (before that, a failover could not happen).
func StartRedisHA(tb testing.TB, opts RedisHAOptions) *RedisHA {
	tb.Helper()
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Sentinels == 0 {
		opts.Sentinels = 3
	}
	h := &RedisHA{MasterName: haMasterName, nodes: map[string]*process{}, password: opts.SentinelPassword}
	primary := Addr(tb, 200, 6379)
	for i := range opts.Replicas + 1 {
		ip := IP(tb, 200+i)
		// Any node may become the primary: a new replica must sync at
		// once, not after the default diskless-sync delay of 5 s.
		args := append([]string{"--repl-diskless-sync-delay", "0"}, opts.Extra...)
		if i > 0 {
			// The kernel would show the primary 127.0.0.1 as a replica's
			// address; the Sentinels learn replicas from the primary.
			args = append(args, "--replicaof", IP(tb, 200), "6379", "--replica-announce-ip", ip)
		}
		port := "6379"
		if opts.TLS != nil {
			port = "0"
			for _, kv := range h.tlsSettings(tb, opts.TLS, ip, "6379") {
				args = append(args, "--"+kv[0], kv[1])
			}
		}
		p, _ := startRedisServer(tb, shortDir(tb, "swr"), ip, port, args...)
		addr := Addr(tb, 200+i, 6379)
		waitRedis(tb, p, "tcp", addr)
		h.nodes[addr] = p
	}
	for i := range opts.Sentinels {
		ip := IP(tb, 220+i)
		dir := shortDir(tb, "sws")
		lines := []string{
			"port 26379",
			"bind " + ip,
			"dir " + dir,
			// Sentinels find each other by the address they announce.
			"sentinel announce-ip " + ip,
			fmt.Sprintf("sentinel monitor %s %s 6379 %d", haMasterName, IP(tb, 200), opts.Sentinels/2+1),
			"sentinel down-after-milliseconds " + haMasterName + " 1000",
			"sentinel failover-timeout " + haMasterName + " 3000",
		}
		if opts.SentinelPassword != "" {
			lines = append(lines, "requirepass "+opts.SentinelPassword)
		}
		if opts.TLS != nil {
			lines[0] = "port 0"
			for _, kv := range h.tlsSettings(tb, opts.TLS, ip, "26379") {
				lines = append(lines, kv[0]+" "+kv[1])
			}
		}
		conf := strings.Join(lines, "\n") + "\n"
		// Sentinel rewrites its config file, so it gets one of its own.
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			tb.Fatal(err)
		}
		p := startRedisProcess(tb, "redis-sentinel", dir, path, "--sentinel")
		addr := Addr(tb, 220+i, 26379)
		waitRedis(tb, p, "tcp", addr)
		h.watchers = append(h.watchers, p)
		h.Sentinels = append(h.Sentinels, addr)
	}
	h.waitFor(tb, "replicas in sync and Sentinels acquainted", func(ctx context.Context) (bool, error) {
		info, err := h.info(ctx, primary)
		if err != nil {
			return false, err
		}
		if strings.Count(info, ",state=online,") < opts.Replicas {
			return false, nil
		}
		for _, s := range h.Sentinels {
			var m map[string]string
			err := h.askSentinel(s, func(c *redis.SentinelClient) (err error) {
				m, err = c.Master(ctx, haMasterName).Result()
				return err
			})
			if err != nil || m["num-slaves"] != strconv.Itoa(opts.Replicas) || m["num-other-sentinels"] != strconv.Itoa(opts.Sentinels-1) {
				return false, err
			}
		}
		return true, nil
	})
	return h
}

// tlsSettings are the redis-server settings (name, value) of a node or
// Sentinel on ip that speaks only TLS, on port, with a certificate from
// ca; it also makes the helper's clients trust ca.
func (h *RedisHA) tlsSettings(tb testing.TB, ca *TestCA, ip, port string) [][2]string {
	tb.Helper()
	h.tls = &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	cert, key := ca.IssueFiles(tb, ip+"-"+port, ip)
	return [][2]string{
		{"tls-port", port}, {"tls-cert-file", cert}, {"tls-key-file", key}, {"tls-ca-cert-file", ca.File},
		{"tls-replication", "yes"}, {"tls-auth-clients", "no"},
	}
}

// Primary is the primary's host:port as the first Sentinel names it.
func (h *RedisHA) Primary(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, err := h.primaryOf(ctx, h.Sentinels[0])
	if err != nil {
		tb.Fatalf("peertest: ask Sentinel for the primary: %v", err)
	}
	return addr
}

// KillPrimary kills the primary with SIGKILL (a crash: no shutdown save,
// nothing more sent to the replicas) and returns its host:port.
func (h *RedisHA) KillPrimary(tb testing.TB) string {
	tb.Helper()
	addr := h.Primary(tb)
	h.nodes[addr].kill()
	return addr
}

// WaitPromoted waits until the failover is over: every Sentinel names a
// primary other than old, that node serves as primary, and every other
// node still running replicates it and is in sync. It returns the new
// primary's host:port.
func (h *RedisHA) WaitPromoted(tb testing.TB, old string) string {
	tb.Helper()
	live := 0
	for _, p := range h.nodes {
		if !p.exited() {
			live++
		}
	}
	var primary string
	h.waitFor(tb, "a replica promoted in place of "+old, func(ctx context.Context) (bool, error) {
		primary = ""
		for _, s := range h.Sentinels {
			addr, err := h.primaryOf(ctx, s)
			if err != nil || addr == old || primary != "" && addr != primary {
				return false, err
			}
			primary = addr
		}
		info, err := h.info(ctx, primary)
		return err == nil && strings.Contains(info, "role:master") && strings.Count(info, ",state=online,") >= live-1, err
	})
	return primary
}

// Replicas are the host:port of the nodes replicating the primary (as the
// first Sentinel sees them), dead ones included.
func (h *RedisHA) Replicas(tb testing.TB) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var rs []map[string]string
	err := h.askSentinel(h.Sentinels[0], func(c *redis.SentinelClient) (err error) {
		rs, err = c.Replicas(ctx, haMasterName).Result()
		return err
	})
	if err != nil {
		tb.Fatalf("peertest: ask Sentinel for the replicas: %v", err)
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r["name"])
	}
	return out
}

// Freeze stops the node at addr with SIGSTOP (a replica that stalls:
// nothing it is sent is applied) until tb ends or the returned function
// is called.
func (h *RedisHA) Freeze(tb testing.TB, addr string) (thaw func()) {
	tb.Helper()
	p, ok := h.nodes[addr]
	if !ok {
		tb.Fatalf("peertest: no Redis node at %s", addr)
	}
	p.signal(syscall.SIGSTOP)
	thaw = func() { p.signal(syscall.SIGCONT) }
	tb.Cleanup(thaw) // before the process is stopped: SIGTERM waits on a stopped one
	return thaw
}

func (h *RedisHA) primaryOf(ctx context.Context, sentinel string) (string, error) {
	var hp []string
	err := h.askSentinel(sentinel, func(c *redis.SentinelClient) (err error) {
		hp, err = c.GetMasterAddrByName(ctx, haMasterName).Result()
		return err
	})
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// askSentinel runs fn with a client of the Sentinel at addr.
func (h *RedisHA) askSentinel(addr string, fn func(*redis.SentinelClient) error) error {
	c := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1, TLSConfig: h.tls, Password: h.password})
	defer func() { _ = c.Close() }()
	return fn(c)
}

// info is the INFO replication section of the node at addr.
func (h *RedisHA) info(ctx context.Context, addr string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, TLSConfig: h.tls})
	defer func() { _ = c.Close() }()
	return c.Info(ctx, "replication").Result()
}

// waitFor polls cond until it holds, failing tb after 30 s with what and
// the last error.
func (h *RedisHA) waitFor(tb testing.TB, what string, cond func(context.Context) (bool, error)) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ok, err := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("peertest: Redis HA: no %s after 30s (last error: %v)", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package peertest

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// StartRedis starts a private redis-server for tb and returns the
// address to give RedisOptions.Addrs: a unix socket in a short temporary
// directory (no port to clash with parallel tests), or, if tcpAddr is set
// (e.g. peertest.Addr(tb, 1, 6379)), that TCP address as well and as the
// answer. Nothing is persisted (--save "" --appendonly no). The server is
// killed in tb.Cleanup and its log printed if the test failed. A missing
// redis-server (or -short) skips tb, naming the Debian package. extra are more
// redis-server arguments (relative paths are in the server's directory).
func StartRedis(tb testing.TB, tcpAddr string, extra ...string) string {
	tb.Helper()
	bind, port := "127.0.0.1", "0"
	if tcpAddr != "" {
		host, p, err := net.SplitHostPort(tcpAddr)
		if err != nil {
			tb.Fatal(err)
		}
		bind, port = host, p
	}
	dir := shortDir(tb, "swr")
	p, sock := startRedisServer(tb, dir, bind, port, extra...)
	if tcpAddr != "" {
		waitRedis(tb, p, "tcp", tcpAddr)
		return tcpAddr
	}
	waitRedis(tb, p, "unix", sock)
	return sock
}

// startRedisServer starts redis-server in dir listening on bind:port (0: no
// TCP) and on dir/redis.sock, without persistence or eviction, and returns
// the process and the socket's path.
func startRedisServer(tb testing.TB, dir, bind, port string, extra ...string) (*process, string) {
	tb.Helper()
	sock := filepath.Join(dir, "redis.sock")
	args := []string{
		"--port", port, "--bind", bind,
		"--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", "", "--daemonize", "no",
		"--maxmemory-policy", "noeviction",
	}
	return startRedisProcess(tb, "redis-server", dir, append(args, extra...)...), sock
}

// startRedisProcess runs redis-server (a Sentinel when args say so) in
// dir, its log in dir/name.log.
func startRedisProcess(tb testing.TB, name, dir string, args ...string) *process {
	tb.Helper()
	bin := Need(tb, "redis-server", "redis-server")
	return startProcess(tb, name, dir, filepath.Join(dir, name+".log"), nil, append([]string{bin}, args...)...)
}

// waitRedis waits until p accepts connections on addr (network "tcp" or
// "unix"), failing tb if it exits or takes more than 10 s.
func waitRedis(tb testing.TB, p *process, network, addr string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.exited() {
			tb.Fatalf("peertest: %s exited at start", p.name)
		}
		if c, err := net.DialTimeout(network, addr, time.Second); err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("peertest: %s did not listen on %s within 10s", p.name, addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

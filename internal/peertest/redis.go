package peertest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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
	bin := Need(tb, "redis-server", "redis-server")
	dir, err := os.MkdirTemp("", "swr")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	port, bind := "0", "127.0.0.1"
	if tcpAddr != "" {
		host, p, err := net.SplitHostPort(tcpAddr)
		if err != nil {
			tb.Fatal(err)
		}
		port, bind = p, host
	}
	args := []string{
		"--port", port, "--bind", bind,
		"--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", "", "--daemonize", "no",
		"--maxmemory-policy", "noeviction",
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Dir = dir
	var out Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if tb.Failed() {
			tb.Logf("redis-server log:\n%s", out.String())
		}
	})

	addr := sock
	network := "unix"
	if tcpAddr != "" {
		addr, network = tcpAddr, "tcp"
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			tb.Fatalf("redis-server exited at start:\n%s", out.String())
		default:
		}
		if c, err := net.DialTimeout(network, addr, time.Second); err == nil {
			_ = c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redis-server did not listen on %s within 10s:\n%s", addr, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Package peertest starts real SIP peers — Kamailio, sipp and linphonec —
// for tests, in the way net/http/httptest starts servers: each peer gets a
// working directory from t.TempDir, listens on an explicit 127.0.0.0/8
// address, is killed in t.Cleanup, and has its logs written to the test log
// when the test fails. A missing binary skips the test and names the Debian
// package to install (scripts/deps.sh installs them all; CI never skips).
// With -short every peer skips its test, so go test -short ./... is the
// fast lane that needs none installed.
//
// A typical test:
//
//	k := peertest.StartKamailio(t, peertest.KamailioOptions{
//		Addr: peertest.Addr(t, 1, 5060), Users: map[string]string{"alice": "pw"},
//	})
//	res, err := peertest.RunSipp(t, peertest.SippOptions{
//		Scenario:  peertest.Scenario(t, "register_auth"),
//		Remote:    k.Addr, // or sipwake's address, with k behind it
//		LocalIP:   peertest.IP(t, 2), LocalPort: 5060,
//		Injection: peertest.RegisterInjection(peertest.SippUser{User: "alice", …}),
//		Keys:      map[string]string{"expires": "600"},
//	})
//	bs, err := k.Locations(ctx, "sip:alice@example.test")
//
// peertest owns process lifecycle and the peers' configuration; it does not
// speak SIP itself and has no opinion on what sipwake should do.
package peertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// IP returns the loopback address 127.a.b.n for peer number n (1..254) of
// the calling test. a.b is a hash of the test binary and t.Name(), so the
// same test always gets the same addresses, distinct n never collide within
// a test, and tests running in parallel (in one binary or in several
// packages at once) almost never share an address. Callers pick ports.
func IP(t testing.TB, n int) string {
	t.Helper()
	if n < 1 || n > 254 {
		t.Fatalf("peertest.IP: n=%d, want 1..254", n)
	}
	h := fnv.New32a()
	h.Write([]byte(filepath.Base(os.Args[0])))
	h.Write([]byte{0})
	h.Write([]byte(t.Name()))
	s := h.Sum32()
	a := byte(s>>8)%254 + 1 // 1..254: avoid 127.0.x.x, where other tools live
	b := byte(s)
	return fmt.Sprintf("127.%d.%d.%d", a, b, n)
}

// Addr returns IP(t, n) joined with port, e.g. "127.41.7.1:5060".
func Addr(t testing.TB, n, port int) string {
	t.Helper()
	return net.JoinHostPort(IP(t, n), strconv.Itoa(port))
}

// RequiredEnv, set by scripts/test.sh (which installs every peer first) and
// by CI=true, turns a missing peer from a skip into a failure: the test
// command never counts a skipped peer test as passed.
// Not SIPWAKE_*: sipwake reads those as config, and tests start it with
// their environment.
const RequiredEnv = "PEERTEST_REQUIRED"

// Need returns the path of binary, a real peer, naming the Debian package
// that provides it when it is missing: t fails where peers are required
// (RequiredEnv, CI=true) and is skipped elsewhere. With -short it skips t in
// any case: the fast lane (go test -short ./...) runs without real peers.
func Need(t testing.TB, binary, debPkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("peertest: needs %s, a real peer; skipped with -short", binary)
	}
	p, err := exec.LookPath(binary)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("peertest: %s not found (%v); install Debian package %q (scripts/deps.sh)", binary, err, debPkg)
	if os.Getenv(RequiredEnv) != "" || os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// shortDir returns a fresh directory with a short path for unix sockets and
// FIFOs: t.TempDir paths grow with the test name and sun_path holds only
// 107 bytes.
func shortDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("peertest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// process is a child process running in its own process group, with
// stdout+stderr in a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	mu      sync.Mutex
	err     error // from Wait, valid once done is closed
}

// startProcess starts argv in dir with output to logPath. The process is
// stopped in t.Cleanup (registered here, so it runs before cleanups
// registered earlier, e.g. t.TempDir removal) and its log tail is written to
// t.Log if the test failed.
func startProcess(t testing.TB, name, dir, logPath string, env []string, argv ...string) *process {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("peertest: %s: %v", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if env != nil {
		cmd.Env = env
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("peertest: start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		_ = logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(3 * time.Second)
		if t.Failed() {
			dumpFile(t, name+" log", logPath)
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process group at once with SIGKILL: nothing gets to clean
// up (a phone whose app the OS froze and then killed).
func (p *process) kill() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// signal sends sig to the process group, if it still runs.
func (p *process) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children that outlived the leader (kamailio workers) share its group.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// exitCode waits for the process and returns its exit status (-1 when it
// was killed by a signal).
func (p *process) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// dumpFile writes the last 64 KiB of path to the test log.
func dumpFile(t testing.TB, label, path string) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		t.Logf("peertest: %s: %v", label, err)
		return
	}
	const max = 64 << 10
	if len(b) > max {
		b = append([]byte("…(truncated)…\n"), b[len(b)-max:]...)
	}
	t.Logf("peertest: ---- %s (%s) ----\n%s", label, path, b)
}

// waitListening polls /proc/net/{udp,tcp} until something listens on addr
// (ip:port), the process dies, or timeout passes. It reads /proc instead of
// probing with bind or connect so it can never steal the port from the peer.
func waitListening(ctx context.Context, p *process, proto, addr string, timeout time.Duration) error {
	want, err := procNetKey(addr)
	if err != nil {
		return err
	}
	if strings.HasPrefix(addr, "[") {
		proto += "6" // /proc/net/udp6, tcp6
	}
	deadline := time.Now().Add(timeout)
	for {
		if ok, err := procNetHas(proto, want); err != nil {
			return err
		} else if ok {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before listening on %s/%s", p.name, proto, addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s/%s after %v", proto, addr, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// procNetKey renders ip:port the way /proc/net/{udp,tcp} show local
// addresses (little-endian hex IPv4, big-endian hex port), or for an IPv6
// address ([::1]:port) the way udp6 and tcp6 do: four 32-bit words, each
// little-endian.
func procNetKey(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	pn, err := strconv.Atoi(port)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return "", fmt.Errorf("peertest: %q is not an IP address", host)
	}
	var raw []byte
	if ip4 := ip.To4(); ip4 != nil && !strings.Contains(host, ":") {
		raw = []byte{ip4[3], ip4[2], ip4[1], ip4[0]}
	} else {
		for w := 0; w < 16; w += 4 {
			raw = append(raw, ip[w+3], ip[w+2], ip[w+1], ip[w])
		}
	}
	return strings.ToUpper(hex.EncodeToString(raw)) + ":" + fmt.Sprintf("%04X", pn), nil
}

func procNetHas(proto, key string) (bool, error) {
	b, err := os.ReadFile("/proc/net/" + proto)
	if err != nil {
		return false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[1] != key {
			continue
		}
		// TCP: 0A is LISTEN; UDP sockets show 07 (CLOSE) when bound.
		if proto == "tcp" && f[3] != "0A" {
			continue
		}
		return true, nil
	}
	return false, nil
}

// errNotFound is returned by kamcmd wrappers when Kamailio answers 404.
var errNotFound = errors.New("not found")

package bench

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

// sipwakeProcess is cmd/sipwake running on its own, configured only by
// SIPWAKE_* variables, as an operator would run it.
type sipwakeProcess struct {
	Addr    string // SIP, UDP and TCP
	Param   string // pn-param its push app accepts
	dataDir string
	key     []byte
	logPath string
	bin     string
	env     []string
	cmd     *exec.Cmd
	done    chan struct{}
}

// restart stops sipwake and starts it again on the same data dir.
func (p *sipwakeProcess) restart(b *testing.B) *sipwakeProcess {
	b.Helper()
	p.stop()
	q := &sipwakeProcess{Addr: p.Addr, Param: p.Param, dataDir: p.dataDir, key: p.key,
		logPath: p.logPath, bin: p.bin, env: p.env, done: make(chan struct{})}
	q.spawn(b)
	return q
}

func (p *sipwakeProcess) spawn(b *testing.B) {
	b.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	p.cmd = exec.Command(p.bin)
	p.cmd.Dir = filepath.Dir(p.dataDir)
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		b.Fatalf("start sipwake: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	b.Cleanup(func() {
		p.stop()
		if b.Failed() {
			log, _ := os.ReadFile(p.logPath)
			b.Logf("sipwake log:\n%s", log)
		}
	})
	if err := p.waitListening(10 * time.Second); err != nil {
		log, _ := os.ReadFile(p.logPath)
		b.Fatalf("sipwake: %v\n%s", err, log)
	}
}

// sipwakeBinary is -sipwake.bin, or cmd/sipwake built into a temp dir.
func sipwakeBinary(b *testing.B) string {
	b.Helper()
	if *flagSipwakeBin != "" {
		return *flagSipwakeBin
	}
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(b.TempDir(), "sipwake")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sipwake")
	cmd.Dir = filepath.Dir(filepath.Dir(file)) // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build ./cmd/sipwake: %v\n%s", err, out)
	}
	return bin
}

// waitListening polls /proc/net/udp rather than probing the port, which
// could take it from sipwake.
func (p *sipwakeProcess) waitListening(timeout time.Duration) error {
	host, port, _ := net.SplitHostPort(p.Addr)
	ip := net.ParseIP(host).To4()
	pn, _ := strconv.Atoi(port)
	want := strings.ToUpper(hex.EncodeToString([]byte{ip[3], ip[2], ip[1], ip[0]})) + fmt.Sprintf(":%04X", pn)
	deadline := time.Now().Add(timeout)
	for {
		f, err := os.Open("/proc/net/udp")
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		found := false
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) > 1 && fs[1] == want {
				found = true
			}
		}
		_ = f.Close()
		switch {
		case found:
			return nil
		case p.exited():
			return fmt.Errorf("exited before listening on %s (exit %v)", p.Addr, p.cmd.ProcessState)
		case time.Now().After(deadline):
			return fmt.Errorf("not listening on udp %s after %v", p.Addr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *sipwakeProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Memory returns VmRSS and VmHWM (peak RSS) in KiB from /proc.
func (p *sipwakeProcess) Memory(b *testing.B) (rss, hwm int64) {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatalf("sipwake memory: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kib, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			rss = kib
		case "VmHWM":
			hwm = kib
		}
	}
	return rss, hwm
}

// StopAndCount stops sipwake (SIGTERM: a clean shutdown closes the file)
// and counts the records it left in its store.
func (p *sipwakeProcess) StopAndCount(b *testing.B) int {
	b.Helper()
	p.stop()
	st := p.openStore(b)
	defer st.Close()
	n, err := st.Count(context.Background())
	if err != nil {
		b.Fatalf("count: %v", err)
	}
	return n
}

// openStore opens the store sipwake left, once it has exited.
func (p *sipwakeProcess) openStore(b *testing.B) *store.Bolt {
	b.Helper()
	keys, err := store.NewKeyring("k1", map[string][]byte{"k1": p.key})
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenBolt(filepath.Join(p.dataDir, "sipwake.db"), keys, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatalf("open sipwake's store: %v", err)
	}
	return st
}

// stop sends SIGTERM and, after 10 s, SIGKILL.
func (p *sipwakeProcess) stop() {
	if p.exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// OpenFiles counts the process' open file descriptors (/proc/<pid>/fd):
// sockets, the store file, its log.
func (p *sipwakeProcess) OpenFiles() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("sipwake open files: %w", err)
	}
	return len(ents), nil
}

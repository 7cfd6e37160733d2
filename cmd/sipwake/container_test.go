package main

import (
	"context"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/store"
)

// goBuildFlags are the Dockerfile's build flags (its `RUN CGO_ENABLED=0 go
// build ...` line); TestDockerfileBuildsTheTestedBinary keeps them in step.
var goBuildFlags = []string{"build", "-trimpath", "-ldflags=-s -w -X main.version=test -X main.commit=c0ffee"}

const shippedConfig = "../../configs/sipwake.yaml"

func TestDockerfileBuildsTheTestedBinary(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	for _, want := range []string{
		`RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/sipwake ./cmd/sipwake`,
		"COPY configs/sipwake.yaml /etc/sipwake/sipwake.yaml",
		`"sipwake", "healthcheck"`,
		"VOLUME [\"/var/lib/sipwake\"]",
		"USER 65532:65532",
		"EXPOSE 5060/udp 5060/tcp 5061/tcp 8443/tcp 9060/tcp",
	} {
		if !strings.Contains(strings.ReplaceAll(df, "/usr/local/bin/", ""), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// buildShipped builds cmd/sipwake as the Dockerfile does.
func buildShipped(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the release binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "sipwake")
	cmd := exec.Command("go", append(goBuildFlags, "-o", bin, ".")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestShippedBinary builds the static binary, runs it with the shipped
// config (env overrides for the data dir, loopback addresses and a fake
// APNs app), waits for /readyz, runs the HEALTHCHECK command, reloads on
// SIGHUP, and expects exit 0 within the drain bound after SIGTERM.
func TestShippedBinary(t *testing.T) {
	bin := buildShipped(t)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("binary links %v; want static", libs)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("binary has program header %v; want static", p.Type)
		}
	}
	_ = f.Close()

	// What the Dockerfile sets at build time is what `version` says.
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil ||
		!strings.HasPrefix(string(out), "sipwake test (commit c0ffee) go1.") {
		t.Fatalf("sipwake version: %q, %v", out, err)
	}

	apns := pushtest.NewAPNs(t)
	apps, err := yaml.Marshal([]push.AppConfig{apns.App("ios")})
	if err != nil {
		t.Fatal(err)
	}
	sipAddr, adminAddr := peertest.Addr(t, 1, 5060), peertest.Addr(t, 1, 9060)
	env := append(os.Environ(),
		"SIPWAKE_STORE_DATA_DIR="+t.TempDir(),
		"SIPWAKE_SIP_LISTEN_UDP="+sipAddr,
		"SIPWAKE_SIP_LISTEN_TCP="+sipAddr,
		"SIPWAKE_ADMIN_LISTEN="+adminAddr,
		"SIPWAKE_SHUTDOWN_DRAIN_TIMEOUT=2s",
		"SIPWAKE_LOG_FORMAT=json",
		"SIPWAKE_SEAL_KEY="+base64.StdEncoding.EncodeToString(store.NewKey()),
		"SIPWAKE_PUSH_APPS="+string(apps),
	)
	cmd, exited, logs := startShipped(t, bin, env, "http://"+adminAddr+"/readyz")

	hc := exec.Command(bin, "healthcheck", "-config", shippedConfig)
	hc.Env = env
	if out, err := hc.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("HEALTHCHECK command: %v %s", err, out)
	}

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, `"msg":"reload done"`)

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(2*time.Second + 5*time.Second):
		t.Fatal("no exit within the drain bound (2s) plus 5s")
	}
	t.Logf("SIGTERM to exit: %v", time.Since(start))
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("log.format json, yet a line is not JSON: %s", line)
		}
	}
	if !strings.Contains(logs.String(), `"msg":"sipwake stopped"`) || !strings.Contains(logs.String(), `"clean":true`) {
		t.Fatal("no clean stop logged")
	}
}

// startShipped runs the built binary on the shipped config with env and
// returns once ready answers; it is killed when the test ends, its output
// logged if the test failed.
func startShipped(t *testing.T, bin string, env []string, ready string) (*exec.Cmd, <-chan error, *peertest.Buffer) {
	t.Helper()
	logs := &peertest.Buffer{}
	cmd := exec.Command(bin, "-config", shippedConfig)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("sipwake output:\n%s", logs.String())
		}
	})
	waitHTTP(t, ready, exited)
	return cmd, exited, logs
}

func waitHTTP(t *testing.T, url string, exited <-chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	last := ""
	for {
		select {
		case err := <-exited:
			t.Fatalf("sipwake exited before ready: %v", err)
		case <-ctx.Done():
			t.Fatalf("%s never answered 200 (last: %s)", url, last)
		case <-time.After(50 * time.Millisecond):
		}
		res, err := http.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			return
		}
		last = res.Status
	}
}

func waitLog(t *testing.T, logs *peertest.Buffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never showed %s", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

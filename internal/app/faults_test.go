package app_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/store"
)

// outage is a TCP proxy in front of a push fake that can be cut (every
// connection reset, new ones refused) and restored on the same address:
// the fake's keys and certificates stay, only the network goes.
type outage struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newOutage(t *testing.T, target string) *outage {
	o := &outage{t: t, addr: "127.0.0.1:0", target: target, conns: map[net.Conn]bool{}}
	o.up()
	o.addr = o.ln.Addr().String()
	t.Cleanup(o.down)
	return o
}

func (o *outage) url() string { return "https://" + o.addr }

func (o *outage) up() {
	o.t.Helper()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		o.t.Fatal(err)
	}
	o.mu.Lock()
	o.ln = ln
	o.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go o.pipe(c)
		}
	}()
}

func (o *outage) pipe(c net.Conn) {
	up, err := net.Dial("tcp", o.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !o.track(c, up) {
		return
	}
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
	_, _ = io.Copy(c, up)
	_ = c.Close()
}

func (o *outage) track(cs ...net.Conn) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln == nil {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		o.conns[c] = true
	}
	return true
}

func (o *outage) down() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln != nil {
		_ = o.ln.Close()
		o.ln = nil
	}
	for c := range o.conns {
		_ = c.Close()
		delete(o.conns, c)
	}
}

// APNs unreachable, then stalled: each call gets 480 within calls.wait and
// a small margin, the record stays, and once APNs is back a new call is
// woken and answered.
func TestPushServiceDownOrStalledThenBack(t *testing.T) {
	const wait = 3 * time.Second
	const margin = 2 * time.Second
	var apns *outage
	w := newWorld(t, func(c *config.Config) {
		c.Calls.Wait = wait
		apns = newOutage(t, strings.TrimPrefix(c.Push.Apps[0].APNs.Endpoint, "https://"))
		c.Push.Apps[0].APNs.Endpoint = apns.url()
	})
	tok := w.fakes.APNs.VoIPToken(60)
	w.sleepingDevice("alice", tok, 5070)

	expect480 := func(what string) {
		t.Helper()
		start := time.Now()
		mustSucceed(t, what, w.call("alice", "caller_expect", map[string]string{"expect": "480"}))
		took := time.Since(start)
		t.Logf("%s: 480 after %v", what, took.Round(time.Millisecond))
		if took > wait+margin {
			t.Fatalf("%s: 480 after %v, want within %v", what, took, wait+margin)
		}
		if w.records() != 1 {
			t.Fatalf("%s: %d records, want the device's record kept", what, w.records())
		}
	}

	apns.down()
	expect480("APNs unreachable")

	apns.up()
	w.fakes.APNs.Program(tok, pushtest.Behavior{Stall: true})
	expect480("APNs stalled")

	w.fakes.APNs.Program(tok, pushtest.Behavior{})
	before := len(w.fakes.APNs.Accepted())
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, len(w.fakes.APNs.Pushes())+1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller after recovery", caller)
	mustSucceed(t, "device after recovery", device)
	if len(w.fakes.APNs.Accepted()) <= before {
		t.Fatal("no push delivered after recovery")
	}
}

// registerAny is register_auth whose final answer may be 200 or 500; the
// test reads which from the message trace.
var registerAny = strings.Replace(takeoverScenario, `<recv response="[expect]"/>`,
	`<recv response="500" optional="true" next="done"/>
  <recv response="200"/>
  <label id="done"/>`, 1)

// registerCode registers alice's device with push token prid from port
// through sipwake and returns the final status: 200, or 500 when sipwake
// could not store the binding.
func (w *world) registerCode(prid string, port int) int {
	w.t.Helper()
	inj := "SEQUENTIAL\nalice;" + domain + ";[authentication username=alice password=" + password + "];apns;" + prid + ";" + w.fakes.APNs.Param() + "\n"
	res, _ := peertest.RunSipp(w.t, peertest.SippOptions{
		ScenarioXML: registerAny, Name: "register-any", Remote: w.swAddr,
		LocalIP: w.deviceIP, LocalPort: port, Injection: inj, Keys: map[string]string{"expires": "600"},
	})
	return finalCode(res)
}

// finalCode is the last final status sipp received.
func finalCode(res *peertest.SippResult) int {
	code := 0
	for _, m := range res.Received() {
		if c, _ := statusOf(strings.ReplaceAll(m, "\n", "\r\n")); c >= 200 {
			code = c
		}
	}
	return code
}

// mountTmpfs mounts a tmpfs of size at a fresh directory, or skips.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes into dir until the file system is full and returns the
// filler's path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling: %v", err)
			}
			break
		}
	}
	for { // the last pages
		if _, err := f.Write(chunk[:512]); err != nil {
			break
		}
	}
	return path
}

// With the data dir's file system full, a REGISTER gets 500 (never a 200
// without its record); once space is freed registrations work again, and
// after a restart every acknowledged record is there.
func TestDiskFullRegistrationsFailCleanly(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	w := newWorld(t, func(c *config.Config) { c.Store.DataDir = dir })
	has := func(prid string) bool {
		for _, b := range w.bindings("alice") {
			if b.Device.Token == prid {
				return true
			}
		}
		return false
	}
	acked := []string{pushtest.APNsToken(70)}
	if code := w.registerCode(acked[0], 5070); code != 200 {
		t.Fatalf("first registration: %d", code)
	}

	filler := fill(t, dir)
	refused := 0
	for i := range 40 {
		prid := pushtest.APNsToken(100 + i)
		switch code := w.registerCode(prid, 5071+i%20); code {
		case 200:
			if !has(prid) {
				t.Fatalf("disk full: 200 for %s without its record", prid)
			}
			acked = append(acked, prid)
		case 500:
			refused++
			if has(prid) {
				t.Fatalf("disk full: 500 for %s, yet it is stored", prid)
			}
		default:
			t.Fatalf("disk full: REGISTER answered %d", code)
		}
		if refused >= 3 {
			break
		}
	}
	t.Logf("disk full: %d REGISTERs refused with 500, %d acknowledged (each stored)", refused, len(acked)-1)
	if refused == 0 {
		t.Fatal("the store never ran out of space: nothing was tested")
	}
	if !strings.Contains(w.logs.String(), "no space left on device") {
		t.Error("the log does not say the disk is full")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after := pushtest.APNsToken(200)
	if code := w.registerCode(after, 5095); code != 200 {
		t.Fatalf("after freeing space: %d, want 200", code)
	}
	acked = append(acked, after)

	w.restartWith()
	for _, prid := range acked {
		if !has(prid) {
			t.Fatalf("after restart, acknowledged %s has no record", prid)
		}
	}
	if n := w.records(); n != len(acked) {
		t.Fatalf("after restart: %d records, want %d", n, len(acked))
	}
	if err := w.sw.Store().Scan(context.Background(), func(store.Record) error { return nil }); err != nil {
		t.Fatalf("scan after restart: %v", err)
	}
}

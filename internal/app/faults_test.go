package app_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/store"
)

// APNs unreachable, then stalled: each call gets 480 within calls.wait and
// a small margin, the record stays, and once APNs is back a new call is
// woken and answered.
func TestPushServiceDownOrStalledThenBack(t *testing.T) {
	const wait = 3 * time.Second
	const margin = 2 * time.Second
	var apns *peertest.TCPRelay
	w := newWorld(t, func(c *config.Config) {
		c.Calls.Wait = wait
		apns = peertest.StartTCPRelay(t, "127.0.0.1:0", strings.TrimPrefix(c.Push.Apps[0].APNs.Endpoint, "https://"))
		c.Push.Apps[0].APNs.Endpoint = "https://" + apns.Addr()
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

	apns.Down()
	expect480("APNs unreachable")

	apns.Up()
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

// registerUntilRefused registers new devices of alice (push tokens from
// base on) while the store fails, until three are refused or 40 tried.
// Each 200 must come with its record and each 500 without one: it returns
// the tokens acknowledged and how many were refused, and fails the test
// when none was (the store never failed: nothing was tested).
func (w *world) registerUntilRefused(what string, base int) (acked []string, refused int) {
	w.t.Helper()
	for i := range 40 {
		prid := pushtest.APNsToken(base + i)
		switch code := w.registerFinal("alice", prid, 5071+i%20); code {
		case 200:
			if !w.hasToken("alice", prid) {
				w.t.Fatalf("%s: 200 for %s without its record", what, prid)
			}
			acked = append(acked, prid)
		case 500:
			refused++
			if w.hasToken("alice", prid) {
				w.t.Fatalf("%s: 500 for %s, yet it is stored", what, prid)
			}
		default:
			w.t.Fatalf("%s: REGISTER answered %d", what, code)
		}
		if refused >= 3 {
			break
		}
	}
	if refused == 0 {
		w.t.Fatalf("%s: the store never refused a REGISTER: nothing was tested", what)
	}
	return acked, refused
}

// registerFinal registers user's device with push token prid from port
// through sipwake and returns the final status: 200, or 500 when sipwake
// could not store the binding.
func (w *world) registerFinal(user, prid string, port int) int {
	w.t.Helper()
	inj := "SEQUENTIAL\n" + user + ";" + domain + ";[authentication username=" + user + " password=" + password + "];apns;" + prid + ";" + w.fakes.APNs.Param() + "\n"
	res, _ := peertest.RunSipp(w.t, peertest.SippOptions{
		ScenarioXML: registerAny, Name: "register-any", Remote: w.swAddr,
		LocalIP: w.deviceIP, LocalPort: port, Injection: inj, Keys: map[string]string{"expires": "600"},
	})
	return finalCode(res)
}

// hasToken tells whether user has a stored binding for push token prid.
func (w *world) hasToken(user, prid string) bool {
	w.t.Helper()
	for _, b := range w.bindings(user) {
		if b.Device.Token == prid {
			return true
		}
	}
	return false
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
	w.fullStoreFailsCleanly("disk full", "no space left on device", func() func() {
		filler := fill(t, dir)
		return func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// fullStoreFailsCleanly tells the story of a store that runs out of room:
// a device registers; fill fills the store; REGISTERs then get 500 and
// never 200 without their record, and the log says logSays; the func fill
// returned frees room; then registrations work again without a restart,
// and after a restart every acknowledged record is there.
func (w *world) fullStoreFailsCleanly(what, logSays string, fill func() (free func())) {
	w.t.Helper()
	acked := []string{pushtest.APNsToken(70)}
	if code := w.registerFinal("alice", acked[0], 5070); code != 200 {
		w.t.Fatalf("first registration: %d", code)
	}
	free := fill()
	more, refused := w.registerUntilRefused(what, 100)
	acked = append(acked, more...)
	w.t.Logf("%s: %d REGISTERs refused with 500, %d acknowledged (each stored)", what, refused, len(more))
	if !strings.Contains(w.logs.String(), logSays) {
		w.t.Errorf("%s: the log does not say %q", what, logSays)
	}
	free()
	w.registersAgainKeeping(what+", after freeing room", acked)
}

// registersAgainKeeping checks the recovery from a store failure, without a
// restart: a new device registers (200 with its record); then, after a
// restart, every acknowledged device (acked and that one) has its record,
// and there are no others.
func (w *world) registersAgainKeeping(what string, acked []string) {
	w.t.Helper()
	after := pushtest.APNsToken(200)
	if code := w.registerFinal("alice", after, 5095); code != 200 {
		w.t.Fatalf("%s: %d, want 200", what, code)
	}
	acked = append(acked, after)

	w.restartWith()
	for _, prid := range acked {
		if !w.hasToken("alice", prid) {
			w.t.Fatalf("after restart, acknowledged %s has no record", prid)
		}
	}
	if n := w.records(); n != len(acked) {
		w.t.Fatalf("after restart: %d records, want %d", n, len(acked))
	}
	if err := w.sw.Store().Scan(context.Background(), func(store.Record) error { return nil }); err != nil {
		w.t.Fatalf("scan after restart: %v", err)
	}
}

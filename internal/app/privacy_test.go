package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sipwake/sipwake/internal/config"
)

// After a full flow (register, call woken by push, answer, hang-up), neither
// the data dir nor the default (info) log holds the AOR, the token, the
// password or the caller's number.
func TestNothingPersonalOnDiskOrInLogs(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.Log.Level = "info" })
	tok := w.fakes.APNs.VoIPToken(30)
	w.sleepingDevice("alice", tok, 5070)
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)
	w.stop()

	secrets := []string{"alice@" + domain, "sip:alice", tok, tok[len(tok)-16:], password, "+15550100", "Carol Caller"}
	err := filepath.WalkDir(w.cfg.Store.DataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if strings.Contains(string(raw), s) {
				t.Errorf("%s holds %q in plaintext", filepath.Base(path), s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := w.logs.String()
	if !strings.Contains(logs, "binding stored") {
		t.Fatal("the log is empty: nothing was checked")
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("default log holds %q", s)
		}
	}
}

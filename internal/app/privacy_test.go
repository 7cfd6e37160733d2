package app_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
)

// accountID is an app-chosen handover account id that is personal: the
// user's phone number.
const accountID = "4915112345678"

// After a full flow (register, call woken by push, answer, hang-up) and an
// account handed over, neither the data dir nor the default (info) log
// holds the AOR, the token, the password, the caller's number or the
// account's id.
func TestNothingPersonalOnDiskOrInLogs(t *testing.T) {
	apiAddr := peertest.Addr(t, 6, 8443)
	w := newWorld(t, func(c *config.Config) {
		c.Log.Level = "info"
		c.API.Listen = apiAddr
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
	})
	bobTok := w.fakes.APNs.VoIPToken(31)
	body := `{"aor":"bob@` + domain + `","registrar":"sip:` + w.kam.Addr + `","transport":"udp","username":"bob",` +
		`"password":"` + password + `","expires":600,"push":{"provider":"apns","token":"` + bobTok + `","param":"` + w.fakes.APNs.Param() + `"}}`
	if code := putAccount(t, apiAddr, accountID, body); code != http.StatusCreated {
		t.Fatalf("PUT answered %d", code)
	}
	tok := w.fakes.APNs.VoIPToken(30)
	w.sleepingDevice("alice", tok, 5070)
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)
	w.stop()

	secrets := []string{"alice@" + domain, "sip:alice", tok, tok[len(tok)-16:], password, "+15550100", "Carol Caller",
		"bob@" + domain, bobTok, accountID}
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
	for _, line := range []string{"binding stored", "account handed over", "account.id="} {
		if !strings.Contains(logs, line) {
			t.Fatalf("the log has no %q: nothing was checked", line)
		}
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("default log holds %q", s)
		}
	}
}

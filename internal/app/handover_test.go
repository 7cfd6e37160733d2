package app_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
)

const apiKey = "handover-test-key-0123456789"

// A SIPIS-style app hands its account over the API, goes to sleep; a call
// through the provider's registrar wakes it by push, it connects to
// sipwake (which challenges it with the account's own credentials) and the
// call is answered.
func TestHandedOverAccountCallIsDelivered(t *testing.T) {
	apiAddr := peertest.Addr(t, 6, 8443)
	w := newWorld(t, func(c *config.Config) {
		c.API.Listen = apiAddr
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
	})
	tok := w.fakes.APNs.VoIPToken(40)
	body := `{"aor":"alice@` + domain + `","registrar":"sip:` + w.kam.Addr + `","transport":"udp","username":"alice",` +
		`"password":"` + password + `","expires":600,"push":{"provider":"apns","token":"` + tok + `","param":"` + w.fakes.APNs.Param() + `"}}`
	if code := putAccount(t, apiAddr, "phone-1", body); code != http.StatusCreated {
		t.Fatalf("PUT answered %d", code)
	}
	locs := w.locations("alice")
	if len(locs) != 1 || !strings.Contains(locs[0].Contact, "sw-") || !strings.Contains(locs[0].Contact, w.swAddr) {
		t.Fatalf("registrar holds %+v, want sipwake's contact", locs)
	}
	if n := metric(t, w, "sipwake_upstream_registrations", "registered"); n != 1 {
		t.Fatalf("sipwake_upstream_registrations{state=registered} = %v, want 1", n)
	}

	caller := w.call("alice", "caller_answered", nil)
	ps := waitPushes(t, w.fakes.APNs, 1)
	if ps[0].Token != tok || ps[0].Header.Get("apns-push-type") != "voip" {
		t.Fatalf("call push: %s %v", ps[0].Token, ps[0].Header)
	}
	// The woken app connects to sipwake with the account's credentials.
	app := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "woken app", app)
	if n := len(w.locations("alice")); n != 1 {
		t.Fatalf("the app's own REGISTER reached the registrar: %d contacts", n)
	}
}

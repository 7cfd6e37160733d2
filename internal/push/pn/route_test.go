package pn_test

import (
	"testing"

	"github.com/sipwake/sipwake/internal/push/pn"
)

// TestRoute is docs/PUSH.md's matrix: which of a device's tokens carries
// each kind of push, on the Targets liblinphone's Contacts produce (pn-prid
// and pn-param as in TestTokens).
func TestRoute(t *testing.T) {
	const voip, remote = "VOIPTOKEN0001", "REMOTETOKEN02"
	both := pn.Target{Provider: "apns", Token: voip + ":voip&" + remote + ":remote", Param: "ABCD1234.org.linphone.phone.voip&remote"}
	pushKitOnly := pn.Target{Provider: "apns.dev", Token: voip + ":voip", Param: "ABCD1234.org.linphone.phone.voip"}
	remoteOnly := pn.Target{Provider: "apns", Token: remote, Param: "ABCD1234.org.linphone.phone.remote"}
	android := pn.Target{Provider: "fcm", Token: "fcm-token", Param: "linphone-project"}
	kinds := []pn.Kind{pn.KindCall, pn.KindCancel, pn.KindRegister, pn.KindExpiryWarning, pn.KindMessage}
	for _, c := range []struct {
		name string
		t    pn.Target
		want []string // the token each of kinds goes to; "" = none
	}{
		{"both APNs tokens", both, []string{voip, remote, remote, remote, remote}},
		{"PushKit only (sandbox)", pushKitOnly, []string{voip, "", "", "", ""}},
		{"remote only: calls as alerts", remoteOnly, []string{remote, remote, remote, remote, remote}},
		{"FCM: one token for all", android, []string{"fcm-token", "fcm-token", "fcm-token", "fcm-token", "fcm-token"}},
		{"FCM without a token", pn.Target{Provider: "fcm"}, []string{"", "", "", "", ""}},
		{"a service sipwake does not serve", pn.Target{Provider: "webpush", Token: "x"}, []string{"", "", "", "", ""}},
	} {
		for i, k := range kinds {
			tok, ok := pn.Route(pn.Family(c.t.Provider), k, c.t.Tokens())
			if ok != (c.want[i] != "") || tok.Value != c.want[i] {
				t.Errorf("%s, %s: Route = %q, %v; want %q", c.name, k, tok.Value, ok, c.want[i])
			}
			if got := pn.Routable(c.t, k); got != ok {
				t.Errorf("%s, %s: Routable = %v, Route said %v", c.name, k, got, ok)
			}
		}
	}
}

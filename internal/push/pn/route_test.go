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

// BenchmarkRoutable is what a REGISTER asks of its device's pn-* parameters
// three times over (the refresh push, the expiry warning, Feature-Caps'
// +sip.pnsreg), on the two-token Contact liblinphone sends from an iPhone.
func BenchmarkRoutable(b *testing.B) {
	t := pn.Target{Provider: "apns", Param: "ABCD1234.org.linphone.phone.voip&remote",
		Token: "8d2b1c4c7b0a5f9e3d6c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e:voip&" +
			"1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e:remote"}
	b.ReportAllocs()
	for b.Loop() {
		if !pn.Routable(t, pn.KindRegister) {
			b.Fatal("not routable")
		}
	}
}

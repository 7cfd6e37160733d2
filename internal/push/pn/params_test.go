package pn_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sipwake/sipwake/internal/push/pn"
)

// The pn-prid and pn-param values are liblinphone's, as
// src/push-notification/push-notification-config.cpp (generatePushParams)
// and src/core/app/ios-app-delegate.mm (stringFromToken: upper-case hex and
// ":voip" or ":remote") write them; the remote-first order is Flexisip's
// tester/tests/registrar/register-tester.cc.
func TestTokens(t *testing.T) {
	const (
		voip   = "1D7F6C1E7A4B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5"
		remote = "8E2A9B1C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8"
	)
	cases := []struct {
		name  string
		t     pn.Target
		want  []pn.Token
		voip  bool
		alert bool
	}{
		{"liblinphone iOS, both tokens",
			pn.Target{Provider: "apns", Token: voip + ":voip&" + remote + ":remote", Param: "ABCD1234.org.linphone.phone.voip&remote"},
			[]pn.Token{{voip, "voip"}, {remote, "remote"}}, true, true},
		{"Flexisip's order: remote first",
			pn.Target{Provider: "apns", Token: remote + ":remote&" + voip + ":voip", Param: "ABCD1234.org.linphone.phone.remote&voip"},
			[]pn.Token{{remote, "remote"}, {voip, "voip"}}, true, true},
		{"liblinphone iOS, PushKit only",
			pn.Target{Provider: "apns", Token: voip + ":voip", Param: "ABCD1234.org.linphone.phone.voip"},
			[]pn.Token{{voip, "voip"}}, true, false},
		{"RFC 8599 example: one token, .voip",
			pn.Target{Provider: "apns", Token: voip, Param: "DEF123GHIJ.com.example.app.voip"},
			[]pn.Token{{voip, "voip"}}, true, false},
		{"one token, no service: the bundle's own topic",
			pn.Target{Provider: "apns.dev", Token: remote, Param: "XX.example.org"},
			[]pn.Token{{remote, "remote"}}, false, true},
		{"one untagged token, remote only",
			pn.Target{Provider: "apns", Token: remote, Param: "ABCD1234.org.linphone.phone.remote"},
			[]pn.Token{{remote, "remote"}}, false, true},
		{"FCM: the token whole, colons and all",
			pn.Target{Provider: "fcm", Token: "cUNaHkG98QM:APA91bE83L4-r_EVyMXx", Param: "929724111839"},
			[]pn.Token{{"cUNaHkG98QM:APA91bE83L4-r_EVyMXx", ""}}, false, false},
		{"empty pn-prid", pn.Target{Provider: "apns", Param: "T.b.c.voip"}, nil, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.t.Tokens(); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("Tokens() = %v, want %v", got, c.want)
			}
			if pn.Family(c.t.Provider) != pn.ProviderAPNs {
				return
			}
			if _, ok := pn.TokenFor(c.t.Tokens(), pn.ServiceVoIP); ok != c.voip {
				t.Errorf("voip token: %v, want %v", ok, c.voip)
			}
			if _, ok := pn.TokenFor(c.t.Tokens(), pn.ServiceRemote); ok != c.alert {
				t.Errorf("remote token: %v, want %v", ok, c.alert)
			}
		})
	}
}

func TestAPNsParamNamesTheApp(t *testing.T) {
	cases := []struct {
		param, bundle string
		team          string
		ok            bool
	}{
		{"ABCD1234.org.linphone.phone.voip&remote", "org.linphone.phone", "ABCD1234", true},
		{"ABCD1234.org.linphone.phone.remote&voip", "org.linphone.phone", "ABCD1234", true},
		{"TEAM123456.org.sipwake.test.voip", "org.sipwake.test", "TEAM123456", true},
		{"TEAM123456.org.sipwake.test", "org.sipwake.test", "TEAM123456", true},
		{"org.sipwake.test", "org.sipwake.test", "", true},
		{"org.sipwake.test.voip", "org.sipwake.test", "", true},
		{"TEAM.org.sipwake.testing.voip", "org.sipwake.test", "", false},
		{"TEAM.evil.org.sipwake.test.voip", "org.sipwake.test", "", false},
		{"TEAM.org.other.voip", "org.sipwake.test", "", false},
		{"", "org.sipwake.test", "", false},
	}
	for _, c := range cases {
		team, ok := pn.ParseAPNsParam(c.param).Team(c.bundle)
		if ok != c.ok || team != c.team {
			t.Errorf("%q for %q: team %q ok %v, want %q %v", c.param, c.bundle, team, ok, c.team, c.ok)
		}
	}
}

func TestAppKeyIgnoresTokensServicesAndEnvironment(t *testing.T) {
	a := pn.AppKey("apns", "ABCD1234.org.linphone.phone.voip&remote")
	for _, p := range []struct{ provider, param string }{
		{"apns", "ABCD1234.org.linphone.phone.voip"},
		{"apns.dev", "ABCD1234.org.linphone.phone.remote"},
		{"apns", "ABCD1234.org.linphone.phone"},
	} {
		if got := pn.AppKey(p.provider, p.param); got != a {
			t.Errorf("AppKey(%q, %q) = %q, want %q", p.provider, p.param, got, a)
		}
	}
	if pn.AppKey("apns", "ABCD1234.org.other.voip") == a || pn.AppKey("fcm", "929724111839") == a {
		t.Error("another app has the same key")
	}
}

// A caller's name of any length (two bytes a rune here) is cut to fit,
// never failing the push, and the call id the app matches stays whole.
func TestFitTrimsNeverFails(t *testing.T) {
	name := strings.Repeat("é", 3000)
	m := pn.Message{Kind: pn.KindCall, CallID: "c1@example.org", CallerName: name, CallerURI: "sip:" + name + "@example.org"}
	var b []byte
	pn.Fit(m, 1000, func(m pn.Message) int {
		b, _ = json.Marshal(map[string]string{"n": m.CallerName, "u": m.CallerURI, "c": m.CallID})
		return len(b)
	})
	if len(b) > 1000 {
		t.Fatalf("%d bytes, want at most 1000", len(b))
	}
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if got["c"] != m.CallID || !utf8.ValidString(got["n"]) || got["n"] == "" {
		t.Fatalf("fitted payload %v", got)
	}
}

// Whatever a Contact carries, taking its pn-* parameters apart never
// fails: an APNs pn-prid yields single tokens without their services, any
// other the pn-prid whole.
func FuzzPushParams(f *testing.F) {
	f.Add("apns", "1D7F:voip&8E2A:remote", "ABCD1234.org.linphone.phone.voip&remote")
	f.Add("apns.dev", "EA88:remote", "XX.example.org")
	f.Add("fcm", "cUNaHkG98QM:APA91b", "929724111839")
	f.Add("apns", "&&:voip&:", ".voip&")
	f.Fuzz(func(t *testing.T, provider, prid, param string) {
		tgt := pn.Target{Provider: provider, Token: prid, Param: param}
		apns := pn.Family(provider) == pn.ProviderAPNs
		for _, tok := range tgt.Tokens() {
			if tok.Value == "" {
				t.Fatalf("empty token from pn-prid %q", prid)
			}
			if apns && strings.ContainsAny(tok.Value, "&:") {
				t.Fatalf("APNs token %q is not one token without its service, from pn-prid %q", tok.Value, prid)
			}
			if !apns && tok.Value != prid {
				t.Fatalf("%s token %q is not the whole pn-prid %q", provider, tok.Value, prid)
			}
		}
		p := pn.ParseAPNsParam(param)
		if team, ok := p.Team("org.example.app"); !ok && team != "" {
			t.Fatalf("team %q for a pn-param naming another app", team)
		}
		_ = pn.AppKey(provider, param)
	})
}

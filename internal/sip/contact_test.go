package sip

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
)

// TestURIStringPrintsAsSipgo: the contact sipwake stores and its Path are
// printed by uriString, which must say what sipgo's Uri.String says. The
// push URIs are laid out as liblinphone's account.cpp (generatePushParams)
// sends them from iOS (remote push allowed) and Android, as
// internal/app/clients_test.go's linphoneIOSParams and
// linphoneAndroidParams copy them, and as sipp's register_push.xml does.
func TestURIStringPrintsAsSipgo(t *testing.T) {
	voip, remote := strings.Repeat("8d", 32), strings.Repeat("1f", 32)
	for _, text := range []string{
		"sip:alice@192.0.2.1:5062;transport=udp;pn-prid=" + voip + ":voip&" + remote + ":remote;pn-provider=apns;pn-param=ABCD1234.org.linphone.phone.voip&remote;pn-silent=1;pn-timeout=0;pn-msg-str=IM_MSG;pn-call-str=IC_MSG;pn-groupchat-str=GC_MSG;pn-call-snd=notes_of_the_optimistic.caf;pn-msg-snd=msg.caf",
		"sip:bob@[2001:db8::7]:5062;transport=udp;pn-prid=dGVzdC10b2tlbjpBUEE5MWJG;pn-provider=fcm;pn-param=929724111839;pn-silent=1;pn-timeout=0",
		"sip:carol@127.0.0.1:6001;transport=UDP;pn-provider=apns;pn-prid=" + voip + ";pn-param=ABCD1234.org.example.app.voip",
		"sip:sw-abcdefghijklmnopqrstuvwxyz234567@sipwake.example;transport=udp;lr",
		"sips:dave:secret@example.test",
		"sip:example.test:5080",
		"sip:erin@example.test;user=phone?Subject=hi",
		`sip:frank@example.test;param="a b"`,
		"tel:+15551234567;phone-context=example.test",
	} {
		var u sip.Uri
		if err := sip.ParseUri(text, &u); err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if got, want := uriString(&u), u.String(); got != want {
			t.Errorf("uriString(%s) = %q, want %q", text, got, want)
		}
	}
}

// BenchmarkURIString prints sipp's register_push.xml push Contact URI,
// as storing a binding does.
func BenchmarkURIString(b *testing.B) {
	_, contact := sippPushRegister("u1")
	var u sip.Uri
	if err := sip.ParseUri(strings.Trim(contact[:strings.Index(contact, ">")], "<"), &u); err != nil {
		b.Fatal(err)
	}
	b.Run("sipgo", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = u.String()
		}
	})
	b.Run("uriString", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = uriString(&u)
		}
	})
}

// TestPathPrintedOnceSaysBindingURI: Path, printed once with a stand-in for
// the binding id, names each binding's own URI (with lr), as printing
// bindingURI for every REGISTER did.
func TestPathPrintedOnceSaysBindingURI(t *testing.T) {
	s := fuzzServer(t)
	for _, aor := range []string{"sip:alice@example.test", "sip:bob@example.test"} {
		id := s.relay.BindingID(relay.AOR(aor), relay.Device{Provider: "apns", Token: "t"})
		u := s.bindingURI(id)
		path, supported := s.pathHeaders(id)
		if want := "<" + u.String() + ">"; path.Value() != want || !strings.Contains(want, id.String()+"@") || !strings.Contains(want, ";lr") {
			t.Errorf("Path = %q, want %q", path.Value(), want)
		}
		if supported.Value() != "path" {
			t.Errorf("Supported = %q", supported.Value())
		}
	}
}

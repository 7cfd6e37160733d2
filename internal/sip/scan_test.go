package sip

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/sipmsg"
)

// TestScanAnswer: a registrar's plainly laid-out final answer is read
// without the parser and relayed without sipwake's Via line; anything else
// is left to the parser.
func TestScanAnswer(t *testing.T) {
	const (
		ours   = "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-swsl-0f;rport=5060\r\n"
		device = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=192.0.2.1;rport=6001\r\n"
		rest   = "From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>;tag=2\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\n" +
			"WWW-Authenticate: Digest realm=\"example.test\", nonce=\"abc\"\r\nContent-Length: 4\r\n\r\nbody"
	)
	cases := []struct {
		name, msg string
		status    int
		branch    string
		relay     string // "" when the parser must take it
	}{
		{"challenge", "SIP/2.0 401 Unauthorized\r\n" + ours + device + rest, 401, "z9hG4bK-swsl-0f",
			"SIP/2.0 401 Unauthorized\r\n" + device + rest},
		{"compact and spaced names", "SIP/2.0 403 Forbidden\r\nv : sip/2.0/udp 127.0.0.2:5060;rport;branch=z9hG4bK-swsl-1 \r\nVIA: SIP/2.0/UDP 192.0.2.1\r\n" + rest,
			403, "z9hG4bK-swsl-1", "SIP/2.0 403 Forbidden\r\nVIA: SIP/2.0/UDP 192.0.2.1\r\n" + rest},
		{"a 200", "SIP/2.0 200 OK\r\n" + ours + device + rest, 200, "z9hG4bK-swsl-0f", "SIP/2.0 200 OK\r\n" + device + rest},
		{"a provisional answer", "SIP/2.0 100 Trying\r\n" + ours + device + rest, 0, "", ""},
		{"IPv6 sent-by", "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP [2001:db8::2]:5060;branch=z9hG4bK-swsl-0f\r\n" + device + rest, 401, "z9hG4bK-swsl-0f",
			"SIP/2.0 401 Unauthorized\r\n" + device + rest},
		{"malformed Via", "SIP/2.0 401 Unauthorized\r\nV:// 0:;branch=z9hG4bK-swsl-0f\r\n" + device + rest, 0, "", ""},
		{"a parameter value that is no token", "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.2;received=::1;branch=z9hG4bK-swsl-0f\r\n" + device + rest, 0, "", ""},
		{"two Vias in one header", "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-swsl-0f, SIP/2.0/UDP 192.0.2.1\r\n" + rest, 0, "", ""},
		{"our Via folded", "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.2:5060\r\n ;branch=z9hG4bK-swsl-0f\r\n" + device + rest, 0, "", ""},
		{"no Via below ours", "SIP/2.0 401 Unauthorized\r\n" + ours + rest, 0, "", ""},
		{"no Via at all", "SIP/2.0 401 Unauthorized\r\n" + rest, 0, "", ""},
		{"headers never end", "SIP/2.0 401 Unauthorized\r\n" + ours + device, 0, "", ""},
		{"status not three digits", "SIP/2.0 40x Odd\r\n" + ours + device + rest, 0, "", ""},
		{"status too short", "SIP/2.0 40 Odd\r\n" + ours + device + rest, 0, "", ""},
		{"a request", "REGISTER sip:example.test SIP/2.0\r\n" + ours + device + rest, 0, "", ""},
		{"bare", "SIP/2.0 ", 0, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(c.msg)
			status, branch, relay, ok := scanAnswer(data)
			if ok != (c.relay != "") {
				t.Fatalf("scanned = %v, want %v", ok, c.relay != "")
			}
			if !ok {
				return
			}
			if status != c.status || branch != c.branch || string(relay) != c.relay {
				t.Fatalf("got %d %q\n%q\nwant %d %q\n%q", status, branch, relay, c.status, c.branch, c.relay)
			}
			// The relay is a copy: sipgo reuses its read buffer.
			copy(data, strings.Repeat("x", len(data)))
			if string(relay) != c.relay {
				t.Fatal("the relayed answer shares the datagram's memory")
			}
		})
	}
}

// TestReadAnswer: what sipwake reads in a registrar's 2xx (the granted
// Contacts and their expiry, Feature-Caps, the status) is the same read
// without the parser as with it; a folded line among those goes to the
// parser.
func TestReadAnswer(t *testing.T) {
	const (
		vias = "Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-swsl-0f;rport=5060\r\n" +
			"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=192.0.2.1;rport=6001\r\n"
		dialog = "From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>;tag=2\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\n"
		// As Kamailio's registrar answers (registrar module, save()) a
		// Linphone for iOS REGISTER: liblinphone's Contact (account.cpp,
		// generatePushParams; PushKit token %02X with ":voip", team id
		// ABCD1234, see internal/app/clients_test.go) with ;expires added.
		contacts = "Contact: <sip:alice@192.0.2.1:6001;transport=udp;pn-prid=8A5C0F6E2B9D4A7133C6E0F1D2B3A4958677E8F9A0B1C2D3E4F5061728394A5B:voip;pn-provider=apns.dev;pn-param=ABCD1234.org.linphone.phone.voip;pn-silent=1;pn-timeout=0>;expires=3600;+sip.instance=\"<urn:uuid:1>\", <sip:alice@192.0.2.9>;expires=60\r\n" +
			"m: <sip:alice@192.0.2.7:5070>;expires=120\r\n"
		end = "Server: kamailio (5.8.4 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n"
	)
	cases := []struct {
		name, msg string
		read      bool
	}{
		{"as Kamailio answers", "SIP/2.0 200 OK\r\n" + vias + dialog + contacts + end, true},
		{"Expires and Feature-Caps", "SIP/2.0 202 Accepted for now\r\n" + vias + dialog + contacts +
			"EXPIRES : 300\r\nFeature-Caps: *;+sip.pns=\"apns\"\r\n" + end, true},
		{"no Contact", "SIP/2.0 200 OK\r\n" + vias + dialog + end, true},
		{"another header folded", "SIP/2.0 200 OK\r\n" + vias + dialog + contacts + "Server: kamailio\r\n (5.8.4)\r\n" + end, true},
		{"a Contact folded", "SIP/2.0 200 OK\r\n" + vias + dialog + "Contact: <sip:alice@192.0.2.1:6001>\r\n ;expires=60\r\n" + end, false},
		{"Feature-Caps folded", "SIP/2.0 200 OK\r\n" + vias + dialog + contacts + "Feature-Caps: *;\r\n\t+sip.pns=\"apns\"\r\n" + end, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(c.msg)
			status, _, _, scanned := scanAnswer(data)
			if !scanned {
				t.Fatal("scanAnswer did not take it")
			}
			res, ok := readAnswer(data, status)
			if ok != c.read {
				t.Fatalf("read = %v, want %v", ok, c.read)
			}
			if !ok {
				return
			}
			msg, err := sip.ParseMessage(data)
			if err != nil {
				t.Fatal(err)
			}
			full := msg.(*sip.Response)
			if res.StatusCode != full.StatusCode || res.Reason != full.Reason {
				t.Fatalf("status %d %q, parser %d %q", res.StatusCode, res.Reason, full.StatusCode, full.Reason)
			}
			got, err := sipmsg.Contacts(res)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := sipmsg.Contacts(full)
			if len(got) != len(want) {
				t.Fatalf("%d Contacts, parser %d", len(got), len(want))
			}
			for i := range got {
				if got[i].String() != want[i].String() || sipmsg.Expires(res, got[i], -1) != sipmsg.Expires(full, want[i], -1) {
					t.Fatalf("Contact %d: %s (expires %d), parser %s (expires %d)", i, got[i], sipmsg.Expires(res, got[i], -1), want[i], sipmsg.Expires(full, want[i], -1))
				}
			}
			if sipmsg.Expires(res, nil, -1) != sipmsg.Expires(full, nil, -1) || upstreamPushes(res, "apns") != upstreamPushes(full, "apns") {
				t.Fatal("Expires or Feature-Caps read otherwise than the parser reads them")
			}
		})
	}
}

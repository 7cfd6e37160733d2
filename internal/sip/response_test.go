package sip

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// A forwarded response loses sipwake's Via and nothing else, and goes back
// where the request came from (RFC 3261 §16.7).
func TestResponseFor(t *testing.T) {
	parser := sip.NewParser()
	parse := func(raw string) sip.Message {
		t.Helper()
		m, err := parser.ParseSIP([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	req := parse(seedMessages[0]).(*sip.Request)
	req.SetTransport("UDP")
	req.SetSource("198.51.100.7:40000")

	up := "SIP/2.0 401 Unauthorized\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-swsl-1;rport=5060\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.1:5060;rport=40000;received=198.51.100.7;branch=z9hG4bK1\r\n" +
		"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>;tag=reg\r\n" +
		"Call-ID: a@b\r\nCSeq: 1 REGISTER\r\n" +
		"Record-Route: <sip:edge.example.test;lr>\r\n" +
		"WWW-Authenticate: Digest realm=\"example.test\", nonce=\"n1\"\r\n" +
		"Content-Length: 0\r\n\r\n"
	out := responseFor(req, parse(up).(*sip.Response)).String()
	for _, want := range []string{
		"SIP/2.0 401 Unauthorized\r\n",
		"Via: SIP/2.0/UDP 192.0.2.1:5060;rport=40000;received=198.51.100.7;branch=z9hG4bK1\r\n",
		"To: <sip:alice@example.test>;tag=reg\r\n",
		"Record-Route: <sip:edge.example.test;lr>\r\n",
		`WWW-Authenticate: Digest realm="example.test", nonce="n1"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("answer lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "swsl") || strings.Count(out, "Via:") != 1 {
		t.Errorf("sipwake's Via went back to the device:\n%s", out)
	}
	res := responseFor(req, parse(up).(*sip.Response))
	if res.Destination() != "198.51.100.7:40000" || res.Transport() != "UDP" {
		t.Errorf("answer goes to %s over %s, want the request's source over UDP", res.Destination(), res.Transport())
	}

	// A next hop that dropped the device's Via: the device still gets its own.
	bare := strings.Replace(up, "Via: SIP/2.0/UDP 192.0.2.1:5060;rport=40000;received=198.51.100.7;branch=z9hG4bK1\r\n", "", 1)
	out = responseFor(req, parse(bare).(*sip.Response)).String()
	if !strings.Contains(out, "Via: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1\r\n") || strings.Contains(out, "swsl") {
		t.Errorf("answer without the device's Via:\n%s", out)
	}
}

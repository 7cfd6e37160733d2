package sip

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestEditForwardSaysWhatPrintingSays: a REGISTER forwarded on the
// stateless path by editing the device's datagram parses as the message
// the transaction path would print from the parsed request (the same
// headers, in the same order, with the same values; the same request line
// and body); one it cannot edit plainly is left to printing.
func TestEditForwardSaysWhatPrintingSays(t *testing.T) {
	const (
		line    = "REGISTER sip:example.test SIP/2.0\r\n"
		via     = "Via: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1\r\n"
		dialog  = "From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\n"
		push    = "Contact: <sip:alice@192.0.2.1:5060;pn-provider=apns;pn-prid=abc;pn-param=T.org.x.voip>;expires=600;+sip.instance=\"<urn:uuid:1>\"\r\n"
		end     = "Content-Length: 0\r\n\r\n"
		maxFwd  = "Max-Forwards: 70\r\n"
		noPush  = "Contact: <sip:alice@192.0.2.1:5060>;expires=600\r\n"
		twoVias = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK0\r\n"
	)
	cases := []struct {
		name, msg   string
		contactMode bool
		edited      bool
	}{
		{"push, rport asked", line + via + maxFwd + dialog + push + end, false, true},
		{"Max-Forwards above the Via", line + maxFwd + via + dialog + push + end, false, true},
		{"rport with a value, received already there, space after", line + "Via: SIP/2.0/UDP 192.0.2.1:5060;received=198.51.100.1;rport=5060;branch=z9hG4bK1 \r\n" + maxFwd + dialog + push + end, false, true},
		{"RPORT is another parameter", line + "Via: SIP/2.0/UDP 192.0.2.1:5060;RPORT;branch=z9hG4bK1\r\n" + maxFwd + dialog + push + end, false, true},
		{"rport last, twice", line + "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;rport;rport\r\n" + maxFwd + dialog + push + end, false, true},
		{"no Max-Forwards, no rport", line + "via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n" + dialog + push + end, false, true},
		{"two Via lines", line + via + "Via: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK0\r\n" + maxFwd + dialog + push + end, false, true},
		{"a body", line + via + dialog + push + "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", false, true},
		{"no push", line + via + maxFwd + dialog + noPush + end, false, true},
		{"no push, contact mode", line + via + maxFwd + dialog + noPush + end, true, true},
		{"push, contact mode", line + via + maxFwd + dialog + push + end, true, false},
		{"compact Via", line + "v: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1\r\n" + dialog + push + end, false, false},
		{"two Vias in a line", line + twoVias + dialog + push + end, false, false},
		{"a folded header", line + via + dialog + "Contact: <sip:alice@192.0.2.1:5060;pn-provider=apns;pn-prid=abc;pn-param=T.org.x.voip>\r\n ;expires=600\r\n" + end, false, false},
		{"a Route", line + via + "Route: <sip:127.0.0.1:5060;lr>\r\n" + dialog + push + end, false, false},
		{"bytes past the body", line + via + dialog + push + end + "junk", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := fuzzServer(t)
			s.opts.ContactMode = c.contactMode
			raw := []byte(c.msg)
			edited, fwd, ok := forwardBothWays(t, s, raw)
			if ok != c.edited {
				t.Fatalf("edited = %v, want %v", ok, c.edited)
			}
			if ok {
				sameMessage(t, edited, fwd)
			}
		})
	}
}

// forwardBothWays forwards raw, a REGISTER from 192.0.2.7:5062, by editing
// it and as the request to print; ok says whether it could be edited.
func forwardBothWays(t *testing.T, s *Server, raw []byte) (edited []byte, fwd *sip.Request, ok bool) {
	t.Helper()
	msg, err := sip.ParseMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	req.SetTransport("UDP")
	req.SetSource("192.0.2.7:5062")
	reg, code, reason := s.parseRegister(req)
	if code != 0 {
		t.Fatalf("%d %s", code, reason)
	}
	const branch = statelessMark + "00ff"
	edited, ok = s.udp.editForward(reg, raw, branch)
	if fwd, err = s.udp.forwardRequest(reg, branch); err != nil {
		t.Fatal(err)
	}
	return edited, fwd, ok
}

// sameMessage fails unless edited parses as the request fwd is. (Not as
// fwd printed and parsed again: sipgo's printing does not give back what
// it parsed for every odd header, where the edit keeps the device's bytes.)
func sameMessage(t *testing.T, edited []byte, fwd *sip.Request) {
	t.Helper()
	m, err := sip.ParseMessage(edited)
	if err != nil {
		t.Fatalf("edited forward does not parse: %v\n%s", err, edited)
	}
	if got, want := fields(m.(*sip.Request)), fields(fwd); !slices.Equal(got, want) {
		t.Fatalf("edited forward:\n%s\nsays\n%q\nthe request to print is\n%q", edited, got, want)
	}
}

// TestEditedAnswerSaysWhatPrintingSays: the registrar's 2xx relayed as it
// came, sipwake's Via line off and its Feature-Caps put in before the blank
// line, parses as the answer printed from the parsed 2xx would.
func TestEditedAnswerSaysWhatPrintingSays(t *testing.T) {
	const ok = "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-swsl-0f;rport=5060\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=192.0.2.7;rport=5062\r\n" +
		"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>;tag=2\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:alice@192.0.2.1:5060;pn-provider=apns;pn-prid=abc;pn-param=T.org.x.voip>;expires=600\r\n" +
		"Server: kamailio (5.8)\r\nContent-Length: 0\r\n\r\n"
	status, _, raw, scanned := scanAnswer([]byte(ok))
	if !scanned || status != 200 {
		t.Fatalf("scanned %v, status %d", scanned, status)
	}
	add := []sip.Header{sip.NewHeader("Feature-Caps", `*;+sip.pns="apns";+sip.pnsreg="600"`)}
	var lines bytes.Buffer
	writeLines(&lines, add...)
	edited, err := sip.ParseMessage(withHeaders(raw, lines.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := sip.ParseMessage([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "example.test"})
	printed := responseFor(req, parsed.(*sip.Response))
	for _, h := range add {
		printed.AppendHeader(h)
	}
	if got, want := fields(edited.(*sip.Response)), fields(printed); !slices.Equal(got, want) {
		t.Fatalf("edited answer says\n%q\nprinted says\n%q", got, want)
	}
}

// fields are what a message says: start line, body, and each header with
// its value, in order.
func fields(r interface {
	StartLine() string
	Body() []byte
	Headers() []sip.Header
}) []string {
	out := []string{r.StartLine(), string(r.Body())}
	for _, h := range r.Headers() {
		out = append(out, strings.ToLower(h.Name())+": "+h.Value())
	}
	return out
}

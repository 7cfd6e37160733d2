package sip

import (
	"bytes"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// BenchmarkRegisterHandling is sipwake's own CPU work per REGISTER: parse
// the pn-* Contact, compute the binding id, build the forwarded request
// with its Path, and turn the registrar's 200 into the device's answer
// (no network).
func BenchmarkRegisterHandling(b *testing.B) {
	s := fuzzServer(b)
	parser := sip.NewParser()
	raw := []byte(seedMessages[0])
	okRaw := []byte(seedMessages[4])
	b.ReportAllocs()
	for b.Loop() {
		msg, err := parser.ParseSIP(raw)
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sip.Request)
		reg, code, _ := s.parseRegister(req)
		if code != 0 {
			b.Fatal(code)
		}
		fwd := s.forwardRegister(reg)
		_ = fwd.String()
		ok, err := parser.ParseSIP(okRaw)
		if err != nil {
			b.Fatal(err)
		}
		out := responseFor(req, ok.(*sip.Response))
		_ = out.String()
	}
}

// BenchmarkRelayChallenge is what relaying the registrar's 401 costs on the
// stateless path: parsed, turned into the device's answer and printed, as
// every answer was, against scanned and relayed as it came.
func BenchmarkRelayChallenge(b *testing.B) {
	raw := []byte(seedMessages[len(seedMessages)-1])
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "example.test"})
	b.Run("parsed", func(b *testing.B) {
		parser := sip.NewParser()
		var buf bytes.Buffer
		b.ReportAllocs()
		for b.Loop() {
			msg, err := parser.ParseSIP(raw)
			if err != nil {
				b.Fatal(err)
			}
			buf.Reset()
			responseFor(req, msg.(*sip.Response)).StringWrite(&buf)
		}
	})
	b.Run("scanned", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, ok := scanAnswer(raw); !ok {
				b.Fatal("not scanned")
			}
		}
	})
}

package sip

import (
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

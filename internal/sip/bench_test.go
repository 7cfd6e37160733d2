package sip

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// BenchmarkRegisterHandling is sipwake's own CPU work per REGISTER: parse
// the pn-* Contact, compute the binding id, build the forwarded request
// with its Path, and turn a 200 into the device's answer (no network).
func BenchmarkRegisterHandling(b *testing.B) {
	s := fuzzServer(b)
	parser := sip.NewParser()
	raw := []byte(seedMessages[0])
	okMsg, err := parser.ParseSIP([]byte(seedMessages[4]))
	if err != nil {
		b.Fatal(err)
	}
	ok := okMsg.(*sip.Response)
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
		out := responseFor(req, ok)
		_ = out.String()
	}
}

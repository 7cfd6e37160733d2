package sip

import (
	"bytes"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// BenchmarkRegisterHandling is sipwake's own CPU work per REGISTER: parse
// the pn-* Contact, compute the binding id, build the forwarded request
// with its Path, and turn the registrar's 200 into the device's answer with
// Feature-Caps (no network, no store): printed from parsed messages, as the
// transaction path does, and edited from the datagrams, as the stateless
// UDP path does where they are laid out plainly.
func BenchmarkRegisterHandling(b *testing.B) {
	s := fuzzServer(b)
	parser := sip.NewParser()
	raw := []byte(seedMessages[0])
	okRaw := []byte(seedMessages[4])
	caps := []sip.Header{sip.NewHeader("Feature-Caps", `*;+sip.pns="apns"`)}
	register := func(b *testing.B) *registration {
		msg, err := parser.ParseSIP(raw)
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sip.Request)
		req.SetSource("192.0.2.7:5062")
		reg, code, _ := s.parseRegister(req)
		if code != 0 {
			b.Fatal(code)
		}
		return reg
	}
	answer := func(b *testing.B) *sip.Response {
		ok, err := parser.ParseSIP(okRaw)
		if err != nil {
			b.Fatal(err)
		}
		return ok.(*sip.Response)
	}
	b.Run("printed", func(b *testing.B) {
		var buf bytes.Buffer
		b.ReportAllocs()
		for b.Loop() {
			reg := register(b)
			fwd, err := s.udp.forwardRequest(reg, statelessMark+"00")
			if err != nil {
				b.Fatal(err)
			}
			buf.Reset()
			fwd.StringWrite(&buf)
			out := responseFor(reg.req, answer(b))
			for _, h := range caps {
				out.AppendHeader(h)
			}
			buf.Reset()
			out.StringWrite(&buf)
		}
	})
	b.Run("edited", func(b *testing.B) {
		var lines bytes.Buffer
		b.ReportAllocs()
		for b.Loop() {
			reg := register(b)
			if _, ok := s.udp.editForward(reg, raw, statelessMark+"00"); !ok {
				b.Fatal("not edited")
			}
			_, _, relayed, scanned := scanAnswer(okRaw)
			if !scanned {
				b.Fatal("not scanned")
			}
			responseFor(reg.req, answer(b)) // still read: what it says decides
			lines.Reset()
			writeLines(&lines, caps...)
			_ = withHeaders(relayed, lines.Bytes())
		}
	})
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

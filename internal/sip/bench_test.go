package sip

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/sipmsg"
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

// BenchmarkStoredBindingReads is what storing a binding reads from the
// device's REGISTER and the registrar's 200 before the store is called
// (the expiry asked for, the one granted the push contact, the contact as
// stored), on a REGISTER laid out as sipp's register_push.xml sends it and
// a 200 as Kamailio's registrar sends it, read as the stateless UDP path
// reads answers.
func BenchmarkStoredBindingReads(b *testing.B) {
	s := fuzzServer(b)
	req, contact := sippPushRegister("u00001")
	ok := "SIP/2.0 200 OK\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=" + statelessMark + "00;rport=5060\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:6001;rport=6001;branch=z9hG4bK-u00001\r\n" +
		"From: <sip:u00001@example.test>;tag=u00001\r\nTo: <sip:u00001@example.test>;tag=1d24a28a0bded6c40d31e6db8aab9ac6.9f3b\r\n" +
		"Call-ID: u00001@127.0.0.1\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: " + contact + ";expires=3600;received=\"sip:127.0.0.1:6001\"\r\n" +
		"Path: <sip:sw-aaaa@127.0.0.1:5060;lr>\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n"
	msg, err := sip.NewParser().ParseSIP([]byte(req))
	if err != nil {
		b.Fatal(err)
	}
	msg.SetSource("127.0.0.1:6001")
	reg, code, _ := s.parseRegister(msg.(*sip.Request))
	if code != 0 {
		b.Fatal(code)
	}
	res, read := readAnswer([]byte(ok), 200)
	if !read {
		b.Fatal("200 not read")
	}
	b.ReportAllocs()
	for b.Loop() {
		requested := sipmsg.Expires(reg.req, reg.push, defaultExpires)
		if granted := s.grantedExpires(res, reg, requested); granted != 3600 {
			b.Fatalf("granted %d", granted)
		}
		if uriString(&reg.push.Address) == "" {
			b.Fatal("no contact")
		}
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

// BenchmarkRegisterInFlightMemory is what one REGISTER waiting on the
// registrar holds (Go heap and stacks): n REGISTERs, laid out as sipp's
// register_push.xml sends them, go to a registrar that reads and never
// answers, and the memory in use with all n waiting is compared with the
// memory before. It is what sip.max_registers_in_flight bounds.
func BenchmarkRegisterInFlightMemory(b *testing.B) {
	const n = 2048
	for b.Loop() {
		s, registrar, device := behindSilentRegistrar(b, time.Minute, n, true)
		if err := registrar.SetReadBuffer(4 << 20); err != nil { // n REGISTERs before it reads
			b.Fatal(err)
		}
		before := inUse()
		for i := range n {
			req, _ := sippPushRegister(fmt.Sprintf("u%05d", i))
			if _, err := device.Write([]byte(req)); err != nil {
				b.Fatal(err)
			}
			if i%256 == 255 {
				time.Sleep(5 * time.Millisecond) // within the sockets' buffers
			}
		}
		readRegisters(b, registrar, n)
		if got := s.inFlight.Load(); got != n {
			b.Fatalf("%d REGISTERs in flight, want %d", got, n)
		}
		b.ReportMetric(float64(inUse()-before)/n, "B/in-flight")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
}

// sippPushRegister is a REGISTER laid out as sipp sends
// internal/peertest/testdata/sipp/register_push.xml from 127.0.0.1:6001
// for user, with a 64-hex APNs token and a liblinphone-style pn-param
// (team.bundle.voip); contact is its Contact value.
func sippPushRegister(user string) (req, contact string) {
	token := strings.Repeat("5f", 32)
	contact = "<sip:" + user + "@127.0.0.1:6001;transport=UDP;pn-provider=apns;pn-prid=" + token +
		";pn-param=ABCD1234.org.example.app.voip>;+sip.instance=\"<urn:sipp:" + token + ">\""
	req = "REGISTER sip:example.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:6001;rport;branch=z9hG4bK-" + user + "\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:" + user + "@example.test>;tag=" + user + "\r\nTo: <sip:" + user + "@example.test>\r\n" +
		"Call-ID: " + user + "@127.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: " + contact + "\r\n" +
		"Expires: 3600\r\nSupported: path, outbound\r\nUser-Agent: sipp register_push\r\nContent-Length: 0\r\n\r\n"
	return req, contact
}

// inUse is the Go heap and goroutine stacks in use after a collection.
func inUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse + ms.StackInuse)
}

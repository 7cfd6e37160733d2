package sip

import (
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// fuzzServer is a Server that never listens: the fuzz targets drive its
// message handling directly.
func fuzzServer(t testing.TB) *Server {
	t.Helper()
	return serverWith(t, fuzzRelay, fuzzOptions)
}

var (
	fuzzRelay   = relay.Options{RecordTTL: 120 * time.Hour, Providers: []string{"apns", "fcm"}}
	fuzzOptions = Options{
		Listen:          Listen{UDP: "127.0.0.1:5060"},
		Upstream:        Upstream{Host: "127.0.0.1", Port: 5070, Transport: "udp"},
		UpstreamTimeout: time.Second,
		UserAgent:       "fuzz",
		CallWait:        time.Second,
		StoreInProcess:  true, // serverWith's bbolt file
	}
)

// serverWith is a Server with opts, not started, on a relay with ro over a
// bbolt file of its own.
func serverWith(t testing.TB, ro relay.Options, opts Options) *Server {
	t.Helper()
	keys, err := store.NewKeyring("k1", map[string][]byte{"k1": store.NewKey()})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "f.db"), keys, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	s, err := New(opts, relay.New(st, nil, ro, log, time.Now), log)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var seedMessages = []string{
	"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1\r\nFrom: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@192.0.2.1:5060;pn-provider=apns;pn-prid=abc;pn-param=T.org.x.voip>;expires=600;+sip.instance=\"<urn:uuid:1>\"\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
	"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK2\r\nFrom: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>\r\nCall-ID: a@b\r\nCSeq: 2 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n",
	"REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK3\r\nFrom: <sip:bob@example.test>;tag=1\r\nTo: \"Bob\" <sip:bob@example.test>\r\nCall-ID: c@d\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@h;pn-provider=apns;pn-prid=x>, <sip:b@h;pn-provider>\r\nContent-Length: 0\r\n\r\n",
	"INVITE sip:alice@192.0.2.1;pn-prid=x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK4\r\nRoute: <sip:sw-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@127.0.0.1:5060;lr>\r\nFrom: \"Carol\" <sip:+15550100@example.test>;tag=9\r\nTo: <sip:alice@example.test>\r\nCall-ID: e@f\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
	"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK5\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nFrom: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>;tag=2\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\nContact: <sip:sw-aaaa@127.0.0.1>;expires=300\r\nFeature-Caps: *;+sip.pns=\"apns\"\r\nContent-Length: 0\r\n\r\n",
	"SIP/2.0 401 Unauthorized\r\nv: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-swsl-00;rport=5060\r\nvia : SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=192.0.2.1;rport=5060\r\nFrom: <sip:alice@example.test>;tag=1\r\nTo: <sip:alice@example.test>;tag=2\r\nCall-ID: a@b\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"example.test\", nonce=\"abc\"\r\nContent-Length: 0\r\n\r\n",
}

// FuzzSIPMessage feeds arbitrary bytes through the parser and everything
// sipwake does with what comes out: no input may panic, a REGISTER
// sipwake would forward must still print as a SIP message, and its edited
// forward must say what the printed one says.
func FuzzSIPMessage(f *testing.F) {
	for _, m := range seedMessages {
		f.Add([]byte(m))
	}
	s := fuzzServer(f)
	parser := sip.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		status, branch, relay, scanned := scanAnswer(data)
		msg, err := parser.ParseSIP(data)
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *sip.Request:
			_, _ = sipmsg.Contacts(m)
			s.bindingIDOf(m)
			if m.Method != sip.REGISTER {
				return
			}
			if m.Via() != nil && m.CallID() != nil && m.CSeq() != nil {
				// What the stateless UDP path derives its upstream branch from.
				m.SetSource("192.0.2.7:5060")
				if b := s.udp.branch(m); !strings.HasPrefix(b, statelessMark) || b != s.udp.branch(m) {
					t.Fatalf("branch %q: not derived, or not the same twice", b)
				}
			}
			reg, code, _ := s.parseRegister(m)
			if code != 0 {
				return
			}
			fwd := s.forwardRegister(reg)
			if !strings.HasPrefix(fwd.String(), "REGISTER ") {
				t.Fatalf("forwarded REGISTER prints as %q", fwd.StartLine())
			}
			// The stateless path's edit of the datagram says what printing says.
			if edited, ok := s.udp.editForward(reg, data, statelessMark+"00"); ok {
				fwd, err := s.udp.forwardRequest(reg, statelessMark+"00")
				if err != nil {
					t.Fatalf("edited, but the request to print fails: %v", err)
				}
				sameMessage(t, edited, fwd)
			}
		case *sip.Response:
			if scanned {
				checkRelay(t, m, status, branch, relay)
			}
			s.udp.response(t.Context(), data) // an answer on the stateless path, or not
			req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "example.test"})
			req.AppendHeader(sip.NewHeader("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx"))
			_ = responseFor(req, m)
			upstreamPushes(m, "apns")
			_, _ = sipmsg.Contacts(m)
		}
	})
}

// checkRelay holds scanAnswer to the parser: what it relays parses as the
// same answer without its top Via, and it read that Via's branch.
func checkRelay(t *testing.T, res *sip.Response, status int, branch string, relay []byte) {
	t.Helper()
	out, err := sip.ParseMessage(relay)
	if err != nil {
		t.Fatalf("relayed answer does not parse: %v\n%q", err, relay)
	}
	vias := func(m sip.Message) (vs []string) {
		for _, h := range m.GetHeaders("Via") {
			vs = append(vs, h.Value())
		}
		return vs
	}
	want, got := vias(res), vias(out)
	if b, _ := res.Via().Params.Get("branch"); status != res.StatusCode || branch != b ||
		len(want) == 0 || !slices.Equal(got, want[1:]) {
		t.Fatalf("scanned %d %q, relayed Vias %q; parsed %d %q, Vias %q", status, branch, got, res.StatusCode, b, want)
	}
}

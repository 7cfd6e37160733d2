package app_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
)

// udpPeer is one end of the wire in TestStatelessRegisterOverUDP: the
// device or the registrar, speaking raw SIP so the test sees every datagram
// sipwake sends.
type udpPeer struct {
	t    *testing.T
	conn *net.UDPConn
}

func listenUDP(t *testing.T, addr string) *udpPeer {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &udpPeer{t: t, conn: c}
}

func (p *udpPeer) send(to, msg string) {
	p.t.Helper()
	a, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.conn.WriteToUDP([]byte(msg), a); err != nil {
		p.t.Fatal(err)
	}
}

// recv is the next datagram and its sender, or "" when none comes within
// wait.
func (p *udpPeer) recv(wait time.Duration) (string, string) {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, from, err := p.conn.ReadFromUDP(buf)
	if err != nil {
		return "", ""
	}
	return string(buf[:n]), from.String()
}

// header is the first value of a header in a raw message.
func header(msg, name string) string {
	for _, line := range strings.Split(msg, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// answer is a registrar's response to a raw request: its Vias, From,
// Call-ID and CSeq, a To with a tag, and extra headers.
func answer(req, status string, extra ...string) string {
	lines := []string{"SIP/2.0 " + status}
	for _, line := range strings.Split(req, "\r\n") {
		k, _, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "via", "from", "call-id", "cseq":
			lines = append(lines, line)
		case "to":
			lines = append(lines, line+";tag=reg-1")
		}
	}
	lines = append(lines, extra...)
	return strings.Join(append(lines, "Content-Length: 0", "", ""), "\r\n")
}

// TestStatelessRegisterOverUDP watches both wires of the stateless REGISTER
// path (device and registrar over UDP): a retransmission goes upstream
// again under the same branch, the registrar's retransmitted answer
// reaches the device once, a new CSeq is a new branch, and a retransmission
// after the answer is answered again without a second record.
func TestStatelessRegisterOverUDP(t *testing.T) {
	registrar := listenUDP(t, peertest.Addr(t, 4, 5060))
	w := newWorld(t, func(c *config.Config) {
		c.SIP.Upstream = "sip:" + peertest.Addr(t, 4, 5060)
		c.SIP.UpstreamTimeout = time.Minute // longer than any stop may take
	})
	device := listenUDP(t, w.deviceIP+":5090")
	register := func(cseq string) string {
		return strings.Join([]string{
			"REGISTER sip:" + domain + " SIP/2.0",
			"Via: SIP/2.0/UDP " + w.deviceIP + ":5090;rport;branch=z9hG4bK-dev-" + cseq,
			"From: <sip:alice@" + domain + ">;tag=dev",
			"To: <sip:alice@" + domain + ">",
			"Call-ID: stateless@test",
			"CSeq: " + cseq + " REGISTER",
			"Contact: <sip:alice@" + w.deviceIP + ":5090" + apnsParams(token) + ">;expires=600",
			"Max-Forwards: 70",
			"Content-Length: 0", "", "",
		}, "\r\n")
	}
	const wait = 2 * time.Second

	// The device retransmits before the registrar answered.
	first := register("1")
	device.send(w.swAddr, first)
	up1, sw := registrar.recv(wait)
	device.send(w.swAddr, first)
	up2, _ := registrar.recv(wait)
	if up1 == "" || up1 != up2 {
		t.Fatalf("retransmission went upstream as\n%s\nafter\n%s", up2, up1)
	}
	via := header(up1, "Via")
	branch := via[strings.Index(via, "branch=")+len("branch="):]
	if !strings.HasPrefix(branch, "z9hG4bK-swsl-") {
		t.Fatalf("sipwake's Via %q: want a derived branch", via)
	}
	if mf := header(up1, "Max-Forwards"); mf != "69" {
		t.Fatalf("Max-Forwards upstream %q, want 69", mf)
	}
	if !strings.Contains(up1, "received="+w.deviceIP) || !strings.Contains(up1, "rport=5090") {
		t.Fatalf("device's Via lacks received/rport:\n%s", up1)
	}
	if !strings.Contains(header(up1, "Path"), "sw-") {
		t.Fatalf("no Path to sipwake upstream:\n%s", up1)
	}

	// The registrar's transaction answers both copies: the device hears
	// one 401, under its own Via only.
	challenge := answer(up1, "401 Unauthorized", `WWW-Authenticate: Digest realm="`+domain+`", nonce="n1"`)
	registrar.send(sw, challenge)
	registrar.send(sw, challenge)
	got, _ := device.recv(wait)
	if !strings.HasPrefix(got, "SIP/2.0 401") || strings.Contains(got, "swsl") || header(got, "WWW-Authenticate") == "" {
		t.Fatalf("device got:\n%s", got)
	}
	if extra, _ := device.recv(300 * time.Millisecond); extra != "" {
		t.Fatalf("device got a second answer:\n%s", extra)
	}

	// The next REGISTER (CSeq 2) is its own transaction upstream.
	second := register("2")
	device.send(w.swAddr, second)
	up3, _ := registrar.recv(wait)
	if up3 == "" || strings.Contains(up3, branch) {
		t.Fatalf("CSeq 2 reused the branch of CSeq 1:\n%s", up3)
	}
	ok := answer(up3, "200 OK", "Contact: "+header(up3, "Contact"))
	registrar.send(sw, ok)
	got, _ = device.recv(wait)
	if !strings.HasPrefix(got, "SIP/2.0 200") || !strings.Contains(got, `+sip.pns="apns"`) {
		t.Fatalf("device got:\n%s", got)
	}
	if n := w.records(); n != 1 {
		t.Fatalf("%d records after the 200, want 1", n)
	}

	// Its 200 was lost: the device retransmits, the registrar answers from
	// its transaction again, and the device gets its 200 again, with the
	// same Feature-Caps (a refresh that changes nothing stored: answered
	// on the read loop without a write).
	device.send(w.swAddr, second)
	up4, _ := registrar.recv(wait)
	if header(up4, "Via") != header(up3, "Via") {
		t.Fatalf("retransmission after the answer went upstream as\n%s\nnot as\n%s", up4, up3)
	}
	registrar.send(sw, answer(up4, "200 OK", "Contact: "+header(up4, "Contact")))
	if again, _ := device.recv(wait); !strings.HasPrefix(again, "SIP/2.0 200") || header(again, "Feature-Caps") != header(got, "Feature-Caps") {
		t.Fatalf("device got:\n%s\nafter\n%s", again, got)
	}
	if n := metric(t, w, "sipwake_binding_refreshes_unwritten_total", ""); n != 1 {
		t.Fatalf("%v refreshes answered without a write, want 1", n)
	}
	if n := w.records(); n != 1 {
		t.Fatalf("%d records after the retransmission, want 1", n)
	}

	// An answer for a branch sipwake never sent, or no longer waits on, is
	// dropped: nothing reaches the device, and sipwake keeps serving.
	registrar.send(sw, strings.Replace(challenge, branch, "z9hG4bK-swsl-0000000000000000", 1))
	if extra, _ := device.recv(300 * time.Millisecond); extra != "" {
		t.Fatalf("a stray answer reached the device:\n%s", extra)
	}

	// Stopping with a REGISTER still waiting for a silent registrar ends
	// that wait instead of sitting out sip.upstream_timeout.
	device.send(w.swAddr, register("3"))
	if up, _ := registrar.recv(wait); up == "" {
		t.Fatal("CSeq 3 did not go upstream")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := w.sw.Stop(ctx); err != nil {
		t.Fatalf("stop with a REGISTER in flight: %v", err)
	}
}

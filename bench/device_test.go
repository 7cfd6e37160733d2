package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// devicePool is many apps behind one UDP socket: each user registers its
// own Contact (sip:user@ip:port;pn-…) from the same address, re-registers
// when told (the harness does so on each call push the fake receives) and
// answers every INVITE that reaches the socket with 200 + SDP, then takes
// the ACK and answers the BYE. It is a load tool, not a softphone: no
// media, no dialog state beyond what the answers need.
type devicePool struct {
	Addr      string // ip:port the socket is bound to
	registrar string // where REGISTERs go: sipwake or Kamailio
	param     string // pn-param; "" registers without pn-* parameters

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	laddr  sip.Addr
	conn   net.PacketConn

	Invites, Answered, Byes, RegFailed atomic.Int64
}

// sdpAnswer is a media-less answer (nothing listens on the port).
const sdpAnswer = "v=0\r\no=bench 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

func startDevicePool(b *testing.B, addr, registrar, param string) *devicePool {
	b.Helper()
	host, portS, err := net.SplitHostPort(addr)
	if err != nil {
		b.Fatal(err)
	}
	port, _ := strconv.Atoi(portS)
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("bench-device"), sipgo.WithUserAgentHostname(host))
	if err != nil {
		b.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		b.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientPort(port))
	if err != nil {
		b.Fatal(err)
	}
	d := &devicePool{Addr: addr, registrar: registrar, param: param, ua: ua, srv: srv, client: client,
		laddr: sip.Addr{IP: net.ParseIP(host), Port: port}}
	body := fmt.Appendf(nil, sdpAnswer, host, host)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		d.Invites.Add(1)
		res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", body)
		res.AppendHeader(sip.NewHeader("Contact", "<sip:"+addr+">"))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		if err := tx.Respond(res); err == nil {
			d.Answered.Add(1)
		}
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		d.Byes.Add(1)
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	})
	srv.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil))
	})
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		b.Fatalf("device socket: %v", err)
	}
	d.conn = conn
	go func() { _ = srv.ServeUDP(conn) }()
	b.Cleanup(d.Close)
	// ServeUDP puts the socket in the transport pool asynchronously; a
	// REGISTER sent before would try to bind the port a second time.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if c, err := ua.TransportLayer().GetConnection("udp", addr); err == nil && c != nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("device socket %s not served", addr)
		}
	}
	return d
}

// Close ends the pool's socket (its port is then free for sipp).
func (d *devicePool) Close() {
	_ = d.conn.Close()
	_ = d.ua.Close()
}

// Register runs one REGISTER → 401 → REGISTER with credentials → 200 for
// user with token as its pn-prid, from the pool's socket.
func (d *devicePool) Register(ctx context.Context, user, token string) error {
	contact := "<sip:" + user + "@" + d.Addr + ";transport=udp"
	if d.param != "" {
		contact += ";pn-provider=apns;pn-prid=" + token + ";pn-param=" + d.param
	}
	contact += ">"
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: domain})
	req.SetDestination(d.registrar)
	aor := sip.Uri{Scheme: "sip", User: user, Host: domain}
	from := &sip.FromHeader{Address: aor}
	from.Params.Add("tag", sip.GenerateTagN(12))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(sip.NewHeader("Contact", contact))
	req.AppendHeader(sip.NewHeader("Expires", "3600"))
	req.AppendHeader(sip.NewHeader("Supported", "path, outbound"))
	req.Laddr = d.laddr // leave from the socket the Contact names
	res, err := d.client.Do(ctx, req)
	if err == nil && (res.StatusCode == sip.StatusUnauthorized || res.StatusCode == sip.StatusProxyAuthRequired) {
		res, err = d.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: user, Password: password})
	}
	switch {
	case err != nil:
	case res.StatusCode != sip.StatusOK:
		err = fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	if err != nil {
		d.RegFailed.Add(1)
		return fmt.Errorf("register %s: %w", user, err)
	}
	return nil
}

// RegisterAll registers users [0, n) with tokens tokenOf(i), conc at a
// time, and fails the benchmark if any registration fails.
func (d *devicePool) RegisterAll(b *testing.B, n, conc int, tokenOf func(int) string) time.Duration {
	b.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	next := atomic.Int64{}
	errs := make(chan error, conc)
	for range conc {
		go func() {
			var err error
			for {
				i := int(next.Add(1)) - 1
				if i >= n || err != nil {
					errs <- err
					return
				}
				// One retry: a lost datagram under load is not a failure
				// of the set-up.
				if err = d.Register(ctx, userName(i), tokenOf(i)); err != nil {
					err = d.Register(ctx, userName(i), tokenOf(i))
				}
			}
		}()
	}
	var all []error
	for range conc {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	if err := errors.Join(all...); err != nil {
		b.Fatalf("register %d devices: %v", n, err)
	}
	return time.Since(start)
}

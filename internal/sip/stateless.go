package sip

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"iter"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// REGISTERs over UDP, toward a registrar over UDP, are forwarded without
// SIP transactions (a stateless proxy, RFC 3261 §16.11): the Via branch
// sipwake adds is derived from the device's request, so a retransmission
// goes upstream under the same branch and the registrar's transaction
// absorbs it, as it absorbs the device's own. That spares every
// registration two transaction state machines each way and the five
// seconds they linger afterwards, which at thousands of REGISTER/s is most
// of sipwake's CPU and memory outside the store.
//
// sipwake reads the socket (readers, one goroutine per P) and takes the
// datagrams that are REGISTERs or answers to them; everything else goes on
// to sipgo's read loop, unparsed. While a REGISTER waits for its answer it
// is pending under its branch, and no goroutine waits with it: a
// retransmission of it is sent upstream again, the registrar's final
// response is answered from the pending REGISTER (a challenge, or a
// refresh that writes nothing, at once on the reader; a 2xx that may write
// to the store on a worker), and one the registrar leaves unanswered past
// sip.upstream_timeout is answered by expire. A retransmission after the
// registrar answered is a new REGISTER to the registrar, which answers it
// from its transaction again.
//
// With the store in this process (bbolt), a REGISTER is admitted and
// forwarded on the reader too: reading its AOR's bindings takes
// microseconds there, and a REGISTER handed to a worker and back cost a
// goroutine wake-up each way. A store across the network (Redis) is read
// on a worker, so a reader never waits for it.

// statelessMark starts the branch of every REGISTER sipwake forwards
// statelessly; it is how the registrar's answers are told apart.
const statelessMark = sip.RFC3261BranchMagicCookie + "-swsl-"

var errStopping = errors.New("sipwake is stopping")

var (
	registerPrefix = []byte("REGISTER ")
	responsePrefix = []byte("SIP/2.0 ")
	statelessVia   = []byte("branch=" + statelessMark)
)

type statelessUDP struct {
	s      *Server
	parser *sip.Parser
	seed   maphash.Seed
	bufs   sync.Pool // *bytes.Buffer for serializing answers

	// conn is the UDP listener, set by serve.
	conn net.PacketConn
	// upstream is the registrar's address when sip.upstream names it by
	// IP (nil for a name, resolved for each REGISTER so DNS changes
	// apply): resolving a literal every time was 6 allocations a REGISTER.
	upstream net.Addr

	// viaText is sipwake's Via line on an edited REGISTER, printed once
	// (viaLine).
	viaText printedOnce

	mu      sync.Mutex
	pending map[string]*pendingRegister // by branch
	// workers run what may wait: a 2xx's store write, a REGISTER's
	// admission when the store is across the network. Closing quit ends
	// expire.
	workers  *workers
	quit     chan struct{}
	quitOnce sync.Once
	expiring sync.WaitGroup
}

// workerIdle is how long a REGISTER handler's worker stays idle before it
// ends.
const workerIdle = time.Second

// pendingRegister is a REGISTER waiting for the registrar. Whoever takes
// it out of statelessUDP.pending (take) answers it.
type pendingRegister struct {
	from net.Addr      // the device
	reg  *registration // once admitted

	// Set under statelessUDP.mu when the REGISTER goes upstream: wire is
	// nil until then.
	wire     []byte    // the forwarded request
	to       net.Addr  // where it went
	deadline time.Time // when sip.upstream_timeout runs out
}

func newStatelessUDP(s *Server) *statelessUDP {
	u := &statelessUDP{
		s:       s,
		parser:  sip.NewParser(),
		seed:    maphash.MakeSeed(),
		bufs:    sync.Pool{New: func() any { return new(bytes.Buffer) }},
		pending: map[string]*pendingRegister{},
		workers: newWorkers(workerIdle),
		quit:    make(chan struct{}),
	}
	up := s.opts.Upstream
	if ip, err := netip.ParseAddr(strings.Trim(up.Host, "[]")); err == nil && up.Port > 0 && up.Port <= 0xffff {
		u.upstream = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(up.Port)))
	}
	return u
}

// stop answers the REGISTERs still pending and waits for the handlers
// still at work, after the listener closed: no answer from the registrar
// can arrive any more, so none waits for one.
func (u *statelessUDP) stop(ctx context.Context) {
	u.quitOnce.Do(func() { close(u.quit) })
	u.expiring.Wait()
	u.expireWhere(ctx, func(*pendingRegister) bool { return true }, errStopping)
	u.workers.stop()
}

// expireTick is how often expire looks for REGISTERs the registrar left
// unanswered: a tenth of sip.upstream_timeout, at most 100 ms, so the
// device's 408 comes at most that late.
func expireTick(timeout time.Duration) time.Duration {
	return min(timeout/10, 100*time.Millisecond)
}

// expire answers, until stop, the REGISTERs whose sip.upstream_timeout
// ran out (a 408): a timer per REGISTER was 2 allocations and a wake-up
// each.
func (u *statelessUDP) expire() {
	t := time.NewTicker(expireTick(u.s.opts.UpstreamTimeout))
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			u.expireWhere(context.Background(), func(p *pendingRegister) bool { return now.After(p.deadline) }, context.DeadlineExceeded)
		case <-u.quit:
			return
		}
	}
}

// expireWhere answers the forwarded REGISTERs late says are late with
// err's answer.
func (u *statelessUDP) expireWhere(ctx context.Context, late func(*pendingRegister) bool, err error) {
	var expired []*pendingRegister
	u.mu.Lock()
	for branch, p := range u.pending {
		if p.wire != nil && late(p) {
			delete(u.pending, branch)
			expired = append(expired, p)
		}
	}
	u.mu.Unlock()
	for _, p := range expired {
		u.finish(ctx, p, upstreamAnswer{}, err)
	}
}

// serve makes conn, the UDP listener, the socket stateless REGISTERs come
// and go on, and starts reading it (readers) for the server's lifetime
// ctx: sipgo reads the PacketConn returned.
func (u *statelessUDP) serve(ctx context.Context, conn net.PacketConn) net.PacketConn {
	u.conn = conn
	u.expiring.Go(u.expire)
	return u.readers(ctx, conn)
}

// takes says whether the stateless path took data, a datagram from from:
// a REGISTER or an answer to one it forwarded. It runs on a reader, so it
// never waits: what may wait runs on workers.
func (u *statelessUDP) takes(ctx context.Context, data []byte, from net.Addr) bool {
	switch {
	case bytes.HasPrefix(data, registerPrefix):
		return u.request(ctx, data, from)
	case bytes.HasPrefix(data, responsePrefix) && bytes.Contains(data, statelessVia):
		return u.response(ctx, data)
	}
	return false
}

// readQueue is how many datagrams for sipgo the readers queue before they
// wait for its read loop.
const readQueue = 1024

// readers reads conn, the UDP listener, on one goroutine per P (the
// socket hands each datagram to one of them): each takes the stateless
// path's datagrams itself and queues the rest for sipgo, which reads them
// from the PacketConn returned. One read loop for all had every REGISTER
// admitted, forwarded and answered on one goroutine, which at ~12,000
// refreshes/s on two vCPUs was the limit. The readers end when conn
// closes, and sipgo's read loop then.
func (u *statelessUDP) readers(ctx context.Context, conn net.PacketConn) net.PacketConn {
	q := &queuedConn{PacketConn: conn, queue: make(chan datagram, readQueue)}
	var reading sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		reading.Go(func() { u.read(ctx, conn, q.queue) })
	}
	go func() {
		reading.Wait()
		close(q.queue)
	}()
	return q
}

// read is one reader of conn, until it closes.
func (u *statelessUDP) read(ctx context.Context, conn net.PacketConn, queue chan<- datagram) {
	buf := make([]byte, sip.TransportBufferReadSize)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				u.s.log.Error("sip: reading the UDP listener failed", "error", err)
			}
			return
		}
		if data := buf[:n]; !u.takes(ctx, data, from) {
			queue <- datagram{data: bytes.Clone(data), from: from}
		}
	}
}

// datagram is one a reader queued for sipgo.
type datagram struct {
	data []byte
	from net.Addr
}

// queuedConn is the UDP listener as sipgo reads it: the datagrams the
// readers did not take; it writes to the socket itself.
type queuedConn struct {
	net.PacketConn
	queue chan datagram
}

func (c *queuedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	d, ok := <-c.queue
	if !ok {
		return 0, nil, net.ErrClosed
	}
	return copy(b, d.data), d.from, nil
}

// request takes a REGISTER from a device. What sipwake cannot parse, or a
// request without the headers a branch is made of, goes to sipgo, which
// drops or refuses it as before.
func (u *statelessUDP) request(ctx context.Context, data []byte, from net.Addr) bool {
	msg, err := u.parser.ParseSIP(data)
	if err != nil {
		return false
	}
	req, ok := msg.(*sip.Request)
	if !ok || req.Via() == nil || req.CallID() == nil || req.CSeq() == nil {
		return false
	}
	req.SetTransport("UDP")
	req.SetSource(from.String())
	branch := u.branch(req)

	u.mu.Lock()
	if p, retransmitted := u.pending[branch]; retransmitted {
		wire, to := p.wire, p.to
		u.mu.Unlock()
		u.resend(wire, to)
		return true
	}
	p := &pendingRegister{from: from}
	u.pending[branch] = p
	u.mu.Unlock()
	if u.s.opts.StoreInProcess {
		u.admit(ctx, req, data, branch, p, u.workers.run)
		return true
	}
	raw := bytes.Clone(data) // the reader reuses its buffer
	u.workers.run(func() { u.admit(ctx, req, raw, branch, p, func(job func()) { job() }) })
	return true
}

// admit runs register's first half for req, pending under branch as p
// (raw as it came), and sends it to the registrar. A handed-over
// account's app is answered by a job spawn runs: on a worker, not a
// reader.
func (u *statelessUDP) admit(ctx context.Context, req *sip.Request, raw []byte, branch string, p *pendingRegister, spawn func(func())) {
	tx := udpAnswer{u: u, to: p.from}
	reg, ok := u.s.admit(ctx, req, tx)
	if !ok {
		u.take(branch, p)
		return
	}
	if reg.account != nil {
		u.take(branch, p)
		spawn(func() {
			defer u.s.inFlight.Add(-1)
			u.s.registerAccountApp(ctx, req, tx, reg, *reg.account)
		})
		return
	}
	p.reg = reg // before send publishes p under u.mu
	if err := u.send(reg, raw, branch, p); err != nil && u.take(branch, p) {
		u.finish(ctx, p, upstreamAnswer{}, err)
	}
}

// finish is register's second half for p, with the registrar's answer a
// or the error that stands for it.
func (u *statelessUDP) finish(ctx context.Context, p *pendingRegister, a upstreamAnswer, err error) {
	defer u.s.inFlight.Add(-1)
	tx := udpAnswer{u: u, to: p.from}
	if a.raw != nil {
		a.relay = func(add []byte) error { return tx.write(withHeaders(a.raw, add)) }
	}
	u.s.answered(ctx, p.reg, tx, a, err)
}

// response hands the registrar's final answer to the REGISTER waiting for
// it. One laid out plainly goes to the device as it came, sipwake's Via
// line off (a 2xx with sipwake's headers added): a non-2xx is not parsed
// at all, a 2xx only as far as sipwake reads it (but in contact mode, which
// prints the device's answer). One for a REGISTER already answered (a late
// retransmission) is dropped: the device has its answer.
func (u *statelessUDP) response(ctx context.Context, data []byte) bool {
	status, branch, raw, scanned := scanAnswer(data)
	if scanned && status >= 300 {
		return u.deliver(ctx, branch, status, upstreamAnswer{raw: raw})
	}
	if scanned && !u.s.opts.ContactMode {
		if res, ok := readAnswer(data, status); ok {
			return u.deliver(ctx, branch, status, upstreamAnswer{res: res, raw: raw})
		}
	}
	msg, err := u.parser.ParseSIP(data)
	if err != nil {
		return false
	}
	res, ok := msg.(*sip.Response)
	if !ok || res.Via() == nil {
		return false
	}
	branch, _ = res.Via().Params.Get("branch")
	return u.deliver(ctx, branch, res.StatusCode, upstreamAnswer{res: res, raw: raw})
}

// deliver hands a final answer under branch to its waiting REGISTER; false
// when branch is not one of sipwake's stateless ones.
func (u *statelessUDP) deliver(ctx context.Context, branch string, status int, a upstreamAnswer) bool {
	if !strings.HasPrefix(branch, statelessMark) {
		return false
	}
	if status < 200 {
		return true // a REGISTER's provisional answer tells the device nothing
	}
	u.mu.Lock()
	p := u.pending[branch]
	if p == nil || p.wire == nil {
		// A retransmitted final response (the first one counts), or one
		// to nothing sipwake sent.
		u.mu.Unlock()
		return true
	}
	// Answered: a retransmission from now on is a new REGISTER, so none
	// falls between this answer and the device's.
	delete(u.pending, branch)
	u.mu.Unlock()
	// The registrar has bound what its answer says: stopping sipwake does
	// not cut storing it short.
	ctx = context.WithoutCancel(ctx)
	if status < 300 && !u.s.answersUnwritten(p.reg, a.res) {
		u.workers.run(func() { u.finish(ctx, p, a, nil) }) // it may write to the store
	} else {
		u.finish(ctx, p, a, nil)
	}
	return true
}

// branch derives the upstream branch from what identifies the device's
// transaction (RFC 3261 §16.11): its top Via and source, Call-ID and CSeq.
// The seed is secret, so no device can aim at another's branch.
func (u *statelessUDP) branch(req *sip.Request) string {
	var h maphash.Hash
	h.SetSeed(u.seed)
	via := req.Via()
	b, _ := via.Params.Get("branch")
	for _, part := range []string{b, via.Host, strconv.Itoa(via.Port), req.Source(), req.CallID().Value(), strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)} {
		h.WriteString(part)
		h.WriteByte(0)
	}
	return statelessMark + hex.EncodeToString(h.Sum(nil))
}

// send sends reg's REGISTER, pending under branch as p, to the registrar
// (raw as it came, edited or printed).
func (u *statelessUDP) send(reg *registration, raw []byte, branch string, p *pendingRegister) error {
	to := u.upstream
	if to == nil {
		var err error
		if to, err = net.ResolveUDPAddr("udp", u.s.opts.Upstream.HostPort()); err != nil {
			return err
		}
	}
	wire, edited := u.editForward(reg, raw, branch)
	if !edited {
		fwd, err := u.forwardRequest(reg, branch)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		fwd.StringWrite(&buf)
		wire = buf.Bytes()
	}
	u.mu.Lock()
	p.wire, p.to, p.deadline = wire, to, time.Now().Add(u.s.opts.UpstreamTimeout)
	u.mu.Unlock()
	_, err := u.conn.WriteTo(wire, to)
	return err
}

// forwardRequest is reg's REGISTER for the registrar made from the parsed
// request, to be printed: what the transaction path does to a forwarded
// REGISTER (Max-Forwards, RFC 3581 on the device's Via, our Via on top),
// with the derived branch.
func (u *statelessUDP) forwardRequest(reg *registration, branch string) (*sip.Request, error) {
	fwd := u.s.forwardRegister(reg)
	if err := sipgo.ClientRequestDecreaseMaxForward(u.s.client, fwd); err != nil {
		return nil, err
	}
	if dev := fwd.Via(); dev != nil { // fwd's own copy
		fillRport(dev, reg.req.Source())
	}
	fwd.PrependHeader(u.via(branch))
	return fwd, nil
}

// via is sipwake's Via on a REGISTER it forwards statelessly: as the
// transaction path's (the public host the registrar reaches, the port the
// transport layer would fill in, rport asked) under the derived branch.
func (u *statelessUDP) via(branch string) *sip.ViaHeader {
	v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: u.s.publicHostFor(u.s.opts.Upstream.HostPort()), Port: u.s.publicPort("udp")}
	v.Params.Add("branch", branch)
	v.Params.Add("rport", "")
	return v
}

// viaLine writes via(branch) as its header line, CRLF ended. Its host and
// port are fixed once sipwake serves, so it is printed once and the branch
// put in: printing the Via header for each REGISTER was 6 allocations.
func (u *statelessUDP) viaLine(b *bytes.Buffer, branch string) {
	head, tail := u.viaText.around(func(slot string) string {
		var line bytes.Buffer
		writeLines(&line, u.via(slot))
		return line.String()
	})
	b.WriteString(head)
	b.WriteString(branch)
	b.WriteString(tail)
}

// fillRport gives via, the device's top Via, RFC 3581's rport and received
// from source when it asked for them (an rport parameter), as sipgo's
// client does on the transaction path; it says whether it did.
func fillRport(via *sip.ViaHeader, source string) bool {
	if !via.Params.Has("rport") {
		return false
	}
	h, p, _ := net.SplitHostPort(source)
	via.Params.Add("rport", p)
	via.Params.Add("received", h)
	return true
}

// editForward makes reg's REGISTER for the registrar by editing raw, the
// device's datagram, as a stateless proxy's lumps do, instead of printing
// the parsed request: sipwake's Via (under branch) and, for a push
// binding, its Path go in after the request line; the device's Via gets
// RFC 3581's received and rport when it asked for them; Max-Forwards goes
// down by one; Supported: path goes last. The result says to the registrar
// what forwardRequest's does. ok is false when raw is not laid out plainly
// enough to edit (a header folded over lines, the device's Via in its
// compact form or not plain as plainVia says, a Route, which may name
// sipwake and go, no Content-Length, bytes past the body) or when the
// forward changes more (contact mode rewrites the push Contact):
// forwardRequest then makes it.
func (u *statelessUDP) editForward(reg *registration, raw []byte, branch string) (wire []byte, ok bool) {
	s := u.s
	end, first := bytes.Index(raw, headsEnd), bytes.Index(raw, crlf)
	if end < 0 || first < 0 || s.opts.ContactMode && reg.push != nil || len(raw)-end-len(headsEnd) != len(reg.req.Body()) {
		return nil, false
	}
	head := first + len(crlf) // where the header lines start
	var via, maxFwd [2]int    // the device's Via line and Max-Forwards', when found: start, end
	sized := false            // a Content-Length line came
	for at, line := range headerLines(raw[:end+len(crlf)]) {
		name, value, found := bytes.Cut(line, []byte(":"))
		name = bytes.TrimSpace(name)
		switch {
		case !found || line[0] == ' ' || line[0] == '\t' || bytes.EqualFold(name, []byte("v")) || bytes.EqualFold(name, []byte("route")):
			return nil, false
		case bytes.EqualFold(name, []byte("via")) && via[1] == 0:
			if _, plain := plainVia(value); !plain {
				return nil, false
			}
			via = at
		case bytes.EqualFold(name, []byte("max-forwards")):
			maxFwd = at
		case bytes.EqualFold(name, []byte("content-length")) || bytes.EqualFold(name, []byte("l")):
			sized = true
		}
	}
	if via[1] == 0 || !sized {
		return nil, false
	}
	var b bytes.Buffer
	b.Grow(len(raw) + 256)
	b.Write(raw[:head])
	u.viaLine(&b, branch)
	var supported sip.Header
	if reg.push != nil {
		var path sip.Header
		path, supported = s.pathHeaders(reg.id)
		writeLines(&b, path)
	}
	// The rest as it came, but for the two lines sipwake edits.
	mf := reg.req.MaxForwards()
	edits := [][2]int{via, maxFwd}
	if maxFwd[0] < via[0] {
		edits[0], edits[1] = maxFwd, via
	}
	pos := head
	for _, edit := range edits {
		if edit[1] == 0 {
			continue
		}
		b.Write(raw[pos:edit[0]])
		switch {
		case edit == via && rportLine(&b, raw[via[0]:via[1]-len(crlf)], reg.req.Source()):
		case edit == maxFwd && mf != nil:
			b.WriteString("Max-Forwards: " + strconv.Itoa(int(mf.Val())-1) + "\r\n")
		default:
			b.Write(raw[edit[0]:edit[1]])
		}
		pos = edit[1]
	}
	b.Write(raw[pos : end+len(crlf)])
	if supported != nil {
		writeLines(&b, supported)
	}
	b.Write(raw[end+len(crlf):])
	return b.Bytes(), true
}

// rportLine writes line, the device's Via (plain, as plainVia says), with
// RFC 3581's rport and received from source and its CRLF, as fillRport
// fills the parsed Via: rport's value put in where it stands, received's
// where it stands or added last; the rest as it came. It writes nothing
// and says false when the Via asks for no rport.
func rportLine(b *bytes.Buffer, line []byte, source string) bool {
	semi := bytes.IndexByte(line, ';')
	host, port, err := net.SplitHostPort(source)
	if semi < 0 || err != nil {
		return false
	}
	params := bytes.TrimRight(line[semi+1:], " \t")
	is := func(p []byte, name string) bool { n, _, _ := bytes.Cut(p, []byte("=")); return string(n) == name }
	asked := false
	for p := range bytes.SplitSeq(params, []byte(";")) {
		asked = asked || is(p, "rport")
	}
	if !asked {
		return false
	}
	b.Write(line[:semi])
	rport, received := false, false // written: a repeat is left out, as the parser keeps one
	for p := range bytes.SplitSeq(params, []byte(";")) {
		switch {
		case is(p, "rport"):
			if !rport {
				b.WriteString(";rport=")
				b.WriteString(port)
			}
			rport = true
		case is(p, "received"):
			if !received {
				b.WriteString(";received=")
				b.WriteString(host)
			}
			received = true
		default:
			b.WriteByte(';')
			b.Write(p)
		}
	}
	if !received {
		b.WriteString(";received=")
		b.WriteString(host)
	}
	b.Write(crlf)
	return true
}

// printedOnce is a text that differs between its uses in one value only
// (a branch, a binding id): printed once with a stand-in for the value,
// and split there, so each use puts its own value between the two parts.
type printedOnce struct {
	once       sync.Once
	head, tail string
}

// printedSlot stands for the value: a token, which sipgo prints as it is
// in a header parameter and a URI's user part, and which no host or port
// holds.
const printedSlot = "sipwake-printed-slot"

// around is the text before and after the value; print prints the text
// with slot for the value, the first time only.
func (p *printedOnce) around(print func(slot string) string) (head, tail string) {
	p.once.Do(func() { p.head, p.tail, _ = strings.Cut(print(printedSlot), printedSlot) })
	return p.head, p.tail
}

// writeLines writes each header as its line, CRLF ended.
func writeLines(b *bytes.Buffer, hs ...sip.Header) {
	for _, h := range hs {
		h.StringWrite(b)
		b.Write(crlf)
	}
}

// withHeaders is msg with the header lines add put in before the blank
// line that ends its headers (msg has one: scanAnswer found it).
func withHeaders(msg, add []byte) []byte {
	if len(add) == 0 {
		return msg
	}
	at := bytes.Index(msg, headsEnd) + len(crlf)
	out := make([]byte, 0, len(msg)+len(add))
	return append(append(append(out, msg[:at]...), add...), msg[at:]...)
}

// take takes p, pending under branch, out of pending, and says whether
// it was there: whoever takes it answers it.
func (u *statelessUDP) take(branch string, p *pendingRegister) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pending[branch] != p {
		return false
	}
	delete(u.pending, branch)
	return true
}

// resend sends a pending REGISTER (wire, to to) upstream again when the
// device retransmitted it; before it went out the first time there is
// nothing to do.
func (u *statelessUDP) resend(wire []byte, to net.Addr) {
	if wire != nil {
		if _, err := u.conn.WriteTo(wire, to); err != nil {
			u.s.log.Debug("sip resend failed", "error", err)
		}
	}
}

// udpAnswer answers a stateless REGISTER where it came from (RFC 3581).
type udpAnswer struct {
	u  *statelessUDP
	to net.Addr
}

func (a udpAnswer) Respond(res *sip.Response) error {
	buf := a.u.bufs.Get().(*bytes.Buffer)
	defer a.u.bufs.Put(buf)
	buf.Reset()
	res.StringWrite(buf)
	return a.write(buf.Bytes())
}

func (a udpAnswer) write(b []byte) error {
	_, err := a.u.conn.WriteTo(b, a.to)
	return err
}

var (
	crlf     = []byte("\r\n")
	headsEnd = []byte("\r\n\r\n")
)

// scanAnswer reads what relaying a registrar's final answer needs,
// without parsing it: its status, the branch of its top Via, and a copy of
// the datagram without that Via's line. ok is false for a provisional
// answer, and for anything not plainly laid out (no blank line after the
// headers, a status that is not three digits, the top Via folded over
// lines or not plain, no Via below it): those take the parser's path.
func scanAnswer(data []byte) (status int, branch string, relay []byte, ok bool) {
	end := bytes.Index(data, headsEnd)
	if end < 0 || !bytes.HasPrefix(data, responsePrefix) || len(data) < len(responsePrefix)+4 {
		return 0, "", nil, false
	}
	code := data[len(responsePrefix) : len(responsePrefix)+4] // "401 "
	for _, c := range code[:3] {
		if c < '0' || c > '9' {
			return 0, "", nil, false
		}
		status = status*10 + int(c-'0')
	}
	if code[3] != ' ' || status < 200 {
		return 0, "", nil, false
	}
	head := data[:end+len(crlf)] // the status line and every header line, each with its CRLF
	top, below := -1, -1         // where sipwake's Via line starts and the next line does
	for at, line := range headerLines(head) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if at[0] == below {
				return 0, "", nil, false // sipwake's Via continues on this line
			}
		} else if value, via := viaValue(line); via {
			if top >= 0 {
				relay = make([]byte, 0, len(data)-(below-top))
				relay = append(append(relay, data[:top]...), data[below:]...)
				return status, branch, relay, true
			}
			b, plain := plainVia(value)
			if !plain {
				return 0, "", nil, false // several values, or anything unusual
			}
			top, below, branch = at[0], at[1], string(b)
		}
	}
	return 0, "", nil, false // no Via below sipwake's
}

// answerHeaders are the headers sipwake reads in a registrar's 2xx, by
// the names they may come under, and the name readAnswer gives them.
var answerHeaders = []struct{ wire, name string }{
	{"contact", "Contact"}, {"m", "Contact"}, {"expires", "Expires"}, {"feature-caps", "Feature-Caps"},
}

// readAnswer is a registrar's 2xx, which scanAnswer found plain, as far as
// sipwake reads it (answerHeaders), without the parser: its status line and
// those headers as they came, in their order, values unparsed (sipmsg reads
// them); the device gets the datagram itself. ok is false when one of them
// is folded over lines: the parser takes the answer then.
func readAnswer(data []byte, status int) (res *sip.Response, ok bool) {
	res = sip.NewResponse(status, string(data[len(responsePrefix)+4:bytes.Index(data, crlf)]))
	read := false // the line before was one of answerHeaders
	for _, line := range headerLines(data[:bytes.Index(data, headsEnd)+len(crlf)]) {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if read {
				return nil, false
			}
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		name, read = bytes.TrimSpace(name), false
		for _, h := range answerHeaders {
			if len(name) == len(h.wire) && bytes.EqualFold(name, []byte(h.wire)) {
				res.AppendHeader(sip.NewHeader(h.name, string(bytes.TrimSpace(value))))
				read = true
				break
			}
		}
	}
	return res, true
}

// headerLines walks the header lines of head (a message's first line and
// its header lines, each ending in CRLF): each line without its CRLF, and
// where it starts and the next one does.
func headerLines(head []byte) iter.Seq2[[2]int, []byte] {
	return func(yield func([2]int, []byte) bool) {
		for pos := bytes.Index(head, crlf) + len(crlf); pos < len(head); {
			line := head[pos : pos+bytes.Index(head[pos:], crlf)]
			next := pos + len(line) + len(crlf)
			if !yield([2]int{pos, next}, line) {
				return
			}
			pos = next
		}
	}
}

// viaValue returns the value of a header line that is a Via (or its
// compact form, v).
func viaValue(line []byte) ([]byte, bool) {
	name, value, found := bytes.Cut(line, []byte(":"))
	name = bytes.TrimSpace(name)
	return value, found && (bytes.EqualFold(name, []byte("via")) || bytes.EqualFold(name, []byte("v")))
}

// plainVia returns the branch of one Via value laid out as a registrar
// sends sipwake's back: SIP/2.0/transport, host or [IPv6] with an optional
// port, then token parameters; plain is false for anything else.
func plainVia(value []byte) (branch []byte, plain bool) {
	v := bytes.Trim(value, " \t")
	if len(v) < len(viaProtocol) || !bytes.EqualFold(v[:len(viaProtocol)], viaProtocol) {
		return nil, false
	}
	v = v[len(viaProtocol):]
	n := span(v, isToken)
	m := span(v[n:], func(c byte) bool { return c == ' ' || c == '\t' })
	if n == 0 || m == 0 {
		return nil, false
	}
	v = v[n+m:]
	if len(v) > 0 && v[0] == '[' {
		n = 1 + span(v[1:], func(c byte) bool { return isHex(c) || c == ':' || c == '.' })
		if n >= len(v) || v[n] != ']' {
			return nil, false
		}
		n++
	} else {
		n = span(v, func(c byte) bool { return isAlnum(c) || c == '-' || c == '.' })
	}
	if n == 0 {
		return nil, false
	}
	v = v[n:]
	if len(v) > 0 && v[0] == ':' {
		n = span(v[1:], func(c byte) bool { return c >= '0' && c <= '9' })
		if n == 0 || n > 5 {
			return nil, false
		}
		v = v[1+n:]
	}
	for len(v) > 0 {
		if v[0] != ';' {
			return nil, false
		}
		n = span(v[1:], isToken)
		if n == 0 {
			return nil, false
		}
		name := v[1 : 1+n]
		v = v[1+n:]
		var val []byte
		if len(v) > 0 && v[0] == '=' {
			n = span(v[1:], isToken)
			if n == 0 {
				return nil, false
			}
			val, v = v[1:1+n], v[1+n:]
		}
		if string(name) == "branch" {
			branch = val
		}
	}
	return branch, true
}

var viaProtocol = []byte("SIP/2.0/")

// span counts the leading bytes of b that ok accepts.
func span(b []byte, ok func(byte) bool) int {
	n := 0
	for n < len(b) && ok(b[n]) {
		n++
	}
	return n
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// isToken: RFC 3261's token characters.
func isToken(c byte) bool { return isAlnum(c) || strings.IndexByte("-.!%*_+`'~", c) >= 0 }

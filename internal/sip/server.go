// Package sip is sipwake's SIP wire side, on github.com/emiago/sipgo: the
// listeners, REGISTER proxying toward the provider's registrar (Path or
// Contact rewriting, challenge relay, Feature-Caps), and un-registering
// upstream. It turns messages into relay types and back; the decisions about
// bindings (what to keep, for how long, when to erase) belong to relay.
package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/limit"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// Listen holds the SIP listen addresses (config sip.listen); an empty one
// is not opened.
type Listen struct {
	UDP         string `yaml:"udp"`
	TCP         string `yaml:"tcp"`
	TLS         string `yaml:"tls"`
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
}

// Upstream is the provider's registrar/proxy (config sip.upstream).
type Upstream struct {
	Host      string
	Port      int
	Transport string // udp, tcp or tls
}

// HostPort is the address requests are sent to.
func (u Upstream) HostPort() string {
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// Options configure the SIP side.
type Options struct {
	Listen Listen
	// PublicHost and PublicPort are what sipwake puts in Path, Contact and
	// Via; empty/zero take the listen address.
	PublicHost string
	// PublicHost6 replaces PublicHost toward peers reached over IPv6 when
	// sipwake listens on both families ("": PublicHost for every peer).
	// IPv6 hosts are held without brackets, as in a sip.Uri built here.
	PublicHost6 string
	PublicPort  int
	Upstream    Upstream
	// ContactMode rewrites the device's Contact to sipwake instead of adding
	// a Path header (for registrars without RFC 3327 support).
	ContactMode bool
	// UpstreamTimeout bounds how long a REGISTER waits for the registrar
	// (0: 5 s, the config's default).
	UpstreamTimeout time.Duration
	UserAgent       string
	// TLSConfig serves the TLS listener; nil without one.
	TLSConfig *tls.Config
	// CallWait is how long a call is held for a sleeping device.
	CallWait time.Duration
	// Ringing sends 180s to the caller while the device is woken.
	Ringing bool
	// RefreshLead is how long before its upstream registration lapses a
	// device is pushed to refresh it: Feature-Caps +sip.pnsreg says so.
	RefreshLead time.Duration
	// AwakePushDelay is how long a device with a live flow has to answer
	// a call over it before it is pushed too (unless it gave pn-timeout).
	AwakePushDelay time.Duration
	// TrustedSources may send calls for bindings, besides the upstream.
	TrustedSources []netip.Prefix
	Trunks         []Trunk
	// Metrics counts REGISTER outcomes; nil keeps unexported ones.
	Metrics *Metrics
	// MaxRegistersInFlight bounds REGISTERs waiting on the registrar; past
	// it sipwake answers 503 at once instead of queueing without end
	// (0: 2048).
	MaxRegistersInFlight int
	// RegisterRate and RegisterBurst bound REGISTERs per source address
	// (per second, and the burst allowed); 0 disables the limit.
	RegisterRate  float64
	RegisterBurst int
	// StoreInProcess says the binding store is read in this process
	// (bbolt), without a network round trip: a REGISTER over UDP toward a
	// registrar over UDP is then admitted and forwarded by the goroutine
	// that read it from the socket, not on a worker.
	StoreInProcess bool
	// FlowKey seals the flow tokens of sipwake's Record-Routes (32 bytes);
	// nodes that share it open each other's. Empty: a random key of this
	// process, so tokens die with it.
	FlowKey []byte
}

// defaultUpstreamTimeout is Options.UpstreamTimeout when it is 0.
const defaultUpstreamTimeout = 5 * time.Second

// Server is sipwake's SIP endpoint.
type Server struct {
	opts    Options
	relay   Relay
	log     *slog.Logger
	metrics *Metrics
	limits  *limit.Keyed[netip.Addr]
	// inFlight counts REGISTERs waiting on the registrar.
	inFlight atomic.Int64
	// nonceKey signs the digest nonces sipwake issues to handed-over apps.
	nonceKey []byte
	// flows seals and opens the flow tokens of device-facing Record-Routes.
	flows *flowTokens
	// held are the bindings of devices connected to this node, for calls
	// while the store fails.
	held heldFlows
	// udp forwards REGISTERs statelessly when device and registrar both
	// speak UDP; nil otherwise.
	udp    *statelessUDP
	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	client *sipgo.Client
	// upstreamIPs are the registrar's addresses: it may send calls.
	upstreamIPs map[netip.Addr]bool

	// draining refuses new calls; drainCtx ends the parked ones.
	draining   atomic.Bool
	drainCtx   context.Context
	drainNow   context.CancelFunc
	deliveries sync.WaitGroup
	handlers   map[sip.RequestMethod]handler

	// pathText is Path's value, printed once (pathHeaders).
	pathText printedOnce

	mu        sync.Mutex
	listeners map[string]net.Addr // network -> bound address
	closers   []func() error
	serving   sync.WaitGroup
}

// New builds the SIP side. Nothing listens until Start.
func New(opts Options, rl Relay, log *slog.Logger) (*Server, error) {
	host := opts.PublicHost
	if host == "" {
		host = firstHost(opts.Listen)
	}
	wireLog := sipmsg.RedactedLogger(log)
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.MaxRegistersInFlight <= 0 {
		opts.MaxRegistersInFlight = 2048
	}
	if opts.UpstreamTimeout <= 0 {
		opts.UpstreamTimeout = defaultUpstreamTimeout
	}
	s := &Server{
		opts: opts, relay: rl, log: log, metrics: opts.Metrics,
		limits:      limit.New[netip.Addr](opts.RegisterRate, opts.RegisterBurst, time.Now),
		listeners:   map[string]net.Addr{},
		upstreamIPs: resolveUpstream(opts.Upstream.Host),
		nonceKey:    newNonceKey(),
	}
	flowKey := opts.FlowKey
	if len(flowKey) == 0 {
		flowKey = store.NewKey()
	}
	flows, err := newFlowTokens(flowKey)
	if err != nil {
		return nil, fmt.Errorf("sip flow key: %w", err)
	}
	s.flows = flows
	tpOpts := []sip.TransportLayerOption{sip.WithTransportLayerLogger(wireLog)}
	if strings.EqualFold(opts.Upstream.Transport, "udp") {
		s.udp = newStatelessUDP(s)
	}
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent(opts.UserAgent),
		sipgo.WithUserAgentHostname(host),
		sipgo.WithUserAgentTransportLayerOptions(tpOpts...),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(wireLog),
			sip.WithTransactionLayerUnhandledResponseHandler(s.relayStray2xx),
		),
	}
	if opts.TLSConfig != nil {
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(opts.TLSConfig))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(wireLog))
	if err != nil {
		return nil, fmt.Errorf("sip server: %w", err)
	}
	clientOpts := []sipgo.ClientOption{sipgo.WithClientLogger(wireLog), sipgo.WithClientHostname(host)}
	if opts.PublicPort > 0 {
		clientOpts = append(clientOpts, sipgo.WithClientPort(opts.PublicPort))
	}
	client, err := sipgo.NewClient(ua, clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("sip client: %w", err)
	}
	s.ua, s.srv, s.client = ua, srv, client
	s.drainCtx, s.drainNow = context.WithCancel(context.Background())
	if s.opts.PublicHost == "" {
		s.opts.PublicHost = host
	}
	s.handlers = map[sip.RequestMethod]handler{
		sip.REGISTER: done(s.onRegister),
		sip.OPTIONS:  done(s.onOptions),
		sip.INVITE:   s.onInitialOrInDialog,
		sip.MESSAGE:  s.onInitialOrInDialog,
		sip.ACK:      done(s.onAck),
		sip.CANCEL:   done(s.onCancel),
	}
	for _, m := range []sip.RequestMethod{sip.BYE, sip.UPDATE, sip.INFO, sip.PRACK, sip.NOTIFY, sip.REFER, sip.SUBSCRIBE} {
		s.handlers[m] = done(s.onInDialog)
	}
	// sipgo.Server ends a transaction when its handler returns, so a parked
	// call would hold a goroutine (and its stack) for its whole wait.
	// sipwake takes requests from the transaction layer itself instead.
	ua.TransactionLayer().OnRequest(s.dispatch)
	return s, nil
}

// A handler answers a request on its server transaction. kept says the
// transaction lives on after the handler returned (a parked call) and will
// be ended by whoever holds it.
type handler func(req *sip.Request, tx keptTx) (kept bool)

// keptTx is a server transaction that can be ended after its handler
// returned.
type keptTx interface {
	sip.ServerTransaction
	TerminateGracefully()
}

// done adapts a handler that is finished with its transaction on return.
func done(h func(*sip.Request, sip.ServerTransaction)) handler {
	return func(req *sip.Request, tx keptTx) bool {
		h(req, tx)
		return false
	}
}

// dispatch routes a request from sipgo's transaction layer to its handler
// (405 for methods sipwake does not take) and ends the transaction when
// the handler is done with it.
func (s *Server) dispatch(req *sip.Request, tx *sip.ServerTx) {
	h, ok := s.handlers[req.Method]
	if !ok {
		h = done(s.methodNotAllowed)
	}
	if h(req, tx) {
		return
	}
	// Over UDP a finished transaction stays to answer retransmissions.
	tx.TerminateGracefully()
}

func (s *Server) methodNotAllowed(req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, sip.StatusMethodNotAllowed, "Method Not Allowed", allowHeader())
}

func firstHost(l Listen) string {
	for _, a := range []string{l.UDP, l.TCP, l.TLS} {
		if host, _, err := net.SplitHostPort(a); err == nil && host != "" && host != "0.0.0.0" && host != "::" {
			return host
		}
	}
	return "127.0.0.1"
}

// Start binds every configured listener, then serves them. A bind error is
// returned here, before anything is served.
func (s *Server) Start(ctx context.Context) error {
	type serve struct {
		network string
		run     func() error
	}
	var serves []serve
	bindErr := func(network, addr string, err error) error {
		s.closeListeners()
		return fmt.Errorf("sip listen %s %s: %w", network, addr, err)
	}
	if a := s.opts.Listen.UDP; a != "" {
		conn, err := net.ListenPacket("udp", a)
		if err != nil {
			return bindErr("udp", a, err)
		}
		s.track("udp", conn.LocalAddr(), conn.Close)
		if err := growBuffers(conn); err != nil {
			s.log.Warn("sip: could not grow the UDP socket buffers", "error", err)
		}
		served := conn
		if s.udp != nil {
			served = s.udp.serve(ctx, conn)
		}
		serves = append(serves, serve{"udp", func() error { return s.srv.ServeUDP(served) }})
	}
	if a := s.opts.Listen.TCP; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return bindErr("tcp", a, err)
		}
		s.track("tcp", l.Addr(), l.Close)
		bl := bound(l, idleTimeout, maxConnsPerSource)
		serves = append(serves, serve{"tcp", func() error { return s.srv.ServeTCP(bl) }})
	}
	if a := s.opts.Listen.TLS; a != "" {
		if s.opts.TLSConfig == nil {
			return bindErr("tls", a, errors.New("no TLS certificate configured"))
		}
		l, err := net.Listen("tcp", a)
		if err != nil {
			return bindErr("tls", a, err)
		}
		s.track("tls", l.Addr(), l.Close)
		tl := tls.NewListener(bound(l, idleTimeout, maxConnsPerSource), s.opts.TLSConfig)
		serves = append(serves, serve{"tls", func() error { return s.srv.ServeTLS(tl) }})
	}
	for _, sv := range serves {
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			if err := sv.run(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("sip listener stopped", "network", sv.network, "error", err)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		s.closeListeners()
	}()
	return nil
}

func (s *Server) track(network string, addr net.Addr, closer func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners[network] = addr
	s.closers = append(s.closers, closer)
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	closers := s.closers
	s.closers = nil
	s.mu.Unlock()
	for _, c := range closers {
		_ = c()
	}
}

// sendFrom makes a request sipwake originates or forwards leave over UDP
// from its listening socket: the far end answers to where it came from, and
// sipgo's per-destination client sockets (reference-counted, closed when
// idle) are never involved. Over TCP/TLS the pool's connections are used.
func (s *Server) sendFrom(req *sip.Request, transport string) {
	req.Laddr = sip.Addr{}
	if !strings.EqualFold(transport, "udp") {
		return
	}
	s.mu.Lock()
	a, ok := s.listeners["udp"].(*net.UDPAddr)
	s.mu.Unlock()
	if ok {
		req.Laddr = sip.Addr{IP: a.IP, Port: a.Port}
	}
}

// forwardOptions are what sipwake does to a request it forwards: Max-
// Forwards down by one, its Via on top (and, RFC 3581, the received and
// rport of the Via below) with the host its next hop can reach.
func (s *Server) forwardOptions() []sipgo.ClientRequestOption {
	return []sipgo.ClientRequestOption{sipgo.ClientRequestDecreaseMaxForward, sipgo.ClientRequestAddVia, s.viaHostForDestination}
}

// viaHostForDestination puts in sipwake's Via the public host of the
// destination's address family: sipgo's client has one host for all.
func (s *Server) viaHostForDestination(_ *sipgo.Client, r *sip.Request) error {
	if via := r.Via(); via != nil {
		via.Host = s.publicHostFor(r.Destination())
	}
	return nil
}

// publicHostFor is sipwake's host as the peer at addr (host, host:port,
// bracketed or not) reaches it: PublicHost6 for an IPv6 peer when set.
func (s *Server) publicHostFor(addr string) string {
	if s.opts.PublicHost6 == "" {
		return s.opts.PublicHost
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err == nil && ip.Is6() && !ip.Is4In6() {
		return s.opts.PublicHost6
	}
	return s.opts.PublicHost
}

// Addr is the bound address of a listener ("udp", "tcp", "tls"), or "".
func (s *Server) Addr(network string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.listeners[network]; ok {
		return a.String()
	}
	return ""
}

// Drain stops taking new calls (they get 503 with Retry-After) and waits
// for the parked ones to finish; those still parked when ctx ends are
// answered 503 at once. REGISTERs keep flowing meanwhile, so devices that
// wake during the drain still get their calls.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	done := make(chan struct{})
	go func() {
		s.deliveries.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.drainNow()
		<-done
		return ctx.Err()
	}
}

// Stop closes the listeners and the transports, giving up when ctx ends. It
// is idempotent.
func (s *Server) Stop(ctx context.Context) error {
	s.closeListeners()
	done := make(chan error, 1)
	go func() {
		s.serving.Wait()
		if s.udp != nil {
			s.udp.stop(ctx)
		}
		done <- s.ua.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// onOptions answers keep-alive and capability probes.
func (s *Server) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	res.AppendHeader(allowHeader())
	s.respond(tx, res)
}

func allowHeader() sip.Header {
	return sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, UPDATE, INFO, PRACK")
}

// An answerer sends a request's responses back: its server transaction, or
// the UDP socket it came on when sipwake forwards it statelessly.
type answerer interface {
	Respond(res *sip.Response) error
}

func (s *Server) respond(tx answerer, res *sip.Response) {
	if err := tx.Respond(res); err != nil {
		s.log.Debug("sip respond failed", "status", res.StatusCode, "error", err)
	}
}

// reply answers req with a status and a reason a person can read.
func (s *Server) reply(req *sip.Request, tx answerer, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	s.respond(tx, res)
}

// publicPort is the advertised port for a transport.
func (s *Server) publicPort(network string) int {
	if s.opts.PublicPort > 0 {
		return s.opts.PublicPort
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range []string{network, "udp", "tcp", "tls"} {
		switch a := s.listeners[n].(type) {
		case *net.UDPAddr:
			return a.Port
		case *net.TCPAddr:
			return a.Port
		}
	}
	return 5060
}

// txContext is cancelled when the server transaction ends. sipgo v1.7's
// sip.ServerTransactionContext cancels at once (it reads OnTerminate's
// "registered" result as "already terminated"), so it cannot be used.
func txContext(tx sip.ServerTransaction) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	if !tx.OnTerminate(func(string, error) { cancel() }) {
		cancel()
	}
	return ctx, cancel
}

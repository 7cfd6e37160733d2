package sip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/push/pn"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// StatusPushNotSupported is RFC 8599's answer to a pn-provider sipwake does
// not serve.
const StatusPushNotSupported = 555

const defaultExpires = 3600

// registration is one REGISTER on its way through sipwake.
type registration struct {
	req      *sip.Request
	aor      relay.AOR
	contacts []*sip.ContactHeader
	// push is the Contact that asks for push, with its device; nil when
	// none does.
	push   *sip.ContactHeader
	device relay.Device
	id     store.ID
	query  bool // a bare pn-provider: capability query
	// known are the AOR's bindings as stored when a push REGISTER came
	// in: read once, for the handed-over account it may be and for what
	// storing it changes.
	known []relay.Binding
	// stored is the binding this REGISTER refreshed, once stored.
	stored *relay.Binding
	// account is the handed-over account whose app sent this REGISTER
	// (accountBinding): sipwake answers it, nothing goes upstream.
	account *relay.Binding
	// binding is what the registrar's 2xx makes of the push binding, once
	// bindingFor has read it; unwritten is the binding as stored when
	// that 2xx was found to refresh it without a write
	// (answersUnwritten).
	binding, unwritten *relay.Binding
}

// upstreamFunc forwards a REGISTER to the registrar and returns its final
// answer: in a client transaction (upstreamDo) or statelessly over UDP.
type upstreamFunc func(ctx context.Context, reg *registration) (upstreamAnswer, error)

// upstreamAnswer is the registrar's final answer. On the stateless path,
// when it is laid out plainly, raw is the datagram as it came with
// sipwake's Via line removed: the device's answer already, which relay
// sends with the header lines add (each ending in CRLF) put in before the
// blank line, without printing a parsed message. res is the answer parsed:
// always for a 2xx, which sipwake reads; a non-2xx in raw is not parsed
// (half of all answers are challenges), and with raw a 2xx's res holds
// only the headers sipwake reads (readAnswer).
type upstreamAnswer struct {
	res   *sip.Response
	raw   []byte
	relay func(add []byte) error
}

// onRegister takes a REGISTER that came in a server transaction (TCP, TLS,
// or UDP toward a registrar over TCP/TLS).
func (s *Server) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := txContext(tx)
	defer cancel()
	s.register(ctx, req, tx, func(ctx context.Context, reg *registration) (upstreamAnswer, error) {
		res, err := s.upstreamDo(ctx, s.forwardRegister(reg))
		return upstreamAnswer{res: res}, err
	})
}

// register proxies a REGISTER to the provider's registrar. The challenge
// goes back to the device untouched; only the registrar's 2xx changes what
// sipwake stores.
func (s *Server) register(ctx context.Context, req *sip.Request, tx answerer, upstream upstreamFunc) {
	reg, ok := s.admit(ctx, req, tx)
	if !ok {
		return
	}
	defer s.inFlight.Add(-1)
	if reg.account != nil {
		s.registerAccountApp(ctx, req, tx, reg, *reg.account)
		return
	}
	ans, err := upstream(ctx, reg)
	s.answered(ctx, reg, tx, ans, err)
}

// admit is register's first half: what a REGISTER asks for, and whether
// it goes to the registrar. It answers what does not (a source over its
// rate, sipwake overloaded, a bad request, a push service sipwake does not
// serve, a store it cannot read) and returns false; otherwise the
// REGISTER holds one of the sip.max_registers_in_flight places until
// its answer went out (s.inFlight.Add(-1)). A handed-over account's app
// comes back with reg.account set: sipwake is its registrar.
func (s *Server) admit(ctx context.Context, req *sip.Request, tx answerer) (*registration, bool) {
	// Phones are limited per address; a trusted proxy in front of sipwake
	// carries everyone's REGISTERs from one address and is not.
	if src := sourceIP(req); !s.trusted(src) && !s.limits.Allow(subscriberOf(src)) {
		s.metrics.register(regRateLimited)
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable: too many REGISTERs from this address", sip.NewHeader("Retry-After", "10"))
		return nil, false
	}
	if s.inFlight.Add(1) > int64(s.opts.MaxRegistersInFlight) {
		s.inFlight.Add(-1)
		s.metrics.register(regOverloaded)
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable: sipwake is overloaded", sip.NewHeader("Retry-After", "5"))
		return nil, false
	}
	reg, ok := s.readRegister(ctx, req, tx)
	if !ok {
		s.inFlight.Add(-1)
	}
	return reg, ok
}

// readRegister reads what a REGISTER asks for and, for a push binding, the
// AOR's stored bindings; false when it answered the REGISTER instead.
func (s *Server) readRegister(ctx context.Context, req *sip.Request, tx answerer) (*registration, bool) {
	reg, code, reason := s.parseRegister(req)
	switch code {
	case 0:
	case StatusPushNotSupported:
		s.metrics.register(regUnsupported)
		s.reply(req, tx, code, reason, s.featureCaps(s.relay.Providers()...)...)
		return nil, false
	default:
		s.metrics.register(regBadRequest)
		s.reply(req, tx, code, reason)
		return nil, false
	}
	s.relay.Traces().Log(s.log, reg.aor, "REGISTER from device", "sip", req)
	if reg.push != nil {
		// A store that cannot be read now will not take the binding
		// either: refused before the registrar binds what sipwake would
		// not know.
		var err error
		if reg.known, err = s.relay.Bindings(ctx, reg.aor); err != nil {
			s.metrics.register(regStoreFailed)
			s.log.Error("binding store cannot be read; REGISTER refused before the registrar", "aor", reg.aor, "error", err)
			s.reply(req, tx, sip.StatusInternalServerError, "Server Internal Error: sipwake cannot read the push binding store")
			return nil, false
		}
		if b, ok := s.accountBinding(reg); ok {
			reg.account = &b
		}
	}
	return reg, true
}

// answered is register's second half: it gives the device the registrar's
// answer ans to reg (or, when err says the registrar gave none, sipwake's),
// storing what a 2xx binds. Only a 2xx writes to the store.
func (s *Server) answered(ctx context.Context, reg *registration, tx answerer, ans upstreamAnswer, err error) {
	req := reg.req
	if err != nil {
		s.metrics.register(regUpstreamFailed)
		code, reason := upstreamFailure(err)
		s.log.Warn("registrar did not answer a REGISTER", "aor", reg.aor, "error", err)
		s.reply(req, tx, code, reason)
		return
	}
	s.traceAnswer(reg, ans)
	if ans.res == nil {
		s.metrics.register(regUpstreamDenied)
		if err := ans.relay(nil); err != nil {
			s.log.Debug("sip respond failed", "error", err)
		}
		return
	}
	res := ans.res
	if s.printed(ans) {
		res = responseFor(req, res) // now the device's answer
	}
	if !res.IsSuccess() {
		s.metrics.register(regUpstreamDenied)
		s.respond(tx, res)
		return
	}
	outcome, add := s.registered(ctx, reg, res)
	s.metrics.register(outcome)
	if outcome == regStoreFailed {
		s.reply(req, tx, sip.StatusInternalServerError, "Server Internal Error: sipwake could not store the push binding")
		return
	}
	s.answerRegistered(tx, res, ans, add)
	if reg.stored != nil {
		// After the device has its 200: calls parked for it go out now.
		s.relay.Refreshed(*reg.stored)
	}
}

// parseRegister reads what a REGISTER asks for; a non-zero code is the
// answer to give instead of forwarding it.
func (s *Server) parseRegister(req *sip.Request) (*registration, int, string) {
	to := req.To()
	if to == nil || req.From() == nil || req.CallID() == nil || req.CSeq() == nil {
		return nil, sip.StatusBadRequest, "Bad Request: To, From, Call-ID and CSeq are required"
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() <= 1 {
		return nil, sip.StatusTooManyHops, "Too Many Hops"
	}
	aor, err := aorOf(to.Address)
	if err != nil {
		return nil, sip.StatusBadRequest, "Bad Request: To must be an address of record (user@domain)"
	}
	contacts, err := sipmsg.Contacts(req)
	if err != nil {
		return nil, sip.StatusBadRequest, "Bad Request: malformed Contact"
	}
	reg := &registration{req: req, aor: aor, contacts: contacts}
	for _, c := range contacts {
		if c.Address.Wildcard {
			continue
		}
		p := pushParams(c)
		switch s.relay.Classify(p) {
		case relay.PushUnsupported:
			return nil, StatusPushNotSupported, "Push Notification Service Not Supported"
		case relay.PushIncomplete:
			return nil, sip.StatusBadRequest, "Bad Request: pn-provider without pn-prid"
		case relay.PushQuery:
			reg.query = true
		case relay.PushEnable:
			if reg.push != nil {
				return nil, sip.StatusBadRequest, "Bad Request: one push-enabled Contact per REGISTER"
			}
			reg.push, reg.device = c, p.Device
		}
	}
	if reg.push != nil {
		reg.id = s.relay.BindingID(aor, reg.device)
	}
	return reg, 0, ""
}

// forwardRegister builds the REGISTER sent upstream: sipwake on the path
// (a Path header, or the push Contact rewritten to sipwake).
func (s *Server) forwardRegister(reg *registration) *sip.Request {
	fwd := s.toUpstream(reg.req)
	if reg.push == nil {
		return fwd
	}
	if s.opts.ContactMode {
		for fwd.RemoveHeader("Contact") {
		}
		for _, c := range reg.contacts {
			if c == reg.push {
				c = s.bindingContact(reg.id, c)
			}
			fwd.AppendHeader(c)
		}
		return fwd
	}
	path, supported := s.pathHeaders(reg.id)
	fwd.PrependHeader(path)
	fwd.AppendHeader(supported)
	return fwd
}

// pathHeaders put sipwake on the path of binding id (RFC 3327): its Path,
// and the Supported that says the registrar must honour it. Path's URI
// differs between bindings only in the id (host, port and transport are
// fixed once sipwake serves), so it is printed once with a stand-in for
// the id: printing it for each REGISTER was about 10 allocations.
func (s *Server) pathHeaders(id store.ID) (path, supported sip.Header) {
	head, tail := s.pathText.around(func(slot string) string {
		u := s.bindingURI(store.ID{})
		u.User = slot
		return "<" + uriString(&u) + ">"
	})
	value := head + sipmsg.BindingUserPrefix + id.String() + tail
	return sip.NewHeader("Path", value), sip.NewHeader("Supported", "path")
}

// toUpstream clones a request for the registrar: our Route removed, the
// destination set, and our Via on top.
func (s *Server) toUpstream(req *sip.Request) *sip.Request {
	fwd := req.Clone()
	if rt := fwd.Route(); rt != nil && s.isLocal(rt.Address) {
		fwd.RemoveHeader("Route")
	}
	s.sendFrom(fwd, s.opts.Upstream.Transport)
	fwd.SetTransport(sip.NetworkToUpper(s.opts.Upstream.Transport))
	fwd.SetDestination(s.opts.Upstream.HostPort())
	return fwd
}

// bindingURI names a binding at sipwake, toward the registrar:
// sip:sw-<id>@public:port;transport=t, with ;lr when it goes in a Path.
func (s *Server) bindingURI(id store.ID) sip.Uri {
	u := s.bindingURIOver(id, s.opts.Upstream.Transport)
	if !s.opts.ContactMode {
		u.UriParams.Add("lr", "")
	}
	return u
}

func (s *Server) bindingURIOver(id store.ID, transport string) sip.Uri {
	u := sip.Uri{
		Scheme:    "sip",
		User:      sipmsg.BindingUserPrefix + id.String(),
		Host:      s.publicHostFor(s.opts.Upstream.Host),
		Port:      s.publicPort(strings.ToLower(transport)),
		UriParams: sip.NewParams(),
	}
	u.UriParams.Add("transport", strings.ToLower(transport))
	return u
}

// bindingContact is the Contact the registrar stores in contact mode; the
// device's header parameters (expires, +sip.instance, reg-id) stay.
func (s *Server) bindingContact(id store.ID, device *sip.ContactHeader) *sip.ContactHeader {
	return &sip.ContactHeader{Address: s.bindingURI(id), Params: device.Params.Clone()}
}

func (s *Server) upstreamDo(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.UpstreamTimeout)
	defer cancel()
	return s.client.Do(ctx, req, s.forwardOptions()...)
}

// upstreamFailure maps a failed upstream transaction to the device's answer.
func upstreamFailure(err error) (int, string) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sip.ErrTransactionTimeout) {
		return sip.StatusRequestTimeout, "Request Timeout: the registrar did not answer"
	}
	return sip.StatusServiceUnavailable, "Service Unavailable: the registrar cannot be reached"
}

// responseFor turns a response to a request sipwake forwarded into the
// one for req's sender, as a proxy forwards a response (RFC 3261 §16.7):
// sipwake's Via (the top one) removed, sent back where req came from, and
// everything else as the next hop said it (its To tag, challenge, Contacts,
// Path, Record-Route). The Vias below are req's as sipwake forwarded them,
// RFC 3581's received and rport filled in. It changes res, which the caller
// owns: a response a sipgo transaction may still read is cloned first.
func responseFor(req *sip.Request, res *sip.Response) *sip.Response {
	res.RemoveHeader("Via")
	if res.Via() == nil {
		// A next hop that dropped the Vias it was sent: req's own.
		sip.CopyHeaders("Via", req, res)
	}
	res.SetTransport(req.Transport())
	res.SetDestination(req.Source())
	return res
}

// traceAnswer logs the registrar's answer for a traced AOR: as it came,
// sipwake's Via off, when sipwake relays it so (parsed only for the
// trace), else as parsed.
func (s *Server) traceAnswer(reg *registration, ans upstreamAnswer) {
	if !s.relay.Traces().Active(reg.aor) {
		return
	}
	var m sip.Message = ans.res
	what := "registrar answered"
	if ans.raw != nil {
		p, err := sip.ParseMessage(ans.raw)
		if err != nil {
			return
		}
		m, what = p, "registrar answered (relayed as it came, sipwake's Via off)"
	}
	s.relay.Traces().Log(s.log, reg.aor, what, "sip", m)
}

// answerRegistered gives the device res, the registrar's 2xx made its
// answer, with sipwake's headers added: into the datagram as it came
// (ans.raw) when there is one, else printed from res. Contact mode puts the
// device's own Contacts back into res, which only printing carries.
func (s *Server) answerRegistered(tx answerer, res *sip.Response, ans upstreamAnswer, add []sip.Header) {
	if s.printed(ans) {
		for _, h := range add {
			res.AppendHeader(h)
		}
		s.respond(tx, res)
		return
	}
	var lines bytes.Buffer
	writeLines(&lines, add...)
	if err := ans.relay(lines.Bytes()); err != nil {
		s.log.Debug("sip respond failed", "status", res.StatusCode, "error", err)
	}
}

// printed says whether the device's answer to ans is printed from ans.res
// (which responseFor makes it) rather than relayed from ans.raw.
func (s *Server) printed(ans upstreamAnswer) bool { return ans.raw == nil || s.opts.ContactMode }

// registered acts on the registrar's 2xx (responseFor made it the
// device's answer), says what came of it and which headers sipwake adds to
// the answer.
func (s *Server) registered(ctx context.Context, reg *registration, res *sip.Response) (string, []sip.Header) {
	switch {
	case reg.push != nil && upstreamPushes(res, reg.device.Provider):
		s.log.Info("registrar path already pushes; passing through", "aor", reg.aor)
		return regPassThrough, nil
	case reg.push != nil:
		return s.storeBinding(ctx, reg, res)
	case reg.query:
		return regQuery, s.featureCaps(s.relay.Providers()...)
	default:
		s.pushDisabled(ctx, reg)
		return regPassThrough, nil
	}
}

func (s *Server) storeBinding(ctx context.Context, reg *registration, res *sip.Response) (string, []sip.Header) {
	requested := sipmsg.Expires(reg.req, reg.push, defaultExpires)
	if requested == 0 {
		s.held.drop(reg.id)
		if err := s.relay.Erase(ctx, reg.aor, reg.device, relay.ErasedUnregistered); err != nil {
			s.log.Error("erase binding failed", "aor", reg.aor, "error", err)
		}
		return regUnregistered, nil
	}
	stored, err := s.storedBinding(ctx, reg, res, requested)
	if err != nil {
		s.log.Error("binding not stored; push stays off for this device", "aor", reg.aor, "error", err)
		return regStoreFailed, nil
	}
	reg.stored = &stored
	s.keepFlow(reg.id, stored)
	if s.opts.ContactMode {
		restoreDeviceContact(res, reg)
	}
	return regStored, []sip.Header{sip.NewHeader("Feature-Caps", s.pushCaps(stored))}
}

// storedBinding stores the binding reg's 2xx res makes (requested: the
// expiry the device asked for) and returns it as stored, unless
// answersUnwritten found it stored already.
func (s *Server) storedBinding(ctx context.Context, reg *registration, res *sip.Response, requested int) (relay.Binding, error) {
	if reg.unwritten != nil {
		return *reg.unwritten, nil
	}
	return s.relay.Register(ctx, s.bindingFor(reg, res, requested), reg.known)
}

// answersUnwritten says whether the registrar's 2xx res to reg refreshes
// a push binding without a store write (relay's RefreshUnwritten, which
// touches no store): answering it then waits for nothing, and
// storeBinding takes the binding as stored from reg.unwritten. Whatever
// else a 2xx does (a new binding, one that changed, push turned off) may
// write and says false.
func (s *Server) answersUnwritten(reg *registration, res *sip.Response) bool {
	if reg.push == nil || upstreamPushes(res, reg.device.Provider) {
		return false
	}
	requested := sipmsg.Expires(reg.req, reg.push, defaultExpires)
	if requested == 0 {
		return false
	}
	stored, ok := s.relay.RefreshUnwritten(s.bindingFor(reg, res, requested), reg.known)
	if ok {
		reg.unwritten = &stored
	}
	return ok
}

// bindingFor is the binding the registrar's 2xx res to reg makes
// (requested: the expiry the device asked for), read before contact mode
// restores the device's Contacts in res. It is read once per REGISTER:
// answersUnwritten reads it on the reader, and a binding that must be
// written is stored from it on a worker (the Contacts' parse alone was 6%
// of a first registration's CPU).
func (s *Server) bindingFor(reg *registration, res *sip.Response, requested int) relay.Binding {
	if reg.binding == nil {
		b := s.readBinding(reg, res, requested)
		reg.binding = &b
	}
	return *reg.binding
}

// readBinding reads what bindingFor returns.
func (s *Server) readBinding(reg *registration, res *sip.Response, requested int) relay.Binding {
	contact := uriString(&reg.push.Address)
	upContact := contact
	if s.opts.ContactMode {
		u := s.bindingURI(reg.id)
		upContact = u.String()
	}
	return relay.Binding{
		AOR:      reg.aor,
		Device:   reg.device,
		Contact:  contact,
		Instance: instanceOf(reg.push),
		Flow:     relay.Flow{Transport: strings.ToLower(reg.req.Transport()), Source: reg.req.Source()},
		Upstream: relay.UpstreamState{
			Contact: upContact,
			Path:    !s.opts.ContactMode,
			Expires: s.grantedExpires(res, reg, requested),
			CallID:  reg.req.CallID().Value(),
			CSeq:    reg.req.CSeq().SeqNo,
		},
		PNSReg: reg.push.Params.Has("+sip.pnsreg"),
	}
}

// pushCaps is the Feature-Caps of a stored binding's 2xx (RFC 8599 §5):
// the service that will push it, and in +sip.pnsreg how many seconds
// before its registration lapses sipwake wakes it to refresh (said when
// sipwake can, or when the device refreshes by itself and must know by
// when; a PushKit-only iPhone cannot be woken for that).
func (s *Server) pushCaps(b relay.Binding) string {
	caps := `*;+sip.pns="` + b.Device.Provider + `"`
	if b.PNSReg || b.Wakeable(pn.KindRegister) {
		caps += `;+sip.pnsreg="` + strconv.Itoa(int(s.opts.RefreshLead/time.Second)) + `"`
	}
	return caps
}

// grantedExpires reads the expiry the registrar granted the push contact.
func (s *Server) grantedExpires(up *sip.Response, reg *registration, requested int) int {
	contacts, err := sipmsg.Contacts(up)
	if err != nil {
		return requested
	}
	for _, c := range contacts {
		if s.isPushContact(c, reg) {
			return sipmsg.Expires(up, c, requested)
		}
	}
	return sipmsg.Expires(up, &sip.ContactHeader{}, requested)
}

// isPushContact tells whether a Contact in the registrar's answer is the
// one this REGISTER's push contact became upstream.
func (s *Server) isPushContact(c *sip.ContactHeader, reg *registration) bool {
	if s.opts.ContactMode {
		id, ok := bindingIDFrom(c.Address)
		return ok && id == reg.id
	}
	prid, _ := param(c, "pn-prid")
	return strings.Trim(prid, `"`) == reg.device.Token && c.Address.User == reg.push.Address.User
}

// restoreDeviceContact shows the device its own Contact in the 200, not
// the one sipwake registered for it.
func restoreDeviceContact(out *sip.Response, reg *registration) {
	contacts, err := sipmsg.Contacts(out)
	if err != nil {
		return
	}
	for out.RemoveHeader("Contact") {
	}
	for _, c := range contacts {
		if id, ok := bindingIDFrom(c.Address); ok && id == reg.id {
			c.Address = *reg.push.Address.Clone()
		}
		out.AppendHeader(c)
	}
}

// pushDisabled erases the bindings a REGISTER without pn-* parameters
// refreshed or removed: push is off for those contacts.
func (s *Server) pushDisabled(ctx context.Context, reg *registration) {
	matches := make([]relay.ContactMatch, 0, len(reg.contacts))
	for _, c := range reg.contacts {
		matches = append(matches, relay.ContactMatch{
			Wildcard: c.Address.Wildcard,
			URI:      relay.StripPushParams(c.Address.String()),
			Instance: instanceOf(c),
		})
	}
	if len(matches) == 0 {
		return
	}
	if _, err := s.relay.PushDisabled(ctx, reg.aor, matches); err != nil {
		s.log.Error("erase on push-off failed", "aor", reg.aor, "error", err)
	}
}

// upstreamPushes tells whether a proxy further up already announced push
// for this provider, in which case sipwake must not push too.
func upstreamPushes(res *sip.Response, provider string) bool {
	for _, h := range res.GetHeaders("Feature-Caps") {
		v := strings.ToLower(h.Value())
		if strings.Contains(v, "+sip.pns=") && strings.Contains(v, `"`+provider+`"`) {
			return true
		}
	}
	return false
}

// featureCaps announces the push services sipwake handles (RFC 8599 §10).
func (s *Server) featureCaps(providers ...string) []sip.Header {
	hdrs := make([]sip.Header, 0, len(providers))
	for _, p := range providers {
		hdrs = append(hdrs, sip.NewHeader("Feature-Caps", fmt.Sprintf(`*;+sip.pns="%s"`, p)))
	}
	return hdrs
}

// isLocal tells whether a URI points at this sipwake.
func (s *Server) isLocal(u sip.Uri) bool {
	host := strings.Trim(u.Host, "[]") // a parsed URI keeps IPv6 brackets
	ours := host == s.opts.PublicHost || (s.opts.PublicHost6 != "" && host == s.opts.PublicHost6)
	if !ours && !s.listensOn(host) {
		return false
	}
	if u.Port == 0 {
		return true
	}
	for _, n := range []string{"udp", "tcp", "tls"} {
		if u.Port == s.publicPort(n) {
			return true
		}
	}
	return false
}

func (s *Server) listensOn(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ip, err := netip.ParseAddr(host)
	for _, a := range s.listeners {
		ap, perr := netip.ParseAddrPort(a.String())
		if err == nil && perr == nil {
			if ap.Addr().Unmap() == ip.Unmap() {
				return true
			}
			continue
		}
		if h, _, err := net.SplitHostPort(a.String()); err == nil && h == host {
			return true
		}
	}
	return false
}

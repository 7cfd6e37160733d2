package sip

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// Trunk is a configured source of calls straight to sipwake.
type Trunk struct {
	Name    string
	Sources []netip.Prefix
	Domain  string
}

// target is what an initial request is for.
type target struct {
	bindings []relay.Binding
}

// errNotOurs: the request names neither a binding nor a trunk user.
var errNotOurs = errors.New("not addressed to a sipwake binding")

// targetOf finds the bindings an initial INVITE or MESSAGE is for, and
// checks that its source may wake them. A non-zero code is the refusal.
func (s *Server) targetOf(ctx context.Context, req *sip.Request) (target, int, string) {
	src := sourceIP(req)
	if id, ok := s.bindingIDOf(req); ok {
		if !s.trusted(src) {
			return target{}, sip.StatusForbidden, "Forbidden: source may not call this binding"
		}
		b, err := s.relay.Binding(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			s.held.drop(id)
			return target{}, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable: no push binding for this device"
		}
		if err != nil {
			if b, ok := s.heldFlow(id); ok {
				s.log.Warn("binding lookup failed; calling the device over the connection it holds to this node", "error", err)
				return target{bindings: []relay.Binding{b}}, 0, ""
			}
			s.log.Error("binding lookup failed", "error", err)
			return target{}, sip.StatusInternalServerError, "Server Internal Error: the binding store cannot be read"
		}
		return target{bindings: []relay.Binding{b}}, 0, ""
	}
	trunk, ok := s.trunkOf(src)
	if !ok || !s.isLocal(req.Recipient) || req.Recipient.User == "" {
		if s.isLocal(req.Recipient) {
			return target{}, sip.StatusForbidden, "Forbidden: not a configured trunk"
		}
		return target{}, sip.StatusNotFound, "Not Found: " + errNotOurs.Error()
	}
	aor := relay.AOR(req.Recipient.User + "@" + trunk.Domain)
	bs, err := s.relay.Bindings(ctx, aor)
	if err != nil {
		s.log.Error("binding lookup failed", "error", err)
		return target{}, sip.StatusInternalServerError, "Server Internal Error"
	}
	if len(bs) == 0 {
		return target{}, sip.StatusNotFound, "Not Found: no device registered for push"
	}
	return target{bindings: bs}, 0, ""
}

// bindingIDOf reads the binding a request was routed to: the user part of
// sipwake's own top Route (Path mode) or of the Request-URI (Contact mode).
func (s *Server) bindingIDOf(req *sip.Request) (store.ID, bool) {
	if rt := req.Route(); rt != nil && s.isLocal(rt.Address) {
		if id, ok := bindingIDFrom(rt.Address); ok {
			return id, true
		}
	}
	if s.isLocal(req.Recipient) {
		return bindingIDFrom(req.Recipient)
	}
	return store.ID{}, false
}

// trusted: the registrar (upstream) and the configured trusted sources and
// trunks may send calls that wake a phone; nobody else.
func (s *Server) trusted(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, p := range s.opts.TrustedSources {
		if p.Contains(ip) {
			return true
		}
	}
	if _, ok := s.trunkOf(ip); ok {
		return true
	}
	return s.upstreamIPs[ip.Unmap()]
}

func (s *Server) trunkOf(ip netip.Addr) (Trunk, bool) {
	for _, t := range s.opts.Trunks {
		for _, p := range t.Sources {
			if p.Contains(ip) {
				return t, true
			}
		}
	}
	return Trunk{}, false
}

func sourceIP(req *sip.Request) netip.Addr {
	host, _, err := net.SplitHostPort(req.Source())
	if err != nil {
		return netip.Addr{}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// subscriberOf is the key a source is rate-limited under: an IPv4 address,
// or an IPv6 address's /64, which a network hands one subscriber (RFC
// 6177) who may hop between its 2^64 addresses at will.
func subscriberOf(ip netip.Addr) netip.Addr {
	if !ip.Is6() || ip.Is4In6() {
		return ip
	}
	return netip.PrefixFrom(ip, 64).Masked().Addr()
}

// resolveUpstream returns the registrar's addresses, which may always send
// calls for bindings it holds.
func resolveUpstream(host string) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	if ip, err := netip.ParseAddr(host); err == nil {
		out[ip.Unmap()] = true
		return out
	}
	addrs, _ := net.LookupHost(host)
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil {
			out[ip.Unmap()] = true
		}
	}
	return out
}

// popOwnRoutes removes the Route entries that point at sipwake from the top
// of a request it forwards (it may have record-routed twice).
func (s *Server) popOwnRoutes(req *sip.Request) {
	for {
		rt := req.Route()
		if rt == nil || !s.isLocal(rt.Address) {
			return
		}
		req.RemoveHeader("Route")
	}
}

// nextHop is where a request goes after sipwake's own routes: the next
// Route, else the Request-URI.
func nextHop(req *sip.Request) (dest, transport string) {
	u := req.Recipient
	if rt := req.Route(); rt != nil {
		u = rt.Address
	}
	transport = "udp"
	if t, ok := u.UriParams.Get("transport"); ok && t != "" {
		transport = strings.ToLower(t)
	}
	port := u.Port
	if port == 0 {
		port = int(sip.DefaultPort(transport))
	}
	// A parsed URI keeps an IPv6 host in its brackets.
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port)), transport
}

// recordRoute is sipwake's Record-Route for one side of a call: the side
// that speaks transport and is reached at peer.
func (s *Server) recordRoute(transport, peer string) *sip.RecordRouteHeader {
	p := sip.NewParams()
	p.Add("transport", strings.ToLower(transport))
	p.Add("lr", "")
	return &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: s.publicHostFor(peer), Port: s.publicPort(strings.ToLower(transport)), UriParams: p}}
}

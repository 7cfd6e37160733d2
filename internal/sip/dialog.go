package sip

import (
	"context"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// proxyInDialog passes a request inside a dialog sipwake record-routed
// (ACK, BYE, re-INVITE, UPDATE, INFO, PRACK, MESSAGE, NOTIFY…) to the next
// hop, and its answer back. A request that does not route through sipwake
// is refused: sipwake is no open proxy.
func (s *Server) proxyInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	rt := req.Route()
	if rt == nil || !s.isLocal(rt.Address) {
		if tx != nil {
			s.reply(req, tx, sip.StatusForbidden, "Forbidden: not routed through sipwake")
		}
		return
	}
	flow, flowTransport := s.flowOf(req)
	fwd := req.Clone()
	s.popOwnRoutes(fwd)
	dest, transport := nextHop(fwd)
	if flow != "" && req.Source() != flow {
		// Toward the device: over the connection it registered on.
		dest, transport = flow, flowTransport
	}
	s.sendFrom(fwd, transport)
	fwd.SetTransport(sip.NetworkToUpper(transport))
	fwd.SetDestination(dest)
	if req.IsAck() {
		if err := s.client.WriteRequest(fwd, forwardOptions...); err != nil {
			s.log.Debug("ACK not forwarded", "error", err)
		}
		return
	}
	tx2, err := s.client.TransactionRequest(ctx, fwd, forwardOptions...)
	if err != nil {
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable: next hop unreachable")
		return
	}
	defer tx2.Terminate()
	for {
		select {
		case res := <-tx2.Responses():
			if res.StatusCode == sip.StatusTrying {
				continue
			}
			s.respond(tx, responseFor(req, res.Clone()))
			if !res.IsProvisional() {
				return
			}
		case <-tx2.Done():
			s.reply(req, tx, sip.StatusRequestTimeout, "Request Timeout: next hop did not answer")
			return
		case <-ctx.Done():
			return
		}
	}
}

// flowParam marks, in sipwake's device-facing Record-Route, the connection
// the device reached sipwake on (its source ip:port).
const flowParam = "sw-flow"

// flowOf reads the device's connection from sipwake's own Route entries.
func (s *Server) flowOf(req *sip.Request) (addr, transport string) {
	for _, h := range req.GetHeaders("Route") {
		rt, ok := h.(*sip.RouteHeader)
		if !ok || !s.isLocal(rt.Address) {
			continue
		}
		if f, ok := rt.Address.UriParams.Get(flowParam); ok && f != "" {
			t, _ := rt.Address.UriParams.Get("transport")
			return f, strings.ToLower(t)
		}
	}
	return "", ""
}

// onAck forwards the ACK of a 2xx along the dialog; the ACK of an error
// ends its own transaction inside sipgo and never reaches here.
func (s *Server) onAck(req *sip.Request, tx sip.ServerTransaction) {
	s.proxyInDialog(context.Background(), req, tx)
}

// onInDialog handles the methods that only ever travel inside a dialog.
func (s *Server) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := txContext(tx)
	defer cancel()
	s.proxyInDialog(ctx, req, tx)
}

// onCancel answers a CANCEL that matched no transaction (sipgo answers the
// ones that do, with 200 and a 487 for the INVITE).
func (s *Server) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist")
}

// relayStray2xx forwards a 2xx retransmission that arrives after its
// client transaction ended (the caller's ACK has not reached the device
// yet), so the caller still sees it: our Via popped, sent to the next one.
func (s *Server) relayStray2xx(res *sip.Response) {
	if !res.IsSuccess() || res.CSeq() == nil || res.CSeq().MethodName != sip.INVITE {
		return
	}
	via := res.Via()
	if via == nil || !s.isLocal(sip.Uri{Host: via.Host, Port: via.Port}) {
		return
	}
	out := res.Clone()
	out.RemoveHeader("Via")
	if out.Via() == nil {
		return
	}
	out.SetDestination("")
	out.SetTransport(out.Via().Transport)
	if err := s.ua.TransportLayer().WriteMsg(out); err != nil {
		s.log.Debug("stray 2xx not relayed", "error", err)
	}
}

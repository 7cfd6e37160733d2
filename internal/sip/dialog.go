package sip

import (
	"context"
	"errors"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// proxyInDialog passes a request inside a dialog sipwake record-routed
// (ACK, BYE, re-INVITE, UPDATE, INFO, PRACK, MESSAGE, NOTIFY…) to the next
// hop, and its answer back. A request that does not route through sipwake
// is refused: sipwake is no open proxy. Which way it goes is RFC 5626
// §5.3's rule: one that came over the flow its token names is the device's
// and follows the route set; any other goes to the device over that flow,
// never to an address the sender named.
func (s *Server) proxyInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) {
	rt := req.Route()
	if rt == nil || !s.isLocal(rt.Address) {
		if tx != nil {
			s.reply(req, tx, sip.StatusForbidden, "Forbidden: not routed through sipwake")
		}
		return
	}
	f, err := s.flowOf(req)
	if err != nil {
		s.log.Info("in-dialog request refused", "method", req.Method, "reason", err)
		if tx != nil && !req.IsAck() {
			s.reply(req, tx, sip.StatusForbidden, "Forbidden: "+err.Error())
		}
		return
	}
	fwd := req.Clone()
	s.popOwnRoutes(fwd)
	dest, transport := nextHop(fwd)
	if f.carries(req) {
		// From the device: what is forwarded shows no more of its
		// address than its own Via and Contact publish.
		hideReceived(fwd)
	} else {
		if !s.flowOpen(f) {
			s.log.Info("in-dialog request for a device whose flow is gone", "method", req.Method)
			if tx != nil && !req.IsAck() {
				s.reply(req, tx, StatusFlowFailed, "Flow Failed")
			}
			return
		}
		dest, transport = f.source, f.transport
	}
	s.sendFrom(fwd, transport)
	fwd.SetTransport(sip.NetworkToUpper(transport))
	fwd.SetDestination(dest)
	if req.IsAck() {
		if err := s.client.WriteRequest(fwd, s.forwardOptions()...); err != nil {
			s.log.Debug("ACK not forwarded", "error", err)
		}
		return
	}
	tx2, err := s.client.TransactionRequest(ctx, fwd, s.forwardOptions()...)
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

// StatusFlowFailed is RFC 5626 §5.3's answer to a request for a flow that
// no longer exists.
const StatusFlowFailed = 430

// errNoFlowToken: none of sipwake's Route entries carries a flow token,
// which every dialog sipwake record-routes has.
var errNoFlowToken = errors.New("no flow token in sipwake's route")

// flowOf opens the flow token in sipwake's own Route entries, for the
// request's dialog (Call-ID).
func (s *Server) flowOf(req *sip.Request) (flow, error) {
	for _, h := range req.GetHeaders("Route") {
		rt, ok := h.(*sip.RouteHeader)
		if !ok || !s.isLocal(rt.Address) {
			continue
		}
		if tok, ok := rt.Address.UriParams.Get(flowParam); ok {
			return s.flows.open(tok, callIDOf(req))
		}
	}
	return flow{}, errNoFlowToken
}

// carries tells whether req came over f: it is the device's own.
func (f flow) carries(req *sip.Request) bool {
	return req.Source() == f.source && strings.EqualFold(req.Transport(), f.transport)
}

// flowOpen tells whether a flow can carry a request without sipwake
// opening a connection: a stream flow's connection is still in the pool.
// (Over UDP there is nothing to open.)
func (s *Server) flowOpen(f flow) bool {
	if !sip.IsReliable(f.transport) {
		return true
	}
	c, err := s.ua.TransportLayer().GetConnection(f.transport, f.source)
	if err != nil || c == nil {
		return false
	}
	// GetConnection took a reference; give it back.
	_, _ = c.TryClose()
	return true
}

// hideReceived drops the received and rport values from the device's Via
// in a request forwarded toward the caller: they hold its public address
// and source port, which its own Via and Contact do not publish. sipwake
// answers the device over the flow it came on, and responses come back to
// sipwake by its own Via, so nothing downstream needs them.
func hideReceived(req *sip.Request) {
	via := req.Via()
	if via == nil {
		return
	}
	via.Params.Remove("received")
	via.Params.Remove("rport")
}

func callIDOf(req *sip.Request) string {
	if id := req.CallID(); id != nil {
		return id.Value()
	}
	return ""
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

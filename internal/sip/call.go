package sip

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
)

// ProgressHeader carries SIPIS-style progress in sipwake's own 180s.
const ProgressHeader = "X-Sipwake-Progress"

// DeliverHeader marks a call one sipwake node hands to the node that holds
// the device's flow: deliver it now, do not push again. Only honoured from
// trusted sources, and never passed on to the device.
const DeliverHeader = "X-Sipwake-Deliver"

// onInvite takes a new call (or passes an in-dialog re-INVITE along).
func (s *Server) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	s.onInitialOrInDialog(req, tx)
}

// onMessage delivers an out-of-dialog MESSAGE like a call (push, hold,
// deliver) and passes in-dialog ones along.
func (s *Server) onMessage(req *sip.Request, tx sip.ServerTransaction) {
	s.onInitialOrInDialog(req, tx)
}

func (s *Server) onInitialOrInDialog(req *sip.Request, tx sip.ServerTransaction) {
	arrived := time.Now()
	ctx, cancel := txContext(tx)
	defer cancel()
	if to := req.To(); to != nil && to.Params.Has("tag") {
		s.proxyInDialog(ctx, req, tx)
		return
	}
	if s.draining.Load() {
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable: sipwake is restarting", sip.NewHeader("Retry-After", "5"))
		return
	}
	s.deliveries.Add(1)
	defer s.deliveries.Done()
	tgt, code, reason := s.targetOf(ctx, req)
	if code != 0 {
		s.reply(req, tx, code, reason)
		return
	}
	if req.IsInvite() {
		s.reply(req, tx, sip.StatusTrying, "Trying")
	}
	d := &delivery{
		s:           s,
		arrived:     arrived,
		req:         req,
		tx:          tx,
		toTag:       sip.GenerateTagN(16),
		provisional: make(chan *sip.Response, 8),
		finals:      make(chan branchFinal, len(tgt.bindings)),
		cancelled:   make(chan string, 1),
	}
	tx.OnCancel(func(c *sip.Request) {
		reason := relay.ReasonMissed
		if answeredElsewhere(c) {
			reason = relay.ReasonAnsweredElsewhere
		}
		d.cancelled <- reason
	})
	d.run(ctx, tgt.bindings)
}

// delivery is one initial request on its way to a user's devices: the
// awake ones at once, the sleeping ones once their push woke them.
type delivery struct {
	s       *Server
	arrived time.Time
	req     *sip.Request
	tx      sip.ServerTransaction
	toTag   string // for sipwake's own 180s

	provisional chan *sip.Response
	finals      chan branchFinal
	// cancelled gets why the caller's CANCEL came: a forking proxy
	// upstream cancels the branches that lost to another device.
	cancelled chan string
	branches  []*branch
	best      *sip.Response
}

type branch struct {
	binding relay.Binding
	req     *sip.Request
	tx      sip.ClientTransaction
}

type branchFinal struct {
	b   *branch
	res *sip.Response // nil: transport failure or timeout
}

func (d *delivery) run(ctx context.Context, bindings []relay.Binding) {
	s := d.s
	metrics := s.relay.Metrics()
	for _, b := range bindings {
		s.relay.Traces().Log(s.log, b.AOR, "request for binding", "device_token", b.Device.Token, "sip", d.req.String())
	}
	var asleep []relay.Binding
	active := 0
	handedOver := d.req.GetHeader(DeliverHeader) != nil
	for _, b := range bindings {
		if !handedOver && !s.liveFlow(b) {
			asleep = append(asleep, b)
			continue
		}
		if d.fork(b) {
			active++
		}
	}
	var (
		awake, failed, pushed <-chan relay.Binding
		wake                  *relay.Wakeup
	)
	pending := len(asleep)
	if pending > 0 {
		wake = s.relay.Wake(ctx, d.call(), asleep, s.opts.CallWait)
		awake, failed, pushed = wake.Awake(), wake.Failed(), wake.Pushed()
		d.progress("push-sent")
	}
	endWake := func(reason string, answered ...relay.Binding) {
		if wake != nil {
			wake.End(reason, answered...)
		}
	}
	timer := time.NewTimer(s.opts.CallWait)
	defer timer.Stop()
	for pending > 0 || active > 0 {
		select {
		case b := <-awake:
			pending--
			d.progress("device-connected")
			if d.fork(b) {
				active++
			}
		case <-failed:
			pending--
		case <-pushed:
			d.progress("push-delivered")
		case res := <-d.provisional:
			if res.StatusCode != sip.StatusTrying {
				s.respond(d.tx, responseFor(d.req, res))
			}
		case f := <-d.finals:
			active--
			if f.res != nil && f.res.IsSuccess() {
				metrics.CallEnded(relay.CallDelivered)
				s.respond(d.tx, responseFor(d.req, f.res))
				d.cancelOthers(f.b)
				endWake(relay.ReasonAnsweredElsewhere, f.b.binding)
				return
			}
			d.keepBest(f.res)
		case <-timer.C:
			metrics.CallEnded(relay.CallTimedOut)
			d.cancelOthers(nil)
			endWake(relay.ReasonMissed)
			s.replyReason(d.req, d.tx, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable",
				fmt.Sprintf("no device answered within %s", s.opts.CallWait))
			return
		case reason := <-d.cancelled:
			// The caller cancelled (sipgo has answered 487): stop at once,
			// not when the transaction winds down.
			metrics.CallEnded(relay.CallCancelled)
			d.cancelOthers(nil)
			endWake(reason)
			return
		case <-ctx.Done():
			metrics.CallEnded(relay.CallCancelled)
			d.cancelOthers(nil)
			endWake(relay.ReasonMissed)
			return
		case <-s.drainCtx.Done():
			metrics.CallEnded(relay.CallFailed)
			d.cancelOthers(nil)
			endWake(relay.ReasonMissed)
			s.reply(d.req, d.tx, sip.StatusServiceUnavailable, "Service Unavailable: sipwake is restarting", sip.NewHeader("Retry-After", "5"))
			return
		}
	}
	endWake(relay.ReasonMissed)
	if d.best != nil {
		metrics.CallEnded(relay.CallRejected)
		s.respond(d.tx, responseFor(d.req, d.best))
		return
	}
	metrics.CallEnded(relay.CallFailed)
	s.replyReason(d.req, d.tx, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable",
		"no device could be woken (push failed)")
}

func (d *delivery) call() relay.Call {
	c := relay.Call{Arrived: d.arrived, ID: d.req.CallID().Value(), Message: d.req.Method == sip.MESSAGE}
	if from := d.req.From(); from != nil {
		c.CallerName = from.DisplayName
		c.CallerNumber = from.Address.User
	}
	return c
}

// progress sends sipwake's own 180 with a SIPIS-style status.
func (d *delivery) progress(status string) {
	if !d.req.IsInvite() || !d.s.opts.Ringing {
		return
	}
	res := sip.NewResponseFromRequest(d.req, sip.StatusRinging, "Ringing", nil)
	if to := res.To(); to != nil {
		to.Params.Add("tag", d.toTag)
	}
	res.AppendHeader(sip.NewHeader(ProgressHeader, status))
	d.s.respond(d.tx, res)
}

// keepBest remembers the final answer to relay if no branch succeeds:
// the lowest class wins (RFC 3261 §16.7 in short), 6xx first.
func (d *delivery) keepBest(res *sip.Response) {
	if res == nil {
		return
	}
	if d.best == nil || res.StatusCode >= 600 || (d.best.StatusCode < 600 && res.StatusCode < d.best.StatusCode) {
		d.best = res
	}
}

// fork sends the request to one device over its flow; false when it could
// not be sent.
func (d *delivery) fork(b relay.Binding) bool {
	s := d.s
	fwd := d.req.Clone()
	s.popOwnRoutes(fwd)
	fwd.RemoveHeader(DeliverHeader)
	var uri sip.Uri
	if err := sip.ParseUri(relay.StripPushParams(b.Contact), &uri); err != nil {
		s.log.Warn("stored contact unusable", "aor", b.AOR, "error", err)
		return false
	}
	fwd.Recipient = uri
	flowTransport, dest := b.Flow.Transport, b.Flow.Source
	if b.Node != "" && b.Node != s.relay.Node() {
		// The device woke through another node: that node holds its flow.
		flowTransport, dest = "udp", b.Node
		s.viaNode(fwd, b)
	}
	s.sendFrom(fwd, flowTransport)
	out := sip.NetworkToUpper(flowTransport)
	fwd.SetTransport(out)
	fwd.SetDestination(dest)
	if d.req.IsInvite() {
		in := d.req.Transport()
		fwd.PrependHeader(s.recordRoute(in))
		if !strings.EqualFold(in, out) {
			rr := s.recordRoute(out)
			if sip.IsReliable(out) {
				// Requests toward the device later in the dialog must use
				// the connection it opened, not a new one to its contact.
				rr.Address.UriParams.Add(flowParam, dest)
			}
			fwd.PrependHeader(rr)
		}
	}
	tx, err := s.client.TransactionRequest(context.Background(), fwd, sipgo.ClientRequestDecreaseMaxForward, sipgo.ClientRequestAddVia)
	if err != nil {
		s.log.Warn("forward to device failed", "aor", b.AOR, "error", err)
		return false
	}
	br := &branch{binding: b, req: fwd, tx: tx}
	d.branches = append(d.branches, br)
	go func() {
		defer tx.Terminate()
		for {
			select {
			case res := <-tx.Responses():
				if res.IsProvisional() {
					select {
					case d.provisional <- res:
					default: // a slow caller side never blocks the branch
					}
					continue
				}
				d.finals <- branchFinal{b: br, res: res}
				return
			case <-tx.Done():
				d.finals <- branchFinal{b: br}
				return
			}
		}
	}()
	return true
}

// viaNode routes a forwarded request through the node that holds the
// device's flow: a Route naming the binding at that node, and the mark
// that tells it to deliver without pushing.
func (s *Server) viaNode(fwd *sip.Request, b relay.Binding) {
	host, port, err := net.SplitHostPort(b.Node)
	if err != nil {
		return
	}
	p, _ := strconv.Atoi(port)
	u := sip.Uri{Scheme: "sip", User: bindingUserPrefix + s.relay.RecordID(b).String(), Host: host, Port: p, UriParams: sip.NewParams()}
	u.UriParams.Add("transport", "udp")
	u.UriParams.Add("lr", "")
	fwd.PrependHeader(&sip.RouteHeader{Address: u})
	fwd.AppendHeader(sip.NewHeader(DeliverHeader, "flow"))
}

// cancelOthers sends CANCEL to every forked branch but the winner.
func (d *delivery) cancelOthers(winner *branch) {
	if !d.req.IsInvite() {
		return
	}
	for _, br := range d.branches {
		if br == winner {
			continue
		}
		d.s.cancelBranch(br.req)
	}
}

// cancelBranch cancels a forwarded INVITE (RFC 3261 §9.1): same
// Request-URI, top Via, Call-ID, From, To and CSeq number.
func (s *Server) cancelBranch(inv *sip.Request) {
	c := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	if via := inv.Via(); via != nil {
		c.AppendHeader(via.Clone())
	}
	for _, name := range []string{"Route", "From", "To", "Call-ID"} {
		for _, h := range inv.GetHeaders(name) {
			c.AppendHeader(sip.HeaderClone(h))
		}
	}
	c.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	maxFwd := sip.MaxForwardsHeader(70)
	c.AppendHeader(&maxFwd)
	c.SetBody(nil)
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	c.Laddr = inv.Laddr
	keep := func(*sipgo.Client, *sip.Request) error { return nil }
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
		defer cancel()
		if _, err := s.client.Do(ctx, c, keep); err != nil {
			s.log.Debug("CANCEL to device got no answer", "error", err)
		}
	}()
}

// answeredElsewhere reads a CANCEL's Reason (RFC 3326): cause 200 means
// another branch took the call ("Call completed elsewhere").
func answeredElsewhere(cancel *sip.Request) bool {
	for _, h := range cancel.GetHeaders("Reason") {
		if strings.Contains(strings.ReplaceAll(strings.ToLower(h.Value()), " ", ""), "cause=200") {
			return true
		}
	}
	return false
}

// liveFlow tells whether a device is reachable now: a TCP/TLS connection
// it registered over is still open. UDP devices are always woken by push.
func (s *Server) liveFlow(b relay.Binding) bool {
	switch b.Flow.Transport {
	case "tcp", "tls", "ws", "wss":
		c, err := s.ua.TransportLayer().GetConnection(b.Flow.Transport, b.Flow.Source)
		return err == nil && c != nil
	}
	return false
}

// replyReason answers with a Reason header a person can read.
func (s *Server) replyReason(req *sip.Request, tx sip.ServerTransaction, code int, phrase, text string) {
	s.reply(req, tx, code, phrase, sip.NewHeader("Reason", fmt.Sprintf(`SIP;cause=%d;text="%s"`, code, text)))
}

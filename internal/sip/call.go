package sip

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// ProgressHeader carries SIPIS-style progress in sipwake's own 180s.
const ProgressHeader = "X-Sipwake-Progress"

// DeliverHeader marks a call one sipwake node hands to the node that holds
// the device's flow: deliver it now, do not push again. Only honoured from
// trusted sources, and never passed on to the device.
const DeliverHeader = "X-Sipwake-Deliver"

// onInitialOrInDialog takes a new call or out-of-dialog MESSAGE (push,
// hold, deliver) and passes in-dialog ones along. A call that waits for a
// sleeping device is kept: it returns at once, and the delivery ends the
// transaction when it is settled.
func (s *Server) onInitialOrInDialog(req *sip.Request, tx keptTx) bool {
	arrived := time.Now()
	ctx, cancel := txContext(tx)
	if to := req.To(); to != nil && to.Params.Has("tag") {
		defer cancel()
		s.proxyInDialog(ctx, req, tx)
		return false
	}
	if s.draining.Load() {
		cancel()
		s.reply(req, tx, sip.StatusServiceUnavailable, "Service Unavailable: sipwake is restarting", sip.NewHeader("Retry-After", "5"))
		return false
	}
	tgt, code, reason := s.targetOf(ctx, req)
	if code != 0 {
		cancel()
		s.reply(req, tx, code, reason)
		return false
	}
	if req.IsInvite() {
		s.reply(req, tx, sip.StatusTrying, "Trying")
	}
	d := &delivery{
		s:       s,
		arrived: arrived,
		req:     req,
		tx:      tx,
		toTag:   sip.GenerateTagN(16),
		stopCtx: cancel,
	}
	s.deliveries.Add(1)
	d.start(ctx, tgt.bindings)
	return true
}

// delivery is one initial request on its way to a user's devices: the
// awake ones at once, the sleeping ones once their push woke them. It is a
// state machine driven by what happens to it (a device wakes, a branch
// answers, the caller cancels, the wait runs out), each event under mu;
// no goroutine waits for it while it is parked.
type delivery struct {
	s       *Server
	arrived time.Time
	req     *sip.Request
	tx      keptTx
	toTag   string // for sipwake's own 180s
	stopCtx context.CancelFunc

	mu     sync.Mutex
	active int // branches without a final answer
	// ends stop the waits for the devices pushed (relay.Wake).
	ends     []relay.EndWait
	branches []*branch
	// pushed are the devices pushed and not yet awake, failed or
	// answering: the ones the call still waits for.
	pushed map[store.ID]bool
	// reason is why the call ended (once settled): missed, or answered
	// elsewhere.
	reason  string
	best    *sip.Response
	timer   *time.Timer
	unwatch []func() bool
	settled bool
}

type branch struct {
	binding relay.Binding
	req     *sip.Request
	tx      sip.ClientTransaction
	// heard: the device answered on this branch (any response): it is
	// awake, and a push for it is not needed.
	heard bool
}

// start forks to the devices with a live flow, pushes the others and arms
// the wait; ctx ends with the server transaction. A device with a live flow
// is pushed too when it does not answer over it in time (RFC 8599 leaves a
// suspended app its socket, not its voice): at once with pn-timeout=0, as
// Linphone asks, else after its pn-timeout or sipwake's awake_push_delay.
func (d *delivery) start(ctx context.Context, bindings []relay.Binding) {
	s := d.s
	d.mu.Lock()
	defer d.mu.Unlock()
	// What ends the call is watched before anything is sent: a CANCEL that
	// comes as soon as the devices are pushed must find its handler (else
	// sipgo answers 487 and the call stays parked until the transaction
	// winds down). The handlers wait for mu, so they act once start is done.
	d.timer = time.AfterFunc(s.opts.CallWait, d.waitOver)
	d.unwatch = []func() bool{
		// The caller's side went away (transaction terminated).
		context.AfterFunc(ctx, func() { d.end(callCancelled, relay.ReasonMissed, nil, nil) }),
		context.AfterFunc(s.drainCtx, d.drained),
	}
	d.tx.OnCancel(func(c *sip.Request) {
		// sipgo answers 487 once this returns; stop at once, not when the
		// transaction winds down. sipgo calls this holding the
		// transaction's lock, and an end already under mu may be
		// answering on the transaction: ending here would wait for mu
		// while it waits for the lock. So the end runs on its own.
		reason := relay.ReasonMissed
		if answeredElsewhere(c) {
			reason = relay.ReasonAnsweredElsewhere
		}
		go d.end(callCancelled, reason, nil, nil)
	})
	for _, b := range bindings {
		s.relay.Traces().Log(s.log, b.AOR, "request for binding", "device_token", b.Device.Token, "sip", d.req)
	}
	var asleep []relay.Binding
	d.pushed = map[store.ID]bool{}
	handedOver := d.req.GetHeader(DeliverHeader) != nil
	for _, b := range bindings {
		if !handedOver && !s.liveFlow(b) {
			asleep = append(asleep, b)
			continue
		}
		if !d.fork(b) {
			continue
		}
		d.active++
		if handedOver {
			continue // the node that sent it pushed already
		}
		switch delay := d.awakePushDelay(b); {
		case delay == 0:
			asleep = append(asleep, b)
		default:
			time.AfterFunc(delay, func() { d.pushUnheard(ctx, b) })
		}
	}
	d.push(ctx, asleep)
	d.settleLocked()
}

// awakePushDelay is how long a device with a live flow has to answer
// before it is pushed as well.
func (d *delivery) awakePushDelay(b relay.Binding) time.Duration {
	if delay, ok := b.PushDelay(); ok {
		return delay
	}
	return d.s.opts.AwakePushDelay
}

// push wakes devices; each is pending until it is awake, failed, or
// answers on a branch it already has.
func (d *delivery) push(ctx context.Context, devices []relay.Binding) {
	if len(devices) == 0 {
		return
	}
	for _, b := range devices {
		d.pushed[d.s.relay.BindingID(b.AOR, b.Device)] = true
	}
	left := d.s.opts.CallWait - time.Since(d.arrived)
	d.ends = append(d.ends, d.s.relay.Wake(ctx, d.call(), devices, left, relay.WakeEvents{
		Awake:  d.deviceAwake,
		Pushed: d.pushDelivered,
		Failed: d.pushFailed,
		Rang:   d.rang,
	}))
	d.progress("push-sent")
}

// pushUnheard pushes a device that has not answered over its live flow.
func (d *delivery) pushUnheard(ctx context.Context, b relay.Binding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled || d.heard(b) {
		return
	}
	d.push(ctx, []relay.Binding{b})
}

// heard tells whether the device answered on a branch of this call.
func (d *delivery) heard(b relay.Binding) bool {
	for _, br := range d.branches {
		if br.heard && d.s.relay.Same(br.binding, b) {
			return true
		}
	}
	return false
}

// unpend reports a pushed device as no longer pending: it woke, failed,
// or answered on its live flow. b may be the binding the device replaced
// the pushed one with. False when it was not pending.
func (d *delivery) unpend(b relay.Binding) bool {
	for _, id := range d.s.relay.BindingIDs(b) {
		if d.pushed[id] {
			delete(d.pushed, id)
			return true
		}
	}
	return false
}

func (d *delivery) deviceAwake(b relay.Binding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled || !d.unpend(b) {
		return
	}
	d.progress("device-connected")
	// A device already answering on its live flow needs no second
	// INVITE: it was pushed while awake and refreshed anyway.
	if !d.heard(b) && d.fork(b) {
		d.active++
	}
	d.settleLocked()
}

// rang ends the call on a phone its VoIP push made ring, which woke after
// the call had ended.
func (d *delivery) rang(b relay.Binding) {
	if d.req.IsInvite() {
		d.mu.Lock()
		reason := d.reason
		d.mu.Unlock()
		d.s.endRinging(d.req, b, reason)
	}
}

func (d *delivery) pushDelivered() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.settled {
		d.progress("push-delivered")
	}
}

func (d *delivery) pushFailed(b relay.Binding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled || !d.unpend(b) {
		return
	}
	d.settleLocked()
}

// provisional relays a device's 1xx (other than 100) to the caller.
func (d *delivery) provisional(br *branch, res *sip.Response) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hear(br)
	if !d.settled && res.StatusCode != sip.StatusTrying {
		d.s.respond(d.tx, responseFor(d.req, res.Clone()))
	}
}

// final takes a branch's final answer; res is nil when the branch failed
// (transport error or timeout). The first 2xx wins the call.
func (d *delivery) final(br *branch, res *sip.Response) {
	if res != nil && res.IsSuccess() {
		d.end(callDelivered, relay.ReasonAnsweredElsewhere, br, res)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if res != nil {
		d.hear(br)
	}
	if d.settled {
		return
	}
	d.active--
	d.keepBest(res)
	d.settleLocked()
}

// hear marks a branch as answered by its device: awake, so a push it is
// still pending on is not waited for.
func (d *delivery) hear(br *branch) {
	if br.heard {
		return
	}
	br.heard = true
	if !d.settled {
		d.unpend(br.binding)
	}
}

func (d *delivery) waitOver() {
	d.end(callTimedOut, relay.ReasonMissed, nil, nil)
}

func (d *delivery) drained() {
	d.end(callFailed, relay.ReasonMissed, nil, nil)
}

// settleLocked ends the delivery once no device is left to wait for: with
// the best final answer a branch gave, or 480.
func (d *delivery) settleLocked() {
	if d.settled || len(d.pushed) > 0 || d.active > 0 {
		return
	}
	outcome := callFailed
	if d.best != nil {
		outcome = callRejected
	}
	d.finishLocked(outcome, relay.ReasonMissed, nil, nil)
}

// end settles the delivery (once) with outcome; winner and res are the
// branch that answered and its 2xx, when one did.
func (d *delivery) end(outcome string, reason string, winner *branch, res *sip.Response) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.settled {
		d.finishLocked(outcome, reason, winner, res)
	}
}

// finishLocked answers the caller as the outcome says, cancels the other
// branches, ends the wait for devices (follow-up pushes) and lets the
// server transaction go.
func (d *delivery) finishLocked(outcome string, reason string, winner *branch, res *sip.Response) {
	s := d.s
	d.settled = true
	d.reason = reason
	d.timer.Stop()
	for _, stop := range d.unwatch {
		stop()
	}
	s.metrics.callEnded(outcome)
	switch outcome {
	case callDelivered:
		s.respond(d.tx, responseFor(d.req, res.Clone()))
	case callTimedOut:
		s.replyReason(d.req, d.tx, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable",
			fmt.Sprintf("no device answered within %s", s.opts.CallWait))
	case callRejected:
		s.respond(d.tx, responseFor(d.req, d.best.Clone()))
	case callFailed:
		if d.draining() {
			s.reply(d.req, d.tx, sip.StatusServiceUnavailable, "Service Unavailable: sipwake is restarting", sip.NewHeader("Retry-After", "5"))
		} else {
			s.replyReason(d.req, d.tx, sip.StatusTemporarilyUnavailable, "Temporarily Unavailable",
				"no device could be woken (push failed)")
		}
	}
	d.cancelOthers(winner)
	var answered []relay.Binding
	if winner != nil {
		answered = append(answered, winner.binding)
	}
	ends := d.ends
	go func() {
		// Ending a wait waits for pushes still in flight, which may be
		// what called us: never under mu, never on their goroutine.
		for _, end := range ends {
			end(reason, answered...)
		}
		d.stopCtx()
		d.tx.TerminateGracefully()
		s.deliveries.Done()
	}()
}

// draining: the delivery is being ended by a drain that ran out of time.
func (d *delivery) draining() bool { return d.s.drainCtx.Err() != nil }

func (d *delivery) call() relay.Call {
	c := relay.Call{Arrived: d.arrived, ID: d.req.CallID().Value(), Message: d.req.Method == sip.MESSAGE}
	if from := d.req.From(); from != nil {
		c.CallerName = from.DisplayName
		c.CallerNumber = from.Address.User
		uri := sip.Uri{Scheme: from.Address.Scheme, User: from.Address.User, Host: from.Address.Host}
		c.CallerURI = uri.String()
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
	fwd, tx, ok := d.s.forward(d.req, b)
	if !ok {
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
					d.provisional(br, res)
					continue
				}
				d.final(br, res)
				return
			case <-tx.Done():
				d.final(br, nil)
				return
			}
		}
	}()
	return true
}

// forward sends req to one device over its flow (or through the node that
// holds it) in a client transaction; false when it could not be sent.
func (s *Server) forward(req *sip.Request, b relay.Binding) (*sip.Request, sip.ClientTransaction, bool) {
	fwd := req.Clone()
	s.popOwnRoutes(fwd)
	fwd.RemoveHeader(DeliverHeader)
	var uri sip.Uri
	if err := sip.ParseUri(relay.StripPushParams(b.Contact), &uri); err != nil {
		s.log.Warn("stored contact unusable", "aor", b.AOR, "error", err)
		return nil, nil, false
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
	if req.IsInvite() {
		// Requests toward the device later in the dialog must use the
		// flow it came on, not its contact nor any address a caller
		// names: the device-facing Record-Route carries the flow, sealed
		// for this dialog, since the caller sees it too.
		// Two Record-Routes when the sides differ in transport or in
		// address family, so that each reaches sipwake its own way.
		in := req.Transport()
		if !strings.EqualFold(in, out) || s.publicHostFor(req.Source()) != s.publicHostFor(dest) {
			fwd.PrependHeader(s.recordRoute(in, req.Source()))
		}
		rr := s.recordRoute(out, dest)
		rr.Address.UriParams.Add(flowParam, s.flows.seal(flow{transport: strings.ToLower(flowTransport), source: dest}, callIDOf(req)))
		fwd.PrependHeader(rr)
	}
	tx, err := s.client.TransactionRequest(context.Background(), fwd, s.forwardOptions()...)
	if err != nil {
		s.log.Warn("forward to device failed", "aor", b.AOR, "error", err)
		return nil, nil, false
	}
	return fwd, tx, true
}

// endRinging ends the call on a phone that a VoIP push made ring and that
// connected only after the call had ended, as Flexisip does for iPhones:
// the phone gets the call's INVITE, which its app matches by Call-ID to the
// CallKit call the push opened, and at its first answer the CANCEL, with
// why (missed, or answered elsewhere), which ends that call on the phone.
func (s *Server) endRinging(inv *sip.Request, b relay.Binding, reason string) {
	fwd, tx, ok := s.forward(inv, b)
	if !ok {
		return
	}
	s.log.Info("ending the call a push made ring on a phone that woke after it", "aor", b.AOR, "reason", reason)
	go func() {
		defer tx.Terminate()
		cancelled := false
		for {
			select {
			case res := <-tx.Responses():
				if res.IsProvisional() {
					if !cancelled {
						s.cancelBranch(fwd, reason)
						cancelled = true
					}
					continue
				}
				if res.IsSuccess() {
					// It answered before the CANCEL reached it; with no
					// caller to ACK, the phone ends it at its own timeout.
					s.log.Warn("a phone answered a call that had ended", "aor", b.AOR)
				}
				return
			case <-tx.Done():
				return
			}
		}
	}()
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
	u := sip.Uri{Scheme: "sip", User: sipmsg.BindingUserPrefix + s.relay.RecordID(b).String(), Host: host, Port: p, UriParams: sip.NewParams()}
	u.UriParams.Add("transport", "udp")
	u.UriParams.Add("lr", "")
	fwd.PrependHeader(&sip.RouteHeader{Address: u})
	fwd.AppendHeader(sip.NewHeader(DeliverHeader, "flow"))
}

// cancelOthers sends CANCEL to every forked branch but the winner, saying
// why the call ended (finishLocked set d.reason).
func (d *delivery) cancelOthers(winner *branch) {
	if !d.req.IsInvite() {
		return
	}
	for _, br := range d.branches {
		if br != winner {
			d.s.cancelBranch(br.req, d.reason)
		}
	}
}

// cancelBranch cancels a forwarded INVITE (RFC 3261 §9.1): same
// Request-URI, top Via, Call-ID, From, To and CSeq number; a call answered
// elsewhere says so in a Reason (RFC 3326), which phones show.
func (s *Server) cancelBranch(inv *sip.Request, reason string) {
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
	if reason == relay.ReasonAnsweredElsewhere {
		c.AppendHeader(sip.NewHeader("Reason", `SIP;cause=200;text="Call completed elsewhere"`))
	}
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
		return s.flowOpen(flow{transport: b.Flow.Transport, source: b.Flow.Source})
	}
	return false
}

// replyReason answers with a Reason header a person can read.
func (s *Server) replyReason(req *sip.Request, tx sip.ServerTransaction, code int, phrase, text string) {
	s.reply(req, tx, code, phrase, sip.NewHeader("Reason", fmt.Sprintf(`SIP;cause=%d;text="%s"`, code, text)))
}

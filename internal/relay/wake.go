package relay

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/sipwake/sipwake/internal/push/pn"
	"github.com/sipwake/sipwake/internal/store"
)

// Pusher sends one push; push.Dispatcher satisfies it.
type Pusher interface {
	Send(ctx context.Context, t pn.Target, m pn.Message) pn.Result
}

// Call is what the relay knows of an incoming request that needs a
// sleeping device: enough for CallKit, nothing of SIP.
type Call struct {
	// Arrived is when the request reached sipwake (push latency is
	// measured from it).
	Arrived      time.Time
	ID           string // the caller's Call-ID: the app matches its call with it
	CallerName   string
	CallerNumber string
	// CallerURI is the caller's address, as the app shows it.
	CallerURI string
	// Message is true for an out-of-dialog MESSAGE: the device gets an
	// alert on its remote-notification token, never a VoIP push (iOS
	// forbids VoIP pushes that do not report a call).
	Message bool
}

// Cancel reasons carried by the follow-up push.
const (
	ReasonMissed            = "missed"
	ReasonAnsweredElsewhere = "answered-elsewhere"
)

// WakeEvents is what a parked call hears of its sleeping devices. The relay
// calls them from its own goroutines (a push's, a REGISTER's, the cluster
// bus'), so they must return quickly; a parked call needs no goroutine of
// its own to hear them.
type WakeEvents struct {
	// Awake gets each device once, after its binding refresh succeeded
	// upstream: the call goes to it now.
	Awake func(Binding)
	// Pushed ticks once per device whose push the push service accepted.
	Pushed func()
	// Failed gets each device whose push failed for good (dead token,
	// capped, no token for the push, push service refused or unreachable
	// past the wait).
	Failed func(Binding)
	// Rang gets, once the call ended unanswered by it, each device that a
	// VoIP push made ring (CallKit) and that connects within the call's
	// wait all the same: its app waits for the INVITE the push announced,
	// and ends the call on the phone at that INVITE's CANCEL (what
	// Flexisip does for iPhones). Nil: no such wait.
	Rang func(Binding)
}

// EndWait stops a call's wait for its devices: pending pushes are
// dropped, and devices that were pushed but never answered get a cancel
// push with reason (missed, or answered elsewhere), so their phones stop
// ringing. answered are the devices that took the call. Calling it again
// does nothing.
type EndWait func(reason string, answered ...Binding)

// wakeup is one call's wait for its sleeping devices; its events go to
// the WakeEvents given to Wake.
type wakeup struct {
	svc       *Service
	call      Call
	ids       []store.ID
	on        WakeEvents
	cancel    context.CancelFunc
	pushes    sync.WaitGroup
	mu        sync.Mutex
	delivered []Binding // devices whose call push was accepted
	rang      []Binding // of those, the ones whose push was a VoIP push
	until     time.Time // the end of the call's wait
	done      bool
}

// Wake pushes every sleeping device of a call and starts waiting for them;
// what becomes of them goes to on. The pushes run within ctx (the caller's
// wait); the EndWait it returns stops them and the wait. wait is how long
// a call push is worth delivering.
func (s *Service) Wake(ctx context.Context, c Call, devices []Binding, wait time.Duration, on WakeEvents) EndWait {
	pctx, cancel := context.WithTimeout(ctx, wait)
	w := &wakeup{svc: s, call: c, on: on, cancel: cancel, until: time.Now().Add(wait)}
	s.metrics.Parked(1)
	s.await(w, devices)

	kind := pn.KindCall
	if c.Message {
		kind = pn.KindMessage
	}
	msg := pn.Message{Kind: kind, CallID: c.ID, CallerName: c.CallerName, CallerNumber: c.CallerNumber,
		CallerURI: c.CallerURI, Expiration: wait}
	for _, b := range devices {
		w.pushes.Add(1)
		go func() {
			defer w.pushes.Done()
			s.pushTo(pctx, w, b, msg)
		}()
	}
	return w.end
}

func (s *Service) pushTo(ctx context.Context, w *wakeup, b Binding, msg pn.Message) {
	if s.pusher == nil {
		w.on.Failed(b)
		return
	}
	if !s.pushCaps.Allow(s.BindingID(b.AOR, b.Device)) {
		s.metrics.pushCapped.Inc()
		s.log.Warn("call push to this device capped: too many calls per minute", "aor", b.AOR, "device", b.Device)
		w.on.Failed(b)
		return
	}
	start := s.now()
	res := s.pusher.Send(ctx, b.target(), msg)
	s.log.Info("call push", "aor", b.AOR, "device", b.Device, "outcome", res.Outcome, "reason", res.Reason,
		"attempts", res.Attempts, "took", s.now().Sub(start))
	if res.EraseRecord {
		if err := s.Erase(context.WithoutCancel(ctx), b.AOR, b.Device, ErasedTokenDead); err != nil {
			s.log.Error("erase after dead token failed", "aor", b.AOR, "error", err)
		}
	}
	if res.Outcome == pn.Delivered {
		if msg.Kind == pn.KindCall && !w.call.Arrived.IsZero() {
			s.metrics.PushLatency(s.now().Sub(w.call.Arrived))
		}
		w.mu.Lock()
		w.delivered = append(w.delivered, b)
		if res.Service == pn.ServiceVoIP {
			w.rang = append(w.rang, b)
		}
		w.mu.Unlock()
		w.on.Pushed()
		return
	}
	w.on.Failed(b)
}

// Refreshed tells the waiting calls that a device's binding refresh
// succeeded: each waiting call gets the device once, and stops waiting for
// it, so a second REGISTER does not fork the call twice. Calls parked on
// the bindings it replaced get it too: the phone came back with new tokens.
func (s *Service) Refreshed(b Binding) {
	own := s.BindingID(b.AOR, b.Device) // one keyed hash, not one per use
	record := s.recordID(b, own)
	for _, id := range append([]store.ID{own}, b.Replaced...) {
		s.release(id, own, b)
		s.publish(Refresh{Waiter: id, Record: record})
	}
}

// release hands the device to every call parked for it under id, once.
// A call parked on a binding the device has since replaced gets it with
// that binding's id in Replaced, so it knows the device it waited for.
func (s *Service) release(id, own store.ID, b Binding) {
	s.waitMu.Lock()
	ws := s.waiters[id]
	delete(s.waiters, id)
	s.waitMu.Unlock()
	if len(ws) > 0 && id != own && !slices.Contains(b.Replaced, id) {
		b.Replaced = append(slices.Clone(b.Replaced), id)
	}
	for w := range ws {
		w.on.Awake(b) // each device once: its waiters are gone now
	}
}

// BindingIDs are the ids b stands for: its own, and those of the bindings
// it replaced.
func (s *Service) BindingIDs(b Binding) []store.ID {
	return append([]store.ID{s.BindingID(b.AOR, b.Device)}, b.Replaced...)
}

// await files w as waiting for each of devices.
func (s *Service) await(w *wakeup, devices []Binding) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	for _, b := range devices {
		id := s.BindingID(b.AOR, b.Device)
		w.ids = append(w.ids, id)
		if s.waiters[id] == nil {
			s.waiters[id] = map[*wakeup]struct{}{}
		}
		s.waiters[id][w] = struct{}{}
	}
}

// unwait takes w off every device it waits for, and returns those it
// still waited for (the others connected: release took w off them).
func (s *Service) unwait(w *wakeup) map[store.ID]bool {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	waiting := map[store.ID]bool{}
	for _, id := range w.ids {
		if _, ok := s.waiters[id][w]; ok {
			waiting[id] = true
		}
		delete(s.waiters[id], w)
		if len(s.waiters[id]) == 0 {
			delete(s.waiters, id)
		}
	}
	return waiting
}

// Same tells whether a and b are one device's bindings: the same, or one
// replaced the other (the phone came back with new tokens).
func (s *Service) Same(a, b Binding) bool {
	ida, idb := s.BindingID(a.AOR, a.Device), s.BindingID(b.AOR, b.Device)
	return ida == idb || slices.Contains(a.Replaced, idb) || slices.Contains(b.Replaced, ida)
}

// end is the wait's EndWait.
func (w *wakeup) end(reason string, answered ...Binding) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.done = true
	w.mu.Unlock()
	w.svc.metrics.Parked(-1)

	w.cancel()
	waiting := w.svc.unwait(w)
	w.pushes.Wait()
	if w.call.Message {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	isAnswered := func(b Binding) bool {
		return slices.ContainsFunc(answered, func(a Binding) bool { return w.svc.Same(a, b) })
	}
	for _, b := range w.delivered {
		if !isAnswered(b) {
			w.svc.followUp(b, w.cancelMessage(reason))
		}
	}
	var ringing []Binding
	for _, b := range w.rang {
		if !isAnswered(b) && waiting[w.svc.BindingID(b.AOR, b.Device)] {
			ringing = append(ringing, b)
		}
	}
	w.svc.linger(ringing, w.until, w.on.Rang)
}

// cancelMessage is the follow-up push for a call that ended: who called
// (a missed-call alert shows it), and how long it is worth delivering — a
// missed call for an hour, "stop ringing" only while a phone could ring.
func (w *wakeup) cancelMessage(reason string) pn.Message {
	exp := time.Hour
	if reason == ReasonAnsweredElsewhere {
		exp = time.Minute
	}
	c := w.call
	return pn.Message{Kind: pn.KindCancel, CallID: c.ID, CallerName: c.CallerName, CallerNumber: c.CallerNumber,
		CallerURI: c.CallerURI, Reason: reason, Expiration: exp}
}

// linger waits, until the call's wait would have ended, for devices a VoIP
// push made ring after their call ended: each that connects goes to fn,
// once.
func (s *Service) linger(devices []Binding, until time.Time, fn func(Binding)) {
	left := time.Until(until)
	if len(devices) == 0 || fn == nil || left <= 0 {
		return
	}
	w := &wakeup{svc: s, on: WakeEvents{Awake: fn}}
	s.await(w, devices)
	time.AfterFunc(left, func() { s.unwait(w) })
}

// followUp sends a cancel push in the background: the call is over, and
// nobody waits for it.
func (s *Service) followUp(b Binding, m pn.Message) {
	s.pushes.Add(1)
	go func() {
		defer s.pushes.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.FollowUpTimeout)
		defer cancel()
		res := s.pusher.Send(ctx, b.target(), m)
		s.log.Info("cancel push", "aor", b.AOR, "device", b.Device, "reason", m.Reason, "outcome", res.Outcome)
	}()
}

// Drain waits for background pushes to finish (shutdown).
func (s *Service) Drain() { s.pushes.Wait() }

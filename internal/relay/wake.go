package relay

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/store"
)

// Pusher sends one push; push.Dispatcher satisfies it.
type Pusher interface {
	Send(ctx context.Context, t push.Target, m push.Message) push.Result
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
	// Message is true for an out-of-dialog MESSAGE: the device gets a
	// background wake-up, never a VoIP push (iOS forbids VoIP pushes that do
	// not report a call).
	Message bool
}

// Cancel reasons carried by the follow-up push.
const (
	ReasonMissed            = "missed"
	ReasonAnsweredElsewhere = "answered-elsewhere"
)

// Wakeup is one call's wait for its sleeping devices. Awake delivers each
// device once, after its binding refresh succeeded upstream; Failed
// delivers the devices whose push could not be delivered.
type Wakeup struct {
	svc       *Service
	call      Call
	ids       []store.ID
	awake     chan Binding
	failed    chan Binding
	pushed    chan Binding
	cancel    context.CancelFunc
	pushes    sync.WaitGroup
	mu        sync.Mutex
	delivered []Binding // devices whose call push was accepted
	done      bool
}

// Awake yields devices whose binding refresh (the registrar's 2xx)
// arrived, exactly once each.
func (w *Wakeup) Awake() <-chan Binding { return w.awake }

// Failed yields devices whose push failed for good (dead token, push
// service refused or unreachable past the call's wait).
func (w *Wakeup) Failed() <-chan Binding { return w.failed }

// Pushed yields devices whose push the push service accepted.
func (w *Wakeup) Pushed() <-chan Binding { return w.pushed }

// Wake pushes every sleeping device of a call and starts waiting for them.
// The pushes run within ctx (the caller's wait); End stops them and the
// wait. wait is how long a call push is worth delivering.
func (s *Service) Wake(ctx context.Context, c Call, devices []Binding, wait time.Duration) *Wakeup {
	pctx, cancel := context.WithTimeout(ctx, wait)
	w := &Wakeup{
		svc:    s,
		call:   c,
		awake:  make(chan Binding, len(devices)),
		failed: make(chan Binding, len(devices)),
		pushed: make(chan Binding, len(devices)),
		cancel: cancel,
	}
	s.metrics.Parked(1)
	s.waitMu.Lock()
	for _, b := range devices {
		id := s.BindingID(b.AOR, b.Device)
		w.ids = append(w.ids, id)
		if s.waiters[id] == nil {
			s.waiters[id] = map[*Wakeup]struct{}{}
		}
		s.waiters[id][w] = struct{}{}
	}
	s.waitMu.Unlock()

	kind := push.KindCall
	if c.Message {
		kind = push.KindRegister
	}
	msg := push.Message{Kind: kind, CallID: c.ID, CallerName: c.CallerName, CallerNumber: c.CallerNumber, Expiration: wait}
	for _, b := range devices {
		w.pushes.Add(1)
		go func() {
			defer w.pushes.Done()
			s.pushTo(pctx, w, b, msg)
		}()
	}
	return w
}

func (s *Service) pushTo(ctx context.Context, w *Wakeup, b Binding, msg push.Message) {
	if s.pusher == nil {
		w.failed <- b
		return
	}
	if !s.pushCaps.Allow(s.BindingID(b.AOR, b.Device)) {
		s.metrics.pushCapped.Inc()
		s.log.Warn("call push to this device capped: too many calls per minute", "aor", b.AOR, "device", b.Device)
		w.failed <- b
		return
	}
	start := s.now()
	res := s.pusher.Send(ctx, b.Device.target(), msg)
	s.log.Info("call push", "aor", b.AOR, "device", b.Device, "outcome", res.Outcome, "reason", res.Reason,
		"attempts", res.Attempts, "took", s.now().Sub(start))
	if res.EraseRecord {
		if err := s.Erase(context.WithoutCancel(ctx), b.AOR, b.Device, ErasedTokenDead); err != nil {
			s.log.Error("erase after dead token failed", "aor", b.AOR, "error", err)
		}
	}
	if res.Outcome == push.Delivered {
		if msg.Kind == push.KindCall && !w.call.Arrived.IsZero() {
			s.metrics.PushLatency(s.now().Sub(w.call.Arrived))
		}
		w.mu.Lock()
		w.delivered = append(w.delivered, b)
		w.mu.Unlock()
		w.pushed <- b
		return
	}
	w.failed <- b
}

// Refreshed tells the waiting calls that a device's binding refresh
// succeeded: each waiting call gets the device once, and stops waiting for
// it, so a second REGISTER does not fork the call twice.
func (s *Service) Refreshed(b Binding) {
	id := s.BindingID(b.AOR, b.Device)
	s.release(id, b)
	s.publish(Refresh{Waiter: id, Record: s.RecordID(b)})
}

// release hands the device to every call parked for it, once.
func (s *Service) release(id store.ID, b Binding) {
	s.waitMu.Lock()
	ws := s.waiters[id]
	delete(s.waiters, id)
	s.waitMu.Unlock()
	for w := range ws {
		w.awake <- b // buffered: one slot per device, and each device is delivered once
	}
}

// End stops waiting: pending pushes are dropped, and devices that were
// pushed but never answered get a cancel push with reason (missed, or
// answered elsewhere), so their phones stop ringing.
func (w *Wakeup) End(reason string, answered ...Binding) {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	w.done = true
	w.mu.Unlock()
	w.svc.metrics.Parked(-1)

	w.cancel()
	w.svc.waitMu.Lock()
	for _, id := range w.ids {
		delete(w.svc.waiters[id], w)
		if len(w.svc.waiters[id]) == 0 {
			delete(w.svc.waiters, id)
		}
	}
	w.svc.waitMu.Unlock()
	w.pushes.Wait()
	if w.call.Message {
		return
	}
	for _, b := range w.delivered {
		if slices.ContainsFunc(answered, func(a Binding) bool { return a.Device == b.Device }) {
			continue
		}
		w.svc.followUp(b, push.Message{Kind: push.KindCancel, CallID: w.call.ID, Reason: reason})
	}
}

// followUp sends a cancel push in the background: the call is over, and
// nobody waits for it.
func (s *Service) followUp(b Binding, m push.Message) {
	s.pushes.Add(1)
	go func() {
		defer s.pushes.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.FollowUpTimeout)
		defer cancel()
		res := s.pusher.Send(ctx, b.Device.target(), m)
		s.log.Info("cancel push", "aor", b.AOR, "device", b.Device, "reason", m.Reason, "outcome", res.Outcome)
	}()
}

// Drain waits for background pushes to finish (shutdown).
func (s *Service) Drain() { s.pushes.Wait() }

func (d Device) target() push.Target {
	return push.Target{Provider: d.Provider, Token: d.Token, Param: d.Param}
}

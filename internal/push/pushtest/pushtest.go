// Package pushtest provides fake APNs and FCM services that speak the real
// protocols (HTTP/2 over TLS, APNs headers/JWT/reasons; FCM HTTP v1 with an
// OAuth token endpoint and its error shapes), for tests in any package and
// for cmd/pushfake. Like the services, they refuse what Apple and Google
// refuse: a device token they did not issue, a token pushed under another
// topic or sender id, an oversized payload, a background push that is not
// one. The fakes record every push, can be programmed per token to fail or
// stall, and write the credential files a push.Config needs.
//
// It is test support: never import it from production code.
package pushtest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/push"
)

// Behavior programs how a fake answers pushes to one token.
type Behavior struct {
	// Status is the HTTP status to answer (APNs: 400, 410, 429, 500, …; FCM:
	// derived from Reason when 0).
	Status int
	// Reason is the APNs reason ("BadDeviceToken") or FCM error code
	// ("UNREGISTERED").
	Reason string
	// Times answers this way Times times, then delivers normally; 0 means
	// always.
	Times int
	// Stall holds the request without answering until the client gives up
	// or the fake closes.
	Stall bool
}

// Push is one request a fake received.
type Push struct {
	Provider string          `json:"provider"`
	Token    string          `json:"token"`
	Header   http.Header     `json:"header,omitempty"` // APNs request headers
	Payload  json.RawMessage `json:"payload"`          // APNs body; FCM "message" object
	Status   int             `json:"status"`           // what the fake answered; 0 if stalled
	Reason   string          `json:"reason,omitempty"`
	At       time.Time       `json:"at"`
}

// Accepted reports whether the fake answered 200.
func (p Push) Accepted() bool { return p.Status == http.StatusOK }

// recorder is the part both fakes share: programmed behaviours and the log of
// pushes.
type recorder struct {
	onPush func(Push)

	mu        sync.Mutex
	pushes    []Push
	changed   chan struct{}
	behaviors map[string]*Behavior
}

func newRecorder(onPush func(Push)) recorder {
	return recorder{onPush: onPush, changed: make(chan struct{}), behaviors: map[string]*Behavior{}}
}

// Program sets how pushes to token are answered; a zero Behavior restores
// normal delivery.
func (r *recorder) Program(token string, b Behavior) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if b == (Behavior{}) {
		delete(r.behaviors, token)
		return
	}
	r.behaviors[token] = &b
}

// behavior returns the programmed answer for token, consuming one of its
// Times.
func (r *recorder) behavior(token string) (Behavior, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.behaviors[token]
	if !ok {
		return Behavior{}, false
	}
	out := *b
	if b.Times > 0 {
		b.Times--
		if b.Times == 0 {
			delete(r.behaviors, token)
		}
	}
	return out, true
}

func (r *recorder) record(p Push) {
	r.mu.Lock()
	r.pushes = append(r.pushes, p)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.onPush != nil {
		r.onPush(p)
	}
}

// Pushes returns every push received so far, in order.
func (r *recorder) Pushes() []Push {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Push(nil), r.pushes...)
}

// Accepted returns the pushes answered 200.
func (r *recorder) Accepted() []Push {
	var out []Push
	for _, p := range r.Pushes() {
		if p.Accepted() {
			out = append(out, p)
		}
	}
	return out
}

// PushesTo returns the pushes received for one token.
func (r *recorder) PushesTo(token string) []Push {
	var out []Push
	for _, p := range r.Pushes() {
		if p.Token == token {
			out = append(out, p)
		}
	}
	return out
}

// WaitFor blocks until at least n pushes were received (or ctx ends) and
// returns them all.
func (r *recorder) WaitFor(ctx context.Context, n int) ([]Push, error) {
	for {
		r.mu.Lock()
		if len(r.pushes) >= n {
			out := append([]Push(nil), r.pushes...)
			r.mu.Unlock()
			return out, nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return r.Pushes(), ctx.Err()
		}
	}
}

// Reset forgets recorded pushes and programmed behaviours; the tokens the
// fake issued stay valid.
func (r *recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pushes = nil
	r.behaviors = map[string]*Behavior{}
}

// registry is what a fake knows of the tokens it issued: each token and
// what it was issued for (APNs: a topic; FCM: a sender id). Reset leaves it
// alone, as a service remembers its devices.
type registry struct {
	mu sync.Mutex
	m  map[string]string
}

func (r *registry) bind(token, issuedFor string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]string{}
	}
	r.m[token] = issuedFor
}

func (r *registry) lookup(token string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.m[token]
	return v, ok
}

// Fakes is a fake APNs and a fake FCM with a push.Config pointing at both
// (apps "ios" and "android").
type Fakes struct {
	APNs   *APNs
	FCM    *FCM
	Config push.Config
}

// NewFakes starts both fakes for a test; they close when the test ends.
func NewFakes(tb testing.TB) *Fakes {
	tb.Helper()
	a, f := NewAPNs(tb), NewFCM(tb)
	return &Fakes{APNs: a, FCM: f, Config: push.Config{Apps: []push.AppConfig{a.App("ios"), f.App("android")}}}
}

type connCounter struct {
	mu sync.Mutex
	n  int
}

func (c *connCounter) countConn(_ net.Conn, st http.ConnState) {
	if st == http.StateNew {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
}

func (c *connCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

package sip

import (
	"sync"
	"time"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// heldFlows remembers the bindings of devices that registered through this
// node over a connection (TCP, TLS, WebSocket), so that a call for one
// still reaches it while the store cannot be read (Redis unreachable): what
// the call needs then is the connection this node holds, not the record.
// It is consulted only when the store fails. An entry goes when the store
// says its binding is gone, when its device un-registers through this node,
// when this node un-registers it upstream (expired, erased by an operator),
// or when it is found with its connection closed or its record expired;
// there is at most one per binding this node has seen over a connection.
type heldFlows struct {
	mu sync.Mutex
	m  map[store.ID]relay.Binding
	// pruneAt is the size at which keep drops every entry whose device has
	// gone, so that devices which disconnect and are erased elsewhere (by
	// another node's sweeper) do not pile up: the table stays within about
	// twice the devices still connected.
	pruneAt int
}

// minPrune is the smallest table keep prunes.
const minPrune = 1024

// keep remembers b under id; gone tells an entry whose device has gone.
func (h *heldFlows) keep(id store.ID, b relay.Binding, gone func(relay.Binding) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[store.ID]relay.Binding{}
	}
	h.m[id] = b
	if len(h.m) < max(h.pruneAt, minPrune) {
		return
	}
	for k, v := range h.m {
		if gone(v) {
			delete(h.m, k)
		}
	}
	h.pruneAt = 2 * len(h.m)
}

func (h *heldFlows) drop(id store.ID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, id)
}

func (h *heldFlows) get(id store.ID) (relay.Binding, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := h.m[id]
	return b, ok
}

// keepFlow remembers a stored binding if its device is connected.
func (s *Server) keepFlow(id store.ID, b relay.Binding) {
	if s.liveFlow(b) {
		s.held.keep(id, b, s.flowGone)
	}
}

// flowGone tells a held binding whose connection has closed or whose
// record has expired.
func (s *Server) flowGone(b relay.Binding) bool {
	return !s.liveFlow(b) || !time.Now().Before(b.ExpiresAt)
}

// heldFlow is the binding of id with the connection its device holds to
// this node, if it is still open and the record has not expired.
func (s *Server) heldFlow(id store.ID) (relay.Binding, bool) {
	b, ok := s.held.get(id)
	if !ok {
		return relay.Binding{}, false
	}
	if s.flowGone(b) {
		s.held.drop(id)
		return relay.Binding{}, false
	}
	return b, true
}

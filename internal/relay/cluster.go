package relay

import (
	"context"
	"errors"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

// Bus carries "binding refreshed" between sipwake nodes that share a
// store: a call parked on one node is released when its device
// re-registers through another. Only the binding id travels (an HMAC: no
// AOR, token or address).
type Bus interface {
	Publish(ctx context.Context, r Refresh) error
}

// Refresh names a refreshed binding for the other nodes: the id calls wait
// on (AOR and device) and the id of the record that holds it (the same for
// a SIP-native binding; the account's for a handed-over one).
type Refresh struct {
	Waiter, Record store.ID
}

// publishTimeout bounds telling the other nodes.
const publishTimeout = 2 * time.Second

// Node is this node's cluster address ("" when alone).
func (s *Service) Node() string { return s.node }

// publish tells the other nodes that a binding was refreshed here.
func (s *Service) publish(r Refresh) {
	if s.bus == nil {
		return
	}
	s.pushes.Add(1)
	go func() {
		defer s.pushes.Done()
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		if err := s.bus.Publish(ctx, r); err != nil {
			s.log.Warn("could not tell the other nodes of a refresh; calls parked there wait for their timeout", "error", err)
		}
	}()
}

// RemoteRefreshed is a refresh another node published: calls parked here
// for that binding get the device, now reachable through that node.
func (s *Service) RemoteRefreshed(ctx context.Context, r Refresh) {
	s.waitMu.Lock()
	_, waiting := s.waiters[r.Waiter]
	s.waitMu.Unlock()
	if !waiting {
		return
	}
	b, err := s.Binding(ctx, r.Record)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err != nil {
		s.log.Warn("refreshed binding unreadable", "error", err)
		return
	}
	if b.Node == "" || b.Node == s.node {
		return
	}
	s.release(r.Waiter, s.BindingID(b.AOR, b.Device), b)
}

// RecordID is the key a binding is stored under.
func (s *Service) RecordID(b Binding) store.ID { return s.recordID(b, s.BindingID(b.AOR, b.Device)) }

// recordID is RecordID of b, whose BindingID is own.
func (s *Service) recordID(b Binding, own store.ID) store.ID {
	if b.Account != nil {
		return s.AccountID(b.Account.App, b.Account.ID)
	}
	return own
}

package relay

import (
	"context"
	"errors"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

// accountScope prefixes the owner in the keyed hash that names a handed-over
// account's binding. An AOR always holds '@' and an app name never does, so
// the two ID spaces cannot meet.
const accountScope = "handover:"

// ErrExpired is returned when a handed-over account's record has outlived
// its TTL and must not be written again.
var ErrExpired = errors.New("relay: record expired")

// AccountID names the binding of the account an app handed over under its
// own id. It is a keyed hash of (app, id): opaque, safe for a SIP URI, and
// one app's ids can never name another app's record.
func (s *Service) AccountID(app, id string) store.ID {
	return s.store.ID(accountScope+app, id)
}

// RegisterAccount stores (or re-stores) a handed-over account whose upstream
// registration the registrar has just accepted. The record lives ttl from
// now: the API takes a per-account TTL, unlike SIP-native bindings whose TTL
// is the global RecordTTL.
func (s *Service) RegisterAccount(ctx context.Context, b Binding, ttl time.Duration) (Binding, error) {
	if b.Account == nil {
		return Binding{}, errors.New("relay: binding has no account")
	}
	now := s.now()
	b.UpdatedAt = now
	b.ExpiresAt = now.Add(ttl)
	if err := s.put(ctx, s.RecordID(b), b); err != nil {
		return Binding{}, err
	}
	s.log.Info("handed-over account stored", "account", b.Account, "aor", b.AOR, "device", b.Device, "expires_at", b.ExpiresAt)
	s.traces.Log(s.log, b.AOR, "handed-over account stored", "account_id_full", b.Account.ID, "app", b.Account.App)
	return b, nil
}

// UpdateAccount writes back a handed-over account after a registration
// refresh (new CSeq, granted expiry) without restarting its TTL: only the
// app re-posting the account does that.
func (s *Service) UpdateAccount(ctx context.Context, b Binding) error {
	if b.Account == nil {
		return errors.New("relay: binding has no account")
	}
	if !s.now().Before(b.ExpiresAt) {
		return ErrExpired
	}
	b.UpdatedAt = s.now()
	return s.put(ctx, s.RecordID(b), b)
}

// EraseAccount removes a handed-over account's record at once and returns
// what it held (store.ErrNotFound when there was none).
func (s *Service) EraseAccount(ctx context.Context, id store.ID, why string) (Binding, error) {
	rec, err := s.store.Delete(ctx, id)
	if err != nil {
		return Binding{}, err
	}
	b, err := decode(rec)
	if err != nil {
		return Binding{}, err
	}
	s.log.Info("handed-over account erased", "account", b.Account, "aor", b.AOR, "why", why)
	return b, nil
}

// DecodeBinding reads a stored record back into a Binding, for callers that
// walk the store themselves (resuming handed-over accounts on start).
func DecodeBinding(r store.Record) (Binding, error) { return decode(r) }

package sip

import (
	"context"
	"time"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// Relay is what the SIP side asks of the domain: which bindings to keep and
// for whom, and the wait for sleeping devices. *relay.Service is the real
// one; the call state machine's tests drive a fake.
type Relay interface {
	// Classify says what a Contact's pn-* parameters ask for, and
	// Providers which push services can be asked for.
	Classify(relay.ContactParams) relay.PushRequest
	Providers() []string

	// Register stores a binding the registrar accepted (aor: the AOR's
	// bindings as read when its REGISTER came in), RefreshUnwritten
	// answers for it without a store when it would write nothing;
	// Refreshed tells the calls waiting for its device that it is awake.
	Register(ctx context.Context, b relay.Binding, aor []relay.Binding) (relay.Binding, error)
	RefreshUnwritten(b relay.Binding, aor []relay.Binding) (relay.Binding, bool)
	Refreshed(b relay.Binding)
	// PushDisabled erases the bindings of contacts that turned push off,
	// Erase one device's binding, UpdateAccount a handed-over account's.
	PushDisabled(ctx context.Context, aor relay.AOR, contacts []relay.ContactMatch) (int, error)
	Erase(ctx context.Context, aor relay.AOR, d relay.Device, reason string) error
	UpdateAccount(ctx context.Context, b relay.Binding) error

	// Binding and Bindings read what is stored.
	Binding(ctx context.Context, id store.ID) (relay.Binding, error)
	Bindings(ctx context.Context, aor relay.AOR) ([]relay.Binding, error)

	// Wake pushes a call's sleeping devices and waits for them; what
	// becomes of each goes to on, and the EndWait ends the wait.
	Wake(ctx context.Context, c relay.Call, devices []relay.Binding, wait time.Duration, on relay.WakeEvents) relay.EndWait

	// BindingID, BindingIDs, RecordID and Same name bindings: a device's
	// id, the ids a binding stands for (its own and those it replaced),
	// the stored record's, and whether two are one device's.
	BindingID(aor relay.AOR, d relay.Device) store.ID
	BindingIDs(b relay.Binding) []store.ID
	RecordID(b relay.Binding) store.ID
	Same(a, b relay.Binding) bool
	// Node is where the other nodes reach this one ("" alone).
	Node() string
	// Traces are the AORs an operator is troubleshooting.
	Traces() *relay.Traces
}

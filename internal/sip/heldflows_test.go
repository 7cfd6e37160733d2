package sip

import (
	"fmt"
	"testing"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// The held table drops devices that have gone once it has grown enough,
// and never one still connected.
func TestHeldFlowsPruneGoneDevices(t *testing.T) {
	var h heldFlows
	gone := func(b relay.Binding) bool { return b.Contact == "gone" }
	id := func(i int) (k store.ID) { copy(k[:], fmt.Sprintf("id-%05d", i)); return k }
	for i := range minPrune - 1 {
		h.keep(id(i), relay.Binding{Contact: "gone"}, gone)
	}
	if len(h.m) != minPrune-1 {
		t.Fatalf("pruned below the threshold: %d entries", len(h.m))
	}
	h.keep(id(minPrune), relay.Binding{Contact: "live"}, gone)
	if len(h.m) != 1 {
		t.Fatalf("after the prune: %d entries, want the 1 live one", len(h.m))
	}
	const live = 3 * minPrune
	for i := range live {
		h.keep(id(minPrune+1+i), relay.Binding{Contact: "live"}, gone)
	}
	if len(h.m) != live+1 {
		t.Fatalf("%d entries, want all %d live ones", len(h.m), live+1)
	}
	if _, ok := h.get(id(minPrune)); !ok {
		t.Error("a live device was dropped")
	}
}

package bench

import (
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"testing"

	sipwire "github.com/sipwake/sipwake/internal/sip"
)

// harnessGCPercent is the harness' own GC pace. The harness is the
// instrument: its fake APNs answers every push and its device pool
// re-registers every woken phone, so its collections would show up in the
// latency it measures. It collects a quarter as often as Go's default.
const harnessGCPercent = 400

// TestMain sets sipgo's process-wide knobs once, as main does, before any
// test runs in parallel, and the harness' GC pace. Started as a soak node
// (soakNodeEnv set), the binary is a sipwake node instead and runs no test.
func TestMain(m *testing.M) {
	if ttl, ok := os.LookupEnv(soakNodeEnv); ok {
		os.Exit(runSoakNode(ttl))
	}
	sipwire.ConfigureLibrary(slog.New(slog.NewTextHandler(io.Discard, nil)))
	debug.SetGCPercent(harnessGCPercent)
	os.Exit(m.Run())
}

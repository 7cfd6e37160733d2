package app_test

import (
	"io"
	"log/slog"
	"os"
	"testing"

	sipwire "github.com/sipwake/sipwake/internal/sip"
)

// TestMain sets sipgo's process-wide knobs once, as main does, before any
// test runs in parallel.
func TestMain(m *testing.M) {
	sipwire.ConfigureLibrary(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

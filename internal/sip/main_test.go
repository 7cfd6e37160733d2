package sip

import (
	"io"
	"log/slog"
	"os"
	"testing"
)

// TestMain sets sipgo's process-wide knobs once, as main does, before any
// test runs in parallel.
func TestMain(m *testing.M) {
	ConfigureLibrary(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

package sipmsg

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// sipgo's message-carrying attributes never reach the log, whether logged
// with the record or bound to the logger first; everything else does.
func TestRedactedLoggerDropsMessages(t *testing.T) {
	var out bytes.Buffer
	log := RedactedLogger(slog.New(slog.NewTextHandler(&out, nil)))
	const secret = "sip:alice@example.test;pn-prid=TOKEN"
	log.With("req", secret, "caller", "Transport<UDP>").Info("read", "data", secret, "msg", secret, "error", "bad header")
	got := out.String()
	if strings.Contains(got, secret) {
		t.Errorf("a SIP message reached the log: %s", got)
	}
	for _, kept := range []string{"component=sipgo", "caller=Transport<UDP>", `error="bad header"`} {
		if !strings.Contains(got, kept) {
			t.Errorf("log lost %s: %s", kept, got)
		}
	}
}

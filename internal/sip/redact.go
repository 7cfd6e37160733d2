package sip

import (
	"context"
	"log/slog"
	"time"

	"github.com/emiago/sipgo/sip"
)

// sipgo logs whole messages under these keys (a parse error logs the raw
// datagram); they carry AORs, numbers and push tokens, so they never reach
// sipwake's log.
var messageKeys = map[string]bool{"data": true, "req": true, "res": true, "request": true, "response": true, "msg": true}

// redactHandler drops sipgo's message-carrying attributes.
type redactHandler struct{ next slog.Handler }

// RedactedLogger is the logger handed to sipgo's internals.
func RedactedLogger(log *slog.Logger) *slog.Logger {
	return slog.New(redactHandler{next: log.Handler()}).With("component", "sipgo")
}

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	clean := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !messageKeys[a.Key] {
			clean.AddAttrs(a)
		}
		return true
	})
	return h.next.Handle(ctx, clean)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		if !messageKeys[a.Key] {
			kept = append(kept, a)
		}
	}
	return redactHandler{next: h.next.WithAttrs(kept)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{next: h.next.WithGroup(name)}
}

// maxUDPMessage is the largest SIP message sipwake sends over UDP. sipgo
// refuses anything over 1300 bytes by default, but a registrar's 200 lists
// every contact of the AOR (with pn-* parameters and Path, a few hundred
// bytes each) and must reach the device over the transport it came on:
// like Kamailio, send it and let IP fragment it.
const maxUDPMessage = 65000

// completedLinger is how long a finished transaction stays to absorb
// retransmissions. RFC 3261 keeps a non-INVITE server transaction 64*T1 =
// 32 s over UDP (Timer J), and sipgo keeps every UDP client transaction
// (REGISTER forwarded upstream included) 32 s as well (its Timer D), each
// with its parsed request and response: at 2,000 REGISTER/s that is over
// half a gigabyte of finished exchanges. A peer only retransmits after
// losing an answer, at most T2 = 4 s apart, so T4 = 5 s catches them, which
// is what Kamailio's tm keeps (wt_timer). A later retransmission is handled
// as a new request: the registrar answers it again, and a repeated final
// response toward sipwake is dropped as unmatched.
const completedLinger = 5 * time.Second

// ConfigureLibrary sets sipgo's process-wide knobs: the UDP size limit, how
// long finished transactions linger, and its default logger (redacted). Call
// it once, from main or a TestMain, before any Server exists.
func ConfigureLibrary(log *slog.Logger) {
	sip.UDPMTUSize = maxUDPMessage
	sip.Timer_J = completedLinger
	sip.Timer_D = completedLinger
	sip.SetDefaultLogger(RedactedLogger(log))
}

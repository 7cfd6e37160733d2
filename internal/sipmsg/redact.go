package sipmsg

import (
	"context"
	"log/slog"
)

// sipgo logs whole messages under these keys (a parse error logs the raw
// datagram); they carry AORs, numbers and push tokens, so they never reach
// sipwake's log.
var messageKeys = map[string]bool{"data": true, "req": true, "res": true, "request": true, "response": true, "msg": true}

// redactHandler drops sipgo's message-carrying attributes.
type redactHandler struct{ next slog.Handler }

// RedactedLogger is the logger handed to sipgo's internals, by the proxy
// side and the handover registrations alike.
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

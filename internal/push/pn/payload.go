package pn

import (
	"time"
	"unicode/utf8"
)

// Who is how the caller is shown: the display name, else the number, else
// the address.
func (m Message) Who() string {
	for _, s := range []string{m.CallerName, m.CallerNumber, m.CallerURI} {
		if s != "" {
			return s
		}
	}
	return ""
}

// Fields are sipwake's own documented push fields (docs/PUSH.md), the same
// for APNs and FCM.
func (m Message) Fields(pushID string) map[string]string {
	f := map[string]string{"kind": m.Kind.String(), "push_id": pushID}
	if m.CallID != "" {
		f["call_id"] = m.CallID
	}
	switch m.Kind {
	case KindCall, KindMessage:
		f["caller_name"], f["caller_number"] = m.CallerName, m.CallerNumber
	case KindCancel:
		f["reason"] = m.Reason
	}
	return f
}

// SendTime is Flexisip's "send-time": UTC, "2006-01-02 15:04:05".
func SendTime(t time.Time) string { return t.UTC().Format(time.DateTime) }

// Fit cuts the caller's name, address and number and, last, the call id,
// the longest first, until size(m) is at most limit, and returns the
// message that fits. A caller's name must never make a push fail.
func Fit(m Message, limit int, size func(Message) int) Message {
	for {
		n := size(m)
		if n <= limit {
			return m
		}
		longest := &m.CallerName
		for _, f := range []*string{&m.CallerURI, &m.CallerNumber, &m.CallID} {
			if len(*f) > len(*longest) {
				longest = f
			}
		}
		if *longest == "" {
			return m // nothing left to cut: the fixed part alone is too big
		}
		*longest = cut(*longest, n-limit)
	}
}

// cut drops at least n bytes from the end of s, on a rune boundary.
func cut(s string, n int) string {
	end := max(len(s)-n, 0)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end]
}

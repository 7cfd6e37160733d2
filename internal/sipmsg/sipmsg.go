// Package sipmsg reads what sipwake needs from SIP messages that sipgo
// leaves as text: Contact lists and the expiry a Contact asks for or was
// granted, the sw- prefix of binding URIs, and the redaction of sipgo's
// logs. Both the proxy side (internal/sip) and the handover registrations
// (internal/handover) use it; it holds no state and sends nothing.
package sipmsg

import (
	"fmt"
	"iter"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// BindingUserPrefix starts the user part of a URI that names a binding
// at sipwake (sip:sw-<binding id>@sipwake): what the proxy side puts in a
// Path or rewritten Contact, and the contact the handover registrations
// register for an account. Calls come back to sipwake addressed so.
const BindingUserPrefix = "sw-"

// Contacts parses every Contact of a message, including comma-separated
// lists in one header field; "*" is a wildcard Contact. Contacts sipgo
// already parsed (it splits lists itself) are the message's own headers,
// not copies: clone one before changing it for another message.
func Contacts(msg Message) ([]*sip.ContactHeader, error) {
	var out []*sip.ContactHeader
	for h := range named(msg, "Contact") {
		if c, ok := h.(*sip.ContactHeader); ok {
			out = append(out, c)
			continue
		}
		for v := range SplitList(h.Value()) {
			c := &sip.ContactHeader{}
			if strings.TrimSpace(v) == "*" {
				c.Address.Wildcard = true
				out = append(out, c)
				continue
			}
			name, err := sip.ParseAddressValue(v, &c.Address, &c.Params)
			if err != nil {
				return nil, fmt.Errorf("bad Contact %q: %w", v, err)
			}
			c.DisplayName = name
			out = append(out, c)
		}
	}
	return out, nil
}

// SplitList yields the parts of a header value between commas outside
// quotes and <>, trimmed.
func SplitList(v string) iter.Seq[string] {
	return func(yield func(string) bool) {
		start, quoted, bracket := 0, false, false
		for i := 0; i < len(v); i++ {
			switch v[i] {
			case '"':
				quoted = !quoted
			case '<':
				bracket = !quoted
			case '>':
				bracket = false
			case ',':
				if !quoted && !bracket {
					if !yield(strings.TrimSpace(v[start:i])) {
						return
					}
					start = i + 1
				}
			}
		}
		yield(strings.TrimSpace(v[start:]))
	}
}

// Message is what Contacts and Expires read of a SIP message, its
// headers in order: sipgo's *sip.Request and *sip.Response.
type Message interface {
	Headers() []sip.Header
}

// named yields msg's headers called name, matched as sipgo's GetHeaders
// matches them (ASCII case folded), without GetHeaders' lower-cased copy
// of every other header's name on the way: these lookups run for every
// REGISTER.
func named(msg Message, name string) iter.Seq[sip.Header] {
	return func(yield func(sip.Header) bool) {
		for _, h := range msg.Headers() {
			if equalFoldASCII(h.Name(), name) && !yield(h) {
				return
			}
		}
	}
}

// equalFoldASCII is a == b with ASCII letters case folded, and nothing
// else (strings.EqualFold also folds Unicode: "ſ" is "s" to it).
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Expires is a Contact's expiry: its own expires parameter, else the
// message's Expires header, else def.
func Expires(msg Message, c *sip.ContactHeader, def int) int {
	if c != nil {
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return n
			}
		}
	}
	for h := range named(msg, "Expires") {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			return n
		}
		return def // the first one says
	}
	return def
}

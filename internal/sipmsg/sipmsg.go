// Package sipmsg reads what sipwake needs from SIP messages that sipgo
// leaves as text: Contact lists and the expiry a Contact asks for or was
// granted, the sw- prefix of binding URIs, and the redaction of sipgo's
// logs. Both the proxy side (internal/sip) and the handover registrations
// (internal/handover) use it; it holds no state and sends nothing.
package sipmsg

import (
	"fmt"
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
func Contacts(msg sip.Message) ([]*sip.ContactHeader, error) {
	var out []*sip.ContactHeader
	for _, h := range msg.GetHeaders("Contact") {
		if c, ok := h.(*sip.ContactHeader); ok {
			out = append(out, c)
			continue
		}
		for _, v := range SplitList(h.Value()) {
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

// SplitList splits a header value at commas outside quotes and <>.
func SplitList(v string) []string {
	var (
		out     []string
		start   int
		quoted  bool
		bracket bool
	)
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
				out = append(out, strings.TrimSpace(v[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(v[start:]))
}

// Expires is a Contact's expiry: its own expires parameter, else the
// message's Expires header, else def.
func Expires(msg sip.Message, c *sip.ContactHeader, def int) int {
	if c != nil {
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return n
			}
		}
	}
	if hs := msg.GetHeaders("Expires"); len(hs) > 0 {
		if n, err := strconv.Atoi(strings.TrimSpace(hs[0].Value())); err == nil && n >= 0 {
			return n
		}
	}
	return def
}

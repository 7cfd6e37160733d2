package sip

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// bindingUserPrefix marks the user part of a URI that names a binding
// (sw-<id>@sipwake), in a Path or a rewritten Contact.
const bindingUserPrefix = "sw-"

// contactsOf parses every Contact of a request, including comma-separated
// lists in one header field.
func contactsOf(msg sip.Message) ([]*sip.ContactHeader, error) {
	var out []*sip.ContactHeader
	for _, h := range msg.GetHeaders("Contact") {
		for _, v := range splitList(h.Value()) {
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

// splitList splits a header value at commas outside quotes and <>.
func splitList(v string) []string {
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

// param reads a pn-* parameter from the Contact URI, where RFC 8599 puts
// it, falling back to the header parameters some clients use.
func param(c *sip.ContactHeader, name string) (string, bool) {
	if v, ok := c.Address.UriParams.Get(name); ok {
		return v, true
	}
	return c.Params.Get(name)
}

// pushParams extracts the RFC 8599 parameters of one Contact.
func pushParams(c *sip.ContactHeader) relay.ContactParams {
	provider, has := param(c, "pn-provider")
	token, _ := param(c, "pn-prid")
	pnParam, _ := param(c, "pn-param")
	return relay.ContactParams{
		HasProvider: has,
		Device: relay.Device{
			Provider: strings.ToLower(strings.Trim(provider, `"`)),
			Token:    strings.Trim(token, `"`),
			Param:    strings.Trim(pnParam, `"`),
		},
	}
}

// contactExpires is the expiry a Contact asks for: its own expires
// parameter, else the request's Expires header, else def.
func contactExpires(msg sip.Message, c *sip.ContactHeader, def int) int {
	if v, ok := c.Params.Get("expires"); ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			return n
		}
	}
	if hs := msg.GetHeaders("Expires"); len(hs) > 0 {
		h := hs[0]
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			return n
		}
	}
	return def
}

// aorOf is the canonical AOR of a To or From address: user@host, lower-case
// host, no port or parameters.
func aorOf(u sip.Uri) (relay.AOR, error) {
	if u.User == "" || u.Host == "" {
		return "", errors.New("address of record needs user@host")
	}
	return relay.AOR(u.User + "@" + strings.ToLower(u.Host)), nil
}

// bindingIDFrom reads the binding id from a sw-<id> user part.
func bindingIDFrom(u sip.Uri) (store.ID, bool) {
	rest, ok := strings.CutPrefix(u.User, bindingUserPrefix)
	if !ok {
		return store.ID{}, false
	}
	id, err := store.ParseID(rest)
	return id, err == nil
}

// instanceOf is the +sip.instance of a Contact, unquoted.
func instanceOf(c *sip.ContactHeader) string {
	v, _ := c.Params.Get("+sip.instance")
	return strings.Trim(v, `"`)
}

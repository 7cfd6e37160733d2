package sip

import (
	"errors"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

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

// aorOf is the canonical AOR of a To or From address: user@host, lower-case
// host, no port or parameters.
func aorOf(u sip.Uri) (relay.AOR, error) {
	if u.User == "" || u.Host == "" {
		return "", errors.New("address of record needs user@host")
	}
	return relay.AOR(u.User + "@" + relay.AORHost(u.Host)), nil
}

// bindingIDFrom reads the binding id from a sw-<id> user part.
func bindingIDFrom(u sip.Uri) (store.ID, bool) {
	rest, ok := strings.CutPrefix(u.User, sipmsg.BindingUserPrefix)
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

// uriString is u.String() printed into one buffer sized up front. sipgo's
// String grows its buffer as it writes and prints the parameters into
// another: 12 allocations for the push Contact of sipp's register_push.xml
// against 4 here (BenchmarkURIString), on every REGISTER stored.
func uriString(u *sip.Uri) string {
	if u.Headers.Length() > 0 || u.Raw() != "" {
		return u.String() // headers go after the parameters; a tel: or urn: is raw
	}
	size := len(u.Scheme) + len(u.User) + len(u.Password) + len(u.Host) + 16
	for _, kv := range u.UriParams {
		size += len(kv.K) + len(kv.V) + 4
	}
	var b strings.Builder
	b.Grow(size)
	bare := *u
	bare.UriParams = nil
	bare.StringWrite(&b)
	if u.UriParams.Length() > 0 {
		b.WriteByte(';')
		u.UriParams.ToStringWrite(';', &b)
	}
	return b.String()
}

// Package relay is sipwake's domain: device bindings and their lifecycle
// (stored on a successful registration, refreshed, erased on expiry, on
// push-off or when the push service says the token is dead), and the policy
// for waking devices. It knows nothing of SIP wire formats or push protocols:
// the sip package turns messages into these types and back, and relay
// declares the Store it needs.
package relay

import (
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/push/pn"
	"github.com/sipwake/sipwake/internal/store"
)

// AOR is a canonical address of record, "user@domain", without scheme,
// port or parameters. It prints itself masked so logs never carry it.
type AOR string

// Masked keeps enough of the AOR to tell two apart in a log line without
// giving away the number or name.
func (a AOR) Masked() string {
	user, host, _ := strings.Cut(string(a), "@")
	return maskPart(user) + "@" + host
}

// AORHost is the domain part of an AOR in its one spelling: lower case,
// and an IP address in its canonical text, an IPv6 one in brackets, so
// that sip:alice@[2001:DB8:0::1] and sip:alice@[2001:db8::1] are one AOR
// as 192.0.2.1 is one spelling of itself.
func AORHost(host string) string {
	host = strings.ToLower(host)
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if ip.Is6() {
			return "[" + ip.String() + "]"
		}
		return ip.String()
	}
	return host
}

// String is the masked form: an AOR passed to a logger by mistake still
// does not leak.
func (a AOR) String() string { return a.Masked() }

func maskPart(s string) string {
	if len(s) <= 4 {
		return "***"
	}
	return s[:2] + "***" + s[len(s)-2:]
}

// Device is one app installation, named by its RFC 8599 parameters, not by
// its address: a woken app comes back from a new address and Call-ID.
type Device struct {
	Provider string `json:"provider"` // pn-provider
	Token    string `json:"token"`    // pn-prid
	Param    string `json:"param"`    // pn-param
}

// Key is the device's identity inside the keyed hash that names a binding.
func (d Device) Key() string {
	return d.Provider + "\x00" + d.Param + "\x00" + d.Token
}

// MaskedToken is the token as logs may show it: the last six characters
// of each token in pn-prid, with its service where pn-prid names it
// ("***93A4B5:voip&***C6D7E8:remote").
func (d Device) MaskedToken() string {
	parts := strings.Split(d.Token, "&")
	for i, p := range parts {
		tok, service, tagged := strings.Cut(p, ":")
		if !tagged || (service != pn.ServiceVoIP && service != pn.ServiceRemote) {
			tok, service = p, "" // an FCM token may hold colons of its own
		}
		masked := "***"
		if len(tok) > 6 {
			masked += tok[len(tok)-6:]
		}
		if service != "" {
			masked += ":" + service
		}
		parts[i] = masked
	}
	return strings.Join(parts, "&")
}

// target is where the device's pushes go, its tokens taken apart.
func (d Device) target() pn.Target {
	return pn.Target{Provider: d.Provider, Token: d.Token, Param: d.Param}
}

// SharesToken tells whether two devices of one push service hold a token
// in common: an app that handed over its PushKit token registers with
// liblinphone's "<pushkit>:voip&<remote>:remote".
func (d Device) SharesToken(o Device) bool {
	if d.Provider != o.Provider {
		return false
	}
	mine := d.target().Tokens()
	for _, t := range o.target().Tokens() {
		if slices.ContainsFunc(mine, func(m pn.Token) bool { return strings.EqualFold(m.Value, t.Value) }) {
			return true
		}
	}
	return false
}

// Flow is how the device last reached sipwake, so a call can be sent back
// the same way while the connection lives.
type Flow struct {
	Transport string `json:"transport"` // udp, tcp, tls, ws, wss
	Source    string `json:"source"`    // ip:port the REGISTER came from
}

// UpstreamState is what the provider's registrar holds for the binding.
type UpstreamState struct {
	// Contact is the contact the registrar stores: the device's own in
	// path mode, sipwake's in contact mode.
	Contact      string    `json:"contact"`
	Path         bool      `json:"path"`
	Expires      int       `json:"expires"` // seconds granted by the registrar
	RegisteredAt time.Time `json:"registered_at"`
	CallID       string    `json:"call_id"`
	CSeq         uint32    `json:"cseq"`
}

// LapsesAt is when the upstream registration runs out unless refreshed.
func (u UpstreamState) LapsesAt() time.Time {
	return u.RegisteredAt.Add(time.Duration(u.Expires) * time.Second)
}

// Binding is one device of one AOR as sipwake keeps it.
type Binding struct {
	AOR      AOR           `json:"aor"`
	Device   Device        `json:"device"`
	Contact  string        `json:"contact"`  // the device's Contact URI as it sent it
	Instance string        `json:"instance"` // +sip.instance, when the device sent one
	Flow     Flow          `json:"flow"`
	Upstream UpstreamState `json:"upstream"`
	// PNSReg: the device's Contact said +sip.pnsreg, so it can refresh its
	// registration by itself (RFC 8599 §4.1.4); it was told in Feature-Caps
	// by when.
	PNSReg bool `json:"pnsreg"`
	// RefreshPushedFor is the upstream registration the device was last
	// woken to refresh (its RegisteredAt), so it is woken once per lapse.
	RefreshPushedFor time.Time `json:"refresh_pushed_for,omitzero"`
	// Warned counts the expiry warnings already sent for this TTL.
	Warned    int       `json:"warned,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Node is the cluster address of the sipwake node that holds the
	// device's flow ("" on a single node).
	Node string `json:"node,omitempty"`
	// Account is set for a handed-over account: sipwake registers upstream
	// itself and the app, when woken, connects to sipwake instead.
	Account *Account `json:"account,omitempty"`
	// Replaced are the bindings of the same device with older tokens that
	// storing this one erased (Register fills it; never stored): calls
	// parked on them go to this one.
	Replaced []store.ID `json:"-"`
}

// target is where pushes for b go: its device, with what its Contact
// says of the app's alert strings, and its instance.
func (b Binding) target() pn.Target {
	p := pushParams(b.Contact)
	t := b.Device.target()
	t.Instance = b.Instance
	t.Alerts = pn.Alerts{
		CallStr: p["pn-call-str"], MsgStr: p["pn-msg-str"], MissedCallStr: p["pn-missing-call-str"],
		AcceptedElsewhereStr: p["pn-call-accepted-elsewhere-str"],
		CallSound:            p["pn-call-snd"], MsgSound: p["pn-msg-snd"],
	}
	return t
}

// Wakeable tells whether b's device has a token that can carry a push of
// kind k (a PushKit-only iPhone takes calls only). Only the tokens decide,
// so the Contact is not read: every push REGISTER asks.
func (b Binding) Wakeable(k pn.Kind) bool { return pn.Routable(b.Device.target(), k) }

// PushDelay is how long a call waits, for a device that may be awake on
// its flow, before the device is pushed all the same: the Contact's
// pn-timeout (liblinphone sends 0: at once), if it gave one.
func (b Binding) PushDelay() (time.Duration, bool) {
	v, ok := pushParams(b.Contact)["pn-timeout"]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false
	}
	return time.Duration(max(n, 0)) * time.Second, true
}

// sameDevice tells whether two bindings of an AOR are one phone: the same
// +sip.instance or, without one, the same contact user of the same app.
// liblinphone gives a phone new pn-prid values when its tokens change.
func sameDevice(a, b Binding) bool {
	if a.Instance != "" || b.Instance != "" {
		return a.Instance == b.Instance
	}
	return contactUser(a.Contact) == contactUser(b.Contact) &&
		pn.AppKey(a.Device.Provider, a.Device.Param) == pn.AppKey(b.Device.Provider, b.Device.Param)
}

// contactUser is the user part of a sip: or sips: URI.
func contactUser(uri string) string {
	_, rest, _ := strings.Cut(uri, ":")
	user, _, ok := strings.Cut(rest, "@")
	if !ok {
		return ""
	}
	return user
}

// Account is a SIP account an app handed over (SIPIS style). It is sealed
// with the rest of the record and erased with it.
type Account struct {
	ID        string `json:"id"`  // the app's own id for the account (API path)
	App       string `json:"app"` // the API client that owns it
	Registrar string `json:"registrar"`
	Transport string `json:"transport"`
	Username  string `json:"username"`
	Password  string `json:"password,omitempty"`
	HA1       string `json:"ha1,omitempty"`
	Expires   int    `json:"expires"` // requested upstream registration expiry, seconds
}

// LogValue keeps credentials out of logs, and masks the id like an AOR:
// the app chooses it and may use a phone number or an e-mail address. A
// trace (Traces.Log) carries it in full.
func (a *Account) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", maskPart(a.ID)), slog.String("app", a.App))
}

// LogValue keeps the token out of logs when a Device is logged whole.
func (d Device) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("provider", d.Provider),
		slog.String("param", d.Param),
		slog.String("token", d.MaskedToken()),
	)
}

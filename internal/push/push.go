// Package push wakes phones: it is the one Sender the rest of sipwake calls
// to deliver a push to APNs or FCM for an RFC 8599 binding. It owns the
// choice of app (by pn-provider and pn-param), the one retry loop with
// jittered backoff inside the caller's deadline, the classification of
// answers into an Outcome the domain acts on, the per-app token-health window
// that decides whether a rejected token may be erased, and the push metrics.
//
// It does not own bindings or decide when to push (internal/relay does), and
// it never speaks a provider's wire protocol itself: internal/push/apns and
// internal/push/fcm do, on the real client libraries.
package push

import (
	"context"

	"github.com/sipwake/sipwake/internal/push/pn"
)

// Provider names as in RFC 8599 pn-provider.
const (
	ProviderAPNs        = pn.ProviderAPNs
	ProviderAPNsSandbox = pn.ProviderAPNsSandbox
	ProviderFCM         = pn.ProviderFCM
)

// Kind says why a push is sent.
type Kind = pn.Kind

// Push kinds; see pn for what each maps to.
const (
	KindCall          = pn.KindCall
	KindCancel        = pn.KindCancel
	KindRegister      = pn.KindRegister
	KindExpiryWarning = pn.KindExpiryWarning
	KindMessage       = pn.KindMessage
)

// Cancel reasons for Message.Reason.
const (
	ReasonMissed            = pn.ReasonMissed
	ReasonAnsweredElsewhere = pn.ReasonAnsweredElsewhere
)

// Target says where a push goes; it comes from the RFC 8599 Contact params.
type Target = pn.Target

// APNs token services, as liblinphone tags them in pn-prid.
const (
	ServiceVoIP   = pn.ServiceVoIP
	ServiceRemote = pn.ServiceRemote
)

// Token is one push address of a device and the service it is for.
type Token = pn.Token

// Alerts are the app's own localization keys and sounds (liblinphone's
// pn-*-str and pn-*-snd).
type Alerts = pn.Alerts

// Message is what a push says.
type Message = pn.Message

// Outcome is what happened to a push, in the terms the domain acts on.
type Outcome int

// Outcomes.
const (
	// Delivered: the provider accepted the push.
	Delivered Outcome = iota
	// TokenDead: APNs 410 Unregistered, FCM UNREGISTERED. Erase the record.
	TokenDead
	// TokenRejected: APNs 400 BadDeviceToken / DeviceTokenNotForTopic, FCM
	// INVALID_ARGUMENT on the token or SENDER_ID_MISMATCH. Erase only when
	// Result.EraseRecord says so.
	TokenRejected
	// Failed: retryable errors (429, 5xx, timeouts, connection loss) that
	// outlasted the deadline.
	Failed
	// ConfigError: bad credentials, topic not allowed, unknown app. Logged
	// once per app and reason, never retried.
	ConfigError
	// NotSent: none of the device's tokens may carry this kind of push
	// (a PushKit-only iPhone and a MESSAGE: APNs takes only VoIP pushes
	// on that token, and iOS only for calls). Nothing was sent.
	NotSent
	// WrongTopic: APNs 400 DeviceTokenNotForTopic. The token is good but
	// was issued for another topic: sipwake's choice, never the device's
	// fault, so the record is kept.
	WrongTopic
)

// String returns the outcome's metric label value.
func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case TokenDead:
		return "token_dead"
	case TokenRejected:
		return "token_rejected"
	case Failed:
		return "failed"
	case ConfigError:
		return "config_error"
	case NotSent:
		return "not_sent"
	case WrongTopic:
		return "wrong_topic"
	}
	return "unknown"
}

// Result is the outcome of one Send.
type Result struct {
	Outcome Outcome
	// Reason is the provider's reason string, e.g. "Unregistered".
	Reason string
	// Attempts counts requests that reached the provider's connection (0 if
	// none did: an unknown app, an OAuth failure, a try the deadline cut
	// before its request left).
	Attempts int
	// EraseRecord is true when the caller should erase the binding: always
	// for TokenDead; for TokenRejected only when the same app's other
	// recent tokens still deliver (otherwise the app is likely pointed at the
	// wrong APNs environment or topic, and the records are kept).
	EraseRecord bool
	// Service is the service of the token the push went to: ServiceVoIP
	// for a PushKit push (the iPhone now rings in CallKit), ServiceRemote,
	// or "" (FCM, or nothing sent).
	Service string
}

// Sender is what the domain calls. Send honours ctx's deadline: it retries
// with jittered backoff only inside it, and never delivers twice (it retries
// only after an answer that proves non-delivery or a transport error).
type Sender interface {
	Send(ctx context.Context, t Target, m Message) Result
}

// MaskToken returns the form of a push token that may appear in logs: its
// last six characters.
func MaskToken(tok string) string { return pn.MaskToken(tok) }

// Routable tells whether a device's tokens can carry a push of kind k: a
// PushKit-only iPhone, for one, takes calls only.
func Routable(t Target, k Kind) bool {
	route := routerFor(pn.Family(t.Provider))
	if route == nil {
		return false
	}
	_, ok := route(k, t.Tokens())
	return ok
}

// AppKey names the app a device's pn-provider and pn-param address,
// whatever its tokens.
func AppKey(provider, param string) string { return pn.AppKey(provider, param) }

// Family is the push service that delivers for a pn-provider ("apns" for
// "apns.dev").
func Family(provider string) string { return pn.Family(provider) }

// Package pn holds the provider-neutral description of one push: where it
// goes (a Target built from the RFC 8599 pn-* Contact parameters, and which
// of a device's tokens carries which kind: Route), what it says (a Message)
// and what came of it (an Outcome). Package push, the provider packages
// below it (apns, fcm) and the domain (relay, sip) share these types
// through it: the domain imports pn, not push, so it links no provider
// client library (its tests build without firebase). Package push aliases
// them for its own callers. FCMOptions is here for the same reason: push
// builds them and is handed fcm's constructor, so it links no Firebase SDK.
//
// It owns no I/O and no state.
package pn

import "time"

// Provider names as in RFC 8599 pn-provider.
const (
	ProviderAPNs = "apns"
	ProviderFCM  = "fcm"
)

// Kind says why a push is sent; each provider maps it to its own push type
// and priority.
type Kind int

// Push kinds.
const (
	// KindCall wakes the app for an incoming call (APNs VoIP push, FCM
	// high-priority data message).
	KindCall Kind = iota
	// KindCancel tells the app the call ended before it answered. Never a
	// VoIP push: iOS 13+ would demand a CallKit report for it.
	KindCancel
	// KindRegister is a binding-refresh wake-up (background push).
	KindRegister
	// KindExpiryWarning is a user-visible alert asking the user to open the
	// app before the record expires.
	KindExpiryWarning
	// KindMessage tells the user of a SIP MESSAGE waiting for the app: a
	// visible alert the app's notification extension may rewrite, never a
	// VoIP push.
	KindMessage
)

// String returns the kind's name as used in payloads and logs.
func (k Kind) String() string {
	switch k {
	case KindCall:
		return "call"
	case KindCancel:
		return "cancel"
	case KindRegister:
		return "register"
	case KindExpiryWarning:
		return "expiry_warning"
	case KindMessage:
		return "message"
	}
	return "unknown"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, bool) {
	for k := KindCall; k <= KindMessage; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// Target says where a push goes; it comes from the RFC 8599 Contact params,
// kept as the device sent them (Tokens takes pn-prid apart).
type Target struct {
	Provider string // pn-provider: apns, apns.dev or fcm
	Token    string // pn-prid: one token, or liblinphone's "<voip>:voip&<remote>:remote"
	Param    string // pn-param: APNs "<TeamID>.<bundle id>[.voip|.remote|.voip&remote]"; FCM: sender id / project id
	// Alerts are the app's own strings for what it shows (liblinphone's
	// pn-*-str and pn-*-snd parameters); empty ones take Linphone's
	// defaults.
	Alerts Alerts
	// Instance is the device's +sip.instance, Flexisip's "uuid".
	Instance string
}

// Alerts are the localization keys and sounds an app asks for in its
// Contact (liblinphone: pn-call-str, pn-msg-str, pn-groupchat-str,
// pn-call-snd, pn-msg-snd); its Localizable.strings holds the texts.
type Alerts struct {
	CallStr, MsgStr, MissedCallStr, AcceptedElsewhereStr string
	CallSound, MsgSound                                  string
}

// Linphone's defaults for Alerts: liblinphone's
// src/push-notification/push-notification-config.cpp, and Flexisip's
// push-info.hh for pn-missing-call-str and pn-call-accepted-elsewhere-str.
var defaultAlerts = Alerts{
	CallStr: "IC_MSG", MsgStr: "IM_MSG", MissedCallStr: "Missing call", AcceptedElsewhereStr: "Accepted elsewhere",
	CallSound: "notes_of_the_optimistic.caf", MsgSound: "msg.caf",
}

// OrDefaults fills what the app left empty with Linphone's defaults.
func (a Alerts) OrDefaults() Alerts {
	d := defaultAlerts
	for _, f := range []struct {
		dst *string
		v   string
	}{
		{&d.CallStr, a.CallStr}, {&d.MsgStr, a.MsgStr}, {&d.MissedCallStr, a.MissedCallStr},
		{&d.AcceptedElsewhereStr, a.AcceptedElsewhereStr},
		{&d.CallSound, a.CallSound}, {&d.MsgSound, a.MsgSound},
	} {
		if f.v != "" {
			*f.dst = f.v
		}
	}
	return d
}

// Message is what a push says.
type Message struct {
	Kind         Kind
	CallID       string // call-scoped id the app can match (SIP Call-ID or a generated uuid)
	CallerName   string
	CallerNumber string
	// CallerURI is the caller's address (From), as Linphone shows it:
	// "sip:bob@example.org".
	CallerURI  string
	Reason     string        // for KindCancel: "missed" or "answered-elsewhere"
	Expiration time.Duration // how long the push is worth delivering (call wait); 0 = provider default
}

// Cancel reasons.
const (
	ReasonMissed            = "missed"
	ReasonAnsweredElsewhere = "answered-elsewhere"
)

// MaskToken returns a form of a push token safe for logs: its last six
// characters only. Tokens of six characters or fewer are masked entirely.
func MaskToken(tok string) string {
	const keep = 6
	if len(tok) <= keep {
		return "******"
	}
	return "..." + tok[len(tok)-keep:]
}

// Verdict is what a provider error says about itself. Package push turns it
// into an Outcome and decides about retries; providers never retry.
type Verdict int

// Verdicts.
const (
	// VerdictRetry: the push was provably not delivered (429, 5xx, transport
	// error before any response); trying again may work.
	VerdictRetry Verdict = iota
	// VerdictTokenDead: the provider says the token is gone for good.
	VerdictTokenDead
	// VerdictTokenRejected: the provider refused the token; either the token
	// is bad or the app is configured for the wrong environment/topic.
	VerdictTokenRejected
	// VerdictConfig: credentials, topic, project or request shape are wrong;
	// retrying cannot help.
	VerdictConfig
	// VerdictWrongTopic: the token was issued for another topic than the
	// push's (APNs DeviceTokenNotForTopic): the sender picked the wrong
	// token or topic; the token itself is fine.
	VerdictWrongTopic
)

// ClassifiedError is implemented by every error a provider returns.
type ClassifiedError interface {
	error
	Verdict() Verdict
	// Reason is the provider's reason string, e.g. "Unregistered".
	Reason() string
	// RetryAfter is the provider's requested delay, 0 when it gave none.
	RetryAfter() time.Duration
}

// Package push wakes phones: it is the one Sender the rest of sipwake calls
// to deliver a push to APNs or FCM for an RFC 8599 binding. It owns the
// choice of app (by pn-provider and pn-param), the one retry loop with
// jittered backoff inside the caller's deadline, the classification of
// answers into an Outcome the domain acts on, the per-app token-health window
// that decides whether a rejected token may be erased, and the push metrics.
//
// It does not own bindings or decide when to push (internal/relay does), and
// it never speaks a provider's wire protocol itself: internal/push/apns and
// internal/push/fcm do, on the real client libraries. It builds APNs clients
// itself but is handed FCM's constructor (WithFCM), so that it links no
// Firebase SDK.
package push

import (
	"context"

	"github.com/sipwake/sipwake/internal/push/pn"
)

// Provider names as in RFC 8599 pn-provider.
const (
	ProviderAPNs = pn.ProviderAPNs
	ProviderFCM  = pn.ProviderFCM
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
type Outcome = pn.Outcome

// Outcomes; see pn for what each means.
const (
	Delivered     = pn.Delivered
	TokenDead     = pn.TokenDead
	TokenRejected = pn.TokenRejected
	Failed        = pn.Failed
	ConfigError   = pn.ConfigError
	NotSent       = pn.NotSent
	WrongTopic    = pn.WrongTopic
)

// Result is the outcome of one Send.
type Result = pn.Result

// Sender is what the domain calls. Send honours ctx's deadline: it retries
// with jittered backoff only inside it, and never delivers twice (it retries
// only after an answer that proves non-delivery or a transport error).
type Sender interface {
	Send(ctx context.Context, t Target, m Message) Result
}

// MaskToken returns the form of a push token that may appear in logs: its
// last six characters.
func MaskToken(tok string) string { return pn.MaskToken(tok) }

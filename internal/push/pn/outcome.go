package pn

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

// Package apns sends sipwake pushes to Apple Push Notification service over
// HTTP/2 with github.com/sideshow/apns2, using token (.p8) or certificate
// auth. It maps a pn.Message to APNs headers and payload and classifies APNs
// answers into pn verdicts. It does not retry, read config files, or decide
// what to do about a dead token: package push owns all of that.
package apns

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"

	"github.com/sipwake/sipwake/internal/push/pn"
)

// Options configures one APNs client (one app).
type Options struct {
	// Host is the APNs base URL: apns2.HostProduction, apns2.HostDevelopment
	// or a fake's URL.
	Host string
	// BundleID is the app's bundle id; topics are derived from it.
	BundleID string

	// Token auth: all three set.
	TeamID  string
	KeyID   string
	AuthKey *ecdsa.PrivateKey

	// Certificate auth, used when AuthKey is nil.
	Certificate *tls.Certificate

	// RootCAs, when non-nil, replaces the system roots (tests, private
	// gateways).
	RootCAs *x509.CertPool
	// Now is the clock used for apns-expiration; nil means time.Now.
	Now func() time.Time
}

// Client is a long-lived APNs client for one app. Its HTTP/2 transport keeps
// one connection per host and multiplexes pushes over it.
type Client struct {
	c      *apns2.Client
	tr     *http2.Transport
	bundle string
	now    func() time.Time
}

// New builds a client; it does not connect until the first push.
func New(o Options) (*Client, error) {
	if o.BundleID == "" {
		return nil, errors.New("apns: bundle id is empty")
	}
	if o.Host == "" {
		return nil, errors.New("apns: host is empty")
	}
	tlsConf := &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12}
	var c *apns2.Client
	switch {
	case o.AuthKey != nil:
		if o.TeamID == "" || o.KeyID == "" {
			return nil, errors.New("apns: token auth needs team id and key id")
		}
		c = apns2.NewTokenClient(&token.Token{AuthKey: o.AuthKey, KeyID: o.KeyID, TeamID: o.TeamID})
	case o.Certificate != nil:
		c = apns2.NewClient(*o.Certificate)
		tlsConf.Certificates = []tls.Certificate{*o.Certificate}
	default:
		return nil, errors.New("apns: neither auth key nor certificate given")
	}
	tr := &http2.Transport{
		TLSClientConfig: tlsConf,
		// Detect a dead connection (NAT timeout, gateway restart) by ping
		// rather than by a push that never gets an answer.
		ReadIdleTimeout: 15 * time.Second,
		PingTimeout:     5 * time.Second,
	}
	// No http.Client timeout: every push carries its deadline in its context.
	c.HTTPClient = &http.Client{Transport: tr}
	c.Host = strings.TrimSuffix(o.Host, "/")
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Client{c: c, tr: tr, bundle: o.BundleID, now: now}, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Send pushes m to tok, one of t's tokens. pushID becomes the apns-id, so
// retries of one push carry the same id. A nil error means APNs accepted the
// push.
func (c *Client) Send(ctx context.Context, pushID string, tok pn.Token, t pn.Target, m pn.Message) error {
	n := c.notification(pushID, tok, t, m)
	res, err := c.c.PushWithContext(ctx, n)
	if err != nil {
		return transportError(err, tok.Value)
	}
	if res.StatusCode == http.StatusOK {
		return nil
	}
	return &Error{Status: res.StatusCode, reason: res.Reason}
}

// APNs payload limits: 5 KB for VoIP pushes, 4 KB for the others.
const (
	MaxPayload     = 4096
	MaxVoIPPayload = 5120
)

// notification maps a message to APNs headers and payload.
func (c *Client) notification(pushID string, tok pn.Token, t pn.Target, m pn.Message) *apns2.Notification {
	n := &apns2.Notification{ApnsID: pushID, DeviceToken: tok.Value, Topic: c.bundle,
		PushType: apns2.PushTypeAlert, Priority: apns2.PriorityHigh}
	if m.Expiration > 0 {
		n.Expiration = c.now().Add(m.Expiration)
	}
	limit := MaxPayload
	switch {
	case tok.Service == pn.ServiceVoIP: // pn.Route sends only calls here
		n.Topic = c.bundle + ".voip"
		n.PushType = apns2.PushTypeVOIP
		n.CollapseID = CollapseID(m.CallID)
		limit = MaxVoIPPayload
	case background(m):
		// Apple: background pushes go at priority 5.
		n.PushType = apns2.PushTypeBackground
		n.Priority = apns2.PriorityLow
	case m.Kind == pn.KindCall || m.Kind == pn.KindCancel:
		// The alert that stands for a call and the one that ends it
		// replace each other on the lock screen.
		n.CollapseID = CollapseID(m.CallID)
	}
	var body []byte // apns2 sends bytes as they are
	pn.Fit(m, limit, func(m pn.Message) int {
		body, _ = json.Marshal(c.payload(pushID, tok, t, m)) // strings, numbers, maps: cannot fail
		return len(body)
	})
	n.Payload = body
	return n
}

// background: nothing to show, the app refreshes its registration or
// stops ringing.
func background(m pn.Message) bool {
	return m.Kind == pn.KindRegister || (m.Kind == pn.KindCancel && m.Reason == pn.ReasonAnsweredElsewhere)
}

// payload is the JSON of one push: sipwake's own fields, and what a stock
// Linphone app reads (Flexisip's apple-request.cc: loc-key, loc-args,
// call-id, uuid and send-time inside aps for a VoIP push, beside it for an
// alert; from-uri, display-name and pn_ttl beside it).
func (c *Client) payload(pushID string, tok pn.Token, t pn.Target, m pn.Message) map[string]any {
	p := map[string]any{}
	for k, v := range m.Fields(pushID) {
		p[k] = v
	}
	alerts, who := t.Alerts.OrDefaults(), []string{m.Who()}
	aps := map[string]any{}
	callInfo := p // where call-id, uuid and send-time go
	switch {
	case tok.Service == pn.ServiceVoIP:
		aps["sound"], aps["loc-key"], aps["loc-args"] = "", alerts.CallStr, who
		callInfo = aps
	case m.Kind == pn.KindCall: // a device without a PushKit token
		aps["alert"] = map[string]any{"loc-key": alerts.CallStr, "loc-args": who}
		aps["sound"], aps["mutable-content"] = alerts.CallSound, 1
	case m.Kind == pn.KindMessage:
		aps["alert"] = map[string]any{"loc-key": alerts.MsgStr, "loc-args": who}
		aps["sound"], aps["mutable-content"], aps["badge"] = alerts.MsgSound, 1, 1
		p["chat-room-addr"] = ""
	case m.Kind == pn.KindCancel && m.Reason == pn.ReasonMissed:
		aps["alert"] = map[string]any{"loc-key": alerts.MissedCallStr, "loc-args": who}
		aps["thread-id"] = "missed-calls"
	case m.Kind == pn.KindExpiryWarning:
		aps["alert"] = map[string]any{
			"title": "Calls will stop reaching this phone",
			"body":  "Open the app once to keep receiving calls.",
		}
		callInfo = nil
	default: // background
		aps["content-available"] = 1
		callInfo = nil
	}
	if callInfo != nil {
		callInfo["call-id"], callInfo["uuid"], callInfo["send-time"] = m.CallID, t.Instance, pn.SendTime(c.now())
		p["from-uri"], p["display-name"], p["pn_ttl"] = m.CallerURI, m.CallerName, int(m.Expiration/time.Second)
	}
	p["aps"] = aps
	return p
}

// CollapseID derives the apns-collapse-id for a call. APNs limits it to 64
// bytes, so long SIP Call-IDs are hashed.
func CollapseID(callID string) string {
	if callID == "" {
		return ""
	}
	id := "call-" + callID
	if len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(callID))
	return "call-" + hex.EncodeToString(sum[:16])
}

// Error is an APNs answer other than 200, or a transport failure (Status 0).
type Error struct {
	Status int
	reason string
	err    error
}

func transportError(err error, tok string) *Error {
	// url.Error carries the request URL, which ends in the device token.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if strings.Contains(err.Error(), tok) {
		err = errors.New(strings.ReplaceAll(err.Error(), tok, pn.MaskToken(tok)))
	}
	return &Error{err: err}
}

func (e *Error) Error() string {
	if e.err != nil {
		return "apns: transport: " + e.err.Error()
	}
	return "apns: " + strconv.Itoa(e.Status) + " " + e.reason
}

func (e *Error) Unwrap() error { return e.err }

// Reason is the APNs reason string ("Unregistered", "BadDeviceToken", …), or
// "transport" for a failure before any response.
func (e *Error) Reason() string {
	if e.Status == 0 {
		return "transport"
	}
	if e.reason == "" {
		return http.StatusText(e.Status)
	}
	return e.reason
}

// RetryAfter: APNs does not send Retry-After.
func (e *Error) RetryAfter() time.Duration { return 0 }

// Verdict classifies the answer per Apple's "Handling notification responses
// from APNs" table.
func (e *Error) Verdict() pn.Verdict {
	switch {
	case e.Status == 0:
		return pn.VerdictRetry
	case e.Status == http.StatusGone:
		return pn.VerdictTokenDead
	case e.Status == http.StatusBadRequest && e.reason == apns2.ReasonBadDeviceToken:
		return pn.VerdictTokenRejected
	case e.Status == http.StatusBadRequest && e.reason == apns2.ReasonDeviceTokenNotForTopic:
		return pn.VerdictWrongTopic
	case e.Status == http.StatusTooManyRequests, e.Status >= 500:
		return pn.VerdictRetry
	case e.Status >= 400:
		// 400 bad topic/headers, 403 credentials, 404/405 path, 413 size:
		// our configuration or our bug, never fixed by retrying.
		return pn.VerdictConfig
	}
	return pn.VerdictRetry
}

var _ pn.ClassifiedError = (*Error)(nil)

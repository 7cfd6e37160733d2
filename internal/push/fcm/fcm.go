// Package fcm sends sipwake pushes through Firebase Cloud Messaging HTTP v1
// with firebase.google.com/go/v4/messaging, authenticated by a service-account
// key. It maps a pn.Message to a data-only FCM message and classifies FCM
// answers into pn verdicts. It does not retry (it also stops the Firebase
// library from retrying on its own, so that every retry is decided in package
// push), read config files, or decide what to do about a dead token.
package fcm

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/option"

	"github.com/sipwake/sipwake/internal/push/pn"
)

// DefaultEndpoint is the FCM HTTP v1 base URL.
const DefaultEndpoint = "https://fcm.googleapis.com/v1"

// Scope is the OAuth scope FCM sends need.
const Scope = "https://www.googleapis.com/auth/firebase.messaging"

// Options configures one FCM client; package push builds it from an app's
// config.
type Options = pn.FCMOptions

// Client is a long-lived FCM client for one project; its transport keeps
// HTTP/2 connections open across pushes.
type Client struct {
	mc  *messaging.Client
	tr  *http.Transport
	now func() time.Time
}

// New builds a client. ctx is only used while building; the token source
// lives as long as the client.
func New(ctx context.Context, o Options) (*Client, error) {
	if o.ProjectID == "" {
		return nil, errors.New("fcm: project id is empty")
	}
	endpoint := o.Endpoint
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	// The oauth2 package fetches tokens with the client found in the
	// context it was built with; this one trusts RootCAs and cannot hang.
	tokenCtx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient,
		&http.Client{Transport: tr, Timeout: 10 * time.Second})
	creds, err := google.CredentialsFromJSONWithType(tokenCtx, o.CredentialsJSON, google.ServiceAccount, Scope)
	if err != nil {
		return nil, fmt.Errorf("fcm: service account credentials: %w", err)
	}
	hc := &http.Client{Transport: &noRetry{base: &oauth2.Transport{Source: creds.TokenSource, Base: tr}}}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: o.ProjectID},
		option.WithHTTPClient(hc), option.WithEndpoint(endpoint))
	if err != nil {
		return nil, fmt.Errorf("fcm: firebase app: %w", err)
	}
	mc, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("fcm: messaging client: %w", err)
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Client{mc: mc, tr: tr, now: now}, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

// Send pushes m to tok as a data-only message. A nil error means FCM
// accepted it.
func (c *Client) Send(ctx context.Context, pushID string, tok pn.Token, t pn.Target, m pn.Message) error {
	at := &attempt{}
	ctx = context.WithValue(ctx, attemptKey{}, at)
	_, err := c.mc.Send(ctx, Build(pushID, tok.Value, t, m, c.now()))
	if err == nil {
		return nil
	}
	return classify(err, at, tok.Value)
}

// MaxData is FCM's limit on a message's data payload.
const MaxData = 4096

// Build maps a message to FCM. Data-only, so the app decides what to show;
// high priority for what the user must see at once (calls, their end,
// messages) so a dozing Android wakes. The data holds sipwake's own fields
// and what a stock Linphone app reads (Flexisip's firebase-v1-request.cc:
// call-id, uuid, from-uri, display-name, sip-from, loc-key, loc-args,
// send-time).
func Build(pushID, tok string, t pn.Target, m pn.Message, sent time.Time) *messaging.Message {
	ac := &messaging.AndroidConfig{Priority: "normal"}
	switch m.Kind {
	case pn.KindCall, pn.KindCancel, pn.KindMessage:
		ac.Priority = "high"
	}
	if m.Expiration > 0 {
		ttl := m.Expiration
		ac.TTL = &ttl
	}
	var data map[string]string
	pn.Fit(m, MaxData, func(m pn.Message) int {
		data = fields(pushID, t, m, sent)
		size := 0 // what FCM counts: keys and values
		for k, v := range data {
			size += len(k) + len(v)
		}
		return size
	})
	return &messaging.Message{Token: tok, Data: data, Android: ac}
}

func fields(pushID string, t pn.Target, m pn.Message, sent time.Time) map[string]string {
	data := m.Fields(pushID)
	alerts := t.Alerts.OrDefaults()
	var locKey string
	switch {
	case m.Kind == pn.KindCall:
		locKey = alerts.CallStr
	case m.Kind == pn.KindMessage:
		locKey = alerts.MsgStr
	case m.Kind == pn.KindCancel && m.Reason == pn.ReasonAnsweredElsewhere:
		locKey = alerts.AcceptedElsewhereStr
	case m.Kind == pn.KindCancel:
		locKey = alerts.MissedCallStr
	default:
		return data
	}
	for k, v := range map[string]string{
		"call-id": m.CallID, "uuid": t.Instance, "from-uri": m.CallerURI, "display-name": m.CallerName,
		"sip-from": cmp.Or(m.CallerName, m.CallerURI), "loc-key": locKey, "loc-args": m.Who(),
		"send-time": pn.SendTime(sent),
	} {
		data[k] = v
	}
	return data
}

// attempt is what the transport saw for one Send, before the Firebase
// library turned it into its own error.
type attempt struct {
	status     int
	retryAfter time.Duration
	err        error
}

type attemptKey struct{}

// noRetry sits between the Firebase library and the network. The library
// retries 503s and transport errors itself (up to four times, with delays of
// seconds); push retries in one place, so this turns both into a plain 500
// the library gives up on, and keeps the truth in the request's attempt.
type noRetry struct{ base http.RoundTripper }

func (n *noRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	at, _ := req.Context().Value(attemptKey{}).(*attempt)
	if at == nil {
		at = &attempt{}
	}
	resp, err := n.base.RoundTrip(req)
	if err != nil {
		at.err = err
		return &http.Response{
			StatusCode: http.StatusInternalServerError,
			Status:     "500 Internal Server Error",
			Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header:  http.Header{"Content-Type": {"application/json"}},
			Body:    io.NopCloser(strings.NewReader(`{"error":{"code":500,"status":"INTERNAL","message":"sipwake: transport error"}}`)),
			Request: req,
		}, nil
	}
	at.status = resp.StatusCode
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		at.retryAfter = time.Duration(s) * time.Second
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		resp.StatusCode = http.StatusInternalServerError
		resp.Status = "500 Internal Server Error"
	}
	return resp, nil
}

// Error is an FCM error answer, an OAuth failure or a transport failure.
type Error struct {
	Status     int    // HTTP status FCM answered, 0 if none
	Code       string // FCM error code (UNREGISTERED, …), "OAUTH", "TRANSPORT" or "UNKNOWN"
	Message    string
	verdict    pn.Verdict
	retryAfter time.Duration
	err        error
}

func classify(err error, at *attempt, tok string) *Error {
	e := &Error{Status: at.status, retryAfter: at.retryAfter, Message: err.Error()}
	if at.err != nil {
		e.err = at.err
		e.Message = at.err.Error()
		var re *oauth2.RetrieveError
		if errors.As(at.err, &re) {
			e.Code = "OAUTH"
			code := re.ErrorCode
			if code == "" {
				// The JWT token source leaves the body unparsed.
				var b struct {
					Error string `json:"error"`
				}
				_ = json.Unmarshal(re.Body, &b)
				code = b.Error
			}
			if code != "" {
				e.Code = "OAUTH:" + code
			}
			e.verdict = pn.VerdictRetry
			if re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 &&
				re.Response.StatusCode != http.StatusTooManyRequests {
				e.verdict = pn.VerdictConfig // key revoked, wrong key, clock skew
			}
		} else {
			e.Code = "TRANSPORT"
			e.verdict = pn.VerdictRetry
		}
	} else {
		e.Code, e.verdict = verdictOf(err, at.status)
	}
	e.Message = strings.ReplaceAll(e.Message, tok, pn.MaskToken(tok))
	return e
}

func verdictOf(err error, status int) (string, pn.Verdict) {
	switch {
	case messaging.IsUnregistered(err):
		return "UNREGISTERED", pn.VerdictTokenDead
	case messaging.IsSenderIDMismatch(err):
		return "SENDER_ID_MISMATCH", pn.VerdictTokenRejected
	case messaging.IsQuotaExceeded(err):
		return "QUOTA_EXCEEDED", pn.VerdictRetry
	case messaging.IsUnavailable(err), status == http.StatusServiceUnavailable:
		return "UNAVAILABLE", pn.VerdictRetry
	case messaging.IsInternal(err):
		return "INTERNAL", pn.VerdictRetry
	case messaging.IsThirdPartyAuthError(err):
		return "THIRD_PARTY_AUTH_ERROR", pn.VerdictConfig
	case messaging.IsInvalidArgument(err), errorutils.IsInvalidArgument(err):
		// FCM answers INVALID_ARGUMENT both for a malformed registration
		// token and for a malformed message; only the former is the token's
		// fault.
		if strings.Contains(strings.ToLower(err.Error()), "registration token") {
			return "INVALID_ARGUMENT", pn.VerdictTokenRejected
		}
		return "INVALID_ARGUMENT", pn.VerdictConfig
	case errorutils.IsUnauthenticated(err):
		return "UNAUTHENTICATED", pn.VerdictConfig
	case errorutils.IsPermissionDenied(err):
		return "PERMISSION_DENIED", pn.VerdictConfig
	case errorutils.IsNotFound(err):
		return "NOT_FOUND", pn.VerdictConfig
	case errorutils.IsResourceExhausted(err), status == http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED", pn.VerdictRetry
	case status >= 500:
		return "INTERNAL", pn.VerdictRetry
	case status >= 400:
		return "UNKNOWN", pn.VerdictConfig
	}
	return "UNKNOWN", pn.VerdictRetry
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("fcm: %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("fcm: %s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.err }

// Verdict says what the error means for the token and for retries.
func (e *Error) Verdict() pn.Verdict { return e.verdict }

// Reason is the FCM error code.
func (e *Error) Reason() string { return e.Code }

// RetryAfter is FCM's Retry-After, if it sent one.
func (e *Error) RetryAfter() time.Duration { return e.retryAfter }

var _ pn.ClassifiedError = (*Error)(nil)

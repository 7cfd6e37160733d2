package pushtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
)

// APNsOptions configures a fake APNs.
type APNsOptions struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// Dir receives the key, CA and client-certificate files; default a new
	// temporary directory (removed by Close).
	Dir string
	// TeamID, KeyID and BundleID the fake accepts; defaults "TEAM123456",
	// "KEYID12345", "org.sipwake.test".
	TeamID, KeyID, BundleID string
	// OnPush, if set, is called for every push after it is recorded.
	OnPush func(Push)
}

// APNs is a fake Apple Push Notification service: HTTP/2 over TLS, POST
// /3/device/{token}, JWT (ES256) or client-certificate auth, real headers,
// status codes and {"reason": …} bodies.
//
// Like APNs it only delivers to device tokens it issued, each for one topic:
// take tokens from VoIPToken or RemoteToken, or register a captured one with
// BindToken. An APNs and the sandbox started beside it (StartSandbox) issue
// tokens separately, as Apple's production and sandbox environments do.
type APNs struct {
	recorder
	connCounter

	// URL is the fake's base URL, for push.APNsConfig.Endpoint.
	URL string
	// Files written into Dir.
	Dir, KeyFile, CAFile, ClientCertFile string
	TeamID, KeyID, BundleID              string

	// tokens maps each device token the fake issued (lower-case hex) to the
	// topic it was issued for.
	tokens registry
	// env salts the tokens VoIPToken and RemoteToken derive, so that the
	// sandbox's tokens for i differ from production's.
	env string
	// provider is the pn-provider of the fake's devices: "apns", or
	// "apns.dev" for a sandbox.
	provider string
	sandbox  atomic.Pointer[APNs]

	pub     *ecdsa.PublicKey
	ca      *peertest.CA
	srv     *http.Server
	closing chan struct{}
	once    sync.Once
	tmpDir  bool
}

// providerAPNsSandbox is liblinphone's pn-provider for tokens of the APNs
// sandbox (development builds).
const providerAPNsSandbox = "apns.dev"

// NewAPNs starts a fake APNs for a test and closes it when the test ends.
func NewAPNs(tb testing.TB) *APNs {
	tb.Helper()
	f, err := StartAPNs(APNsOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.Close)
	return f
}

// StartAPNs starts a fake APNs.
func StartAPNs(o APNsOptions) (*APNs, error) {
	f := &APNs{
		recorder: newRecorder(o.OnPush),
		TeamID:   def(o.TeamID, "TEAM123456"),
		KeyID:    def(o.KeyID, "KEYID12345"),
		BundleID: def(o.BundleID, "org.sipwake.test"),
		provider: push.ProviderAPNs,
		closing:  make(chan struct{}),
	}
	dir, tmp, err := ensureDir(o.Dir, "pushtest-apns-")
	if err != nil {
		return nil, err
	}
	f.Dir, f.tmpDir = dir, tmp
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	f.pub = &key.PublicKey
	p8, err := pkcs8PEM(key)
	if err != nil {
		return nil, err
	}
	if f.KeyFile, err = writeFile(dir, "apns-AuthKey_"+f.KeyID+".p8", p8); err != nil {
		return nil, err
	}
	if f.ca, err = peertest.NewCA("fake APNs test CA"); err != nil {
		return nil, err
	}
	if f.CAFile, err = writeFile(dir, "apns-ca.pem", f.ca.PEM()); err != nil {
		return nil, err
	}
	client, err := f.ca.Issue("Apple VoIP Services: " + f.BundleID)
	if err != nil {
		return nil, err
	}
	cp, err := certPEM(client)
	if err != nil {
		return nil, err
	}
	if f.ClientCertFile, err = writeFile(dir, "apns-client.pem", cp); err != nil {
		return nil, err
	}
	if err := f.listen(def(o.Addr, "127.0.0.1:0"), "fake APNs"); err != nil {
		return nil, err
	}
	return f, nil
}

// StartSandbox starts the sandbox beside f, as Apple runs one beside
// production: the same auth key, client-certificate CA and bundle are
// accepted (one .p8 key works in both environments), but the sandbox has
// its own URL, records its own pushes and issues its own device tokens, so
// a token sent to the wrong environment is answered 400 BadDeviceToken.
// Its server certificate comes from f's CA, so f.CAFile trusts both. App
// and CertApp called afterwards point push.APNsConfig.SandboxEndpoint at
// it. It closes when the test ends.
func (f *APNs) StartSandbox(tb testing.TB) *APNs {
	tb.Helper()
	s, err := f.startSandbox("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

func (f *APNs) startSandbox(addr string) (*APNs, error) {
	s := &APNs{
		recorder: newRecorder(nil),
		Dir:      f.Dir, KeyFile: f.KeyFile, CAFile: f.CAFile, ClientCertFile: f.ClientCertFile,
		TeamID: f.TeamID, KeyID: f.KeyID, BundleID: f.BundleID,
		env:      "sandbox-",
		provider: providerAPNsSandbox,
		pub:      f.pub,
		ca:       f.ca,
		closing:  make(chan struct{}),
	}
	if !f.sandbox.CompareAndSwap(nil, s) {
		return nil, errors.New("pushtest: fake APNs sandbox already started")
	}
	if err := s.listen(addr, "fake APNs sandbox"); err != nil {
		f.sandbox.Store(nil)
		return nil, err
	}
	return s, nil
}

// listen serves the fake on addr with a server certificate from its CA.
func (f *APNs) listen(addr, name string) error {
	serverCert, err := f.ca.Issue(name, serverHosts(addr)...)
	if err != nil {
		return err
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    f.ca.Pool(),
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS12,
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pushtest: %s listen: %w", name, err)
	}
	f.URL = "https://" + ln.Addr().String()
	f.srv = &http.Server{Handler: http.HandlerFunc(f.serve), TLSConfig: tlsConf, ErrorLog: discardLog(), ConnState: f.countConn}
	go func() { _ = f.srv.ServeTLS(ln, "", "") }()
	return nil
}

// Close stops the fake, releases stalled requests and removes a temporary
// Dir.
func (f *APNs) Close() {
	f.once.Do(func() {
		close(f.closing)
		_ = f.srv.Close()
		if f.tmpDir {
			_ = os.RemoveAll(f.Dir)
		}
	})
}

// App returns a push.AppConfig using token (.p8) auth against the fake
// (and its sandbox, if started).
func (f *APNs) App(name string) push.AppConfig {
	return push.AppConfig{Name: name, Provider: push.ProviderAPNs, APNs: push.APNsConfig{
		BundleID: f.BundleID, TeamID: f.TeamID, KeyID: f.KeyID, KeyFile: f.KeyFile,
		Endpoint: f.URL, SandboxEndpoint: f.sandboxURL(), CAFile: f.CAFile,
	}}
}

// CertApp returns a push.AppConfig using certificate auth against the fake
// (and its sandbox, if started).
func (f *APNs) CertApp(name string) push.AppConfig {
	return push.AppConfig{Name: name, Provider: push.ProviderAPNs, APNs: push.APNsConfig{
		BundleID: f.BundleID, TeamID: f.TeamID, CertFile: f.ClientCertFile,
		Endpoint: f.URL, SandboxEndpoint: f.sandboxURL(), CAFile: f.CAFile,
	}}
}

func (f *APNs) sandboxURL() string {
	if s := f.sandbox.Load(); s != nil {
		return s.URL
	}
	return ""
}

// Param is the pn-param an app registered with the fake's bundle sends.
func (f *APNs) Param() string { return f.TeamID + "." + f.BundleID + ".voip" }

// Target returns a push target for token on the fake's app; on a sandbox
// its pn-provider is "apns.dev", as a development build sends.
func (f *APNs) Target(token string) push.Target {
	return push.Target{Provider: f.provider, Token: token, Param: f.Param()}
}

// BindToken registers token as one the fake issued for topic: "<bundle>.voip"
// for a PushKit token, "<bundle>" for a remote-notification token. Use it
// for tokens copied from a real device's capture.
func (f *APNs) BindToken(token, topic string) {
	f.tokens.bind(strings.ToLower(token), topic)
}

// VoIPToken returns a PushKit token for i, bound to the topic
// "<bundle>.voip": APNsToken(i) on a production fake; on a sandbox another
// token, as Apple's environments never issue the same one.
func (f *APNs) VoIPToken(i int) string {
	tok := APNsToken(i)
	if f.env != "" {
		tok = hexSum(f.env + "device-" + strconv.Itoa(i))
	}
	f.BindToken(tok, f.BundleID+".voip")
	return tok
}

// RemoteToken returns a remote-notification token for i (alert and
// background pushes), bound to the topic "<bundle>"; distinct from
// VoIPToken(i), as an iPhone's two tokens are.
func (f *APNs) RemoteToken(i int) string {
	tok := hexSum(f.env + "remote-" + strconv.Itoa(i))
	f.BindToken(tok, f.BundleID)
	return tok
}

// APNsToken returns a well-formed, distinct device token for i. A fake
// delivers to it only once bound (VoIPToken binds it).
func APNsToken(i int) string { return hexSum("device-" + strconv.Itoa(i)) }

// hexSum derives a 64-hex-digit token.
func hexSum(s string) string {
	sum := sha256.Sum256([]byte("sipwake-" + s))
	return hex.EncodeToString(sum[:])
}

var (
	hexToken = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	uuidRe   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// maxBody is how much of a request body the fakes read: more than any
// payload limit, so that a larger body is still answered as too large.
const maxBody = 64 << 10

func (f *APNs) serve(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor != 2 {
		http.Error(w, "APNs speaks HTTP/2 only", http.StatusHTTPVersionNotSupported)
		return
	}
	tok, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok {
		apnsReply(w, "", http.StatusNotFound, "BadPath")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	p := Push{Provider: f.provider, Token: tok, Header: r.Header.Clone(), Payload: jsonOrString(body), At: time.Now()}
	status, reason := f.check(r, tok, body)
	if status == 0 {
		if b, ok := f.behavior(tok); ok {
			if b.Stall {
				f.record(p)
				_ = waitClosed(r.Context(), f.closing)
				return
			}
			status, reason = b.Status, b.Reason
		}
	}
	if status == 0 {
		status = http.StatusOK
	}
	p.Status, p.Reason = status, reason
	f.record(p)
	apnsReply(w, r.Header.Get("apns-id"), status, reason)
}

// check validates auth, headers, device token and payload the way APNs
// does; 0 means APNs would deliver the push.
func (f *APNs) check(r *http.Request, tok string, body []byte) (int, string) {
	if r.Method != http.MethodPost {
		return http.StatusMethodNotAllowed, "MethodNotAllowed"
	}
	certAuth := r.TLS != nil && len(r.TLS.VerifiedChains) > 0
	authz := r.Header.Get("Authorization")
	switch {
	case authz != "":
		if st, reason := f.checkJWT(authz); st != 0 {
			return st, reason
		}
	case !certAuth:
		return http.StatusForbidden, "MissingProviderToken"
	}
	topic := r.Header.Get("apns-topic")
	pushType := r.Header.Get("apns-push-type")
	switch {
	case topic == "" && !certAuth:
		return http.StatusBadRequest, "MissingTopic"
	case topic == "":
		topic = f.BundleID
	}
	// TopicDisallowed: the key or certificate may not push to this topic
	// (the fake's credentials serve one bundle and its .voip topic).
	switch pushType {
	case "voip":
		if topic != f.BundleID+".voip" {
			return http.StatusBadRequest, "TopicDisallowed"
		}
	case "alert", "background":
		if topic != f.BundleID {
			return http.StatusBadRequest, "TopicDisallowed"
		}
	default:
		return http.StatusBadRequest, "InvalidPushType"
	}
	// APNs takes a missing apns-priority as 10.
	priority := def(r.Header.Get("apns-priority"), "10")
	switch {
	case priority != "10" && priority != "5" && priority != "1":
		return http.StatusBadRequest, "BadPriority"
	case pushType == "background" && priority != "5":
		// Apple: a background push must carry apns-priority 5; 10 is an
		// error.
		return http.StatusBadRequest, "BadPriority"
	case pushType == "voip" && priority != "10":
		// Apple: VoIP pushes go at priority 10; 5 is refused.
		return http.StatusBadRequest, "BadPriority"
	}
	if exp := r.Header.Get("apns-expiration"); exp != "" {
		if _, err := strconv.ParseInt(exp, 10, 64); err != nil {
			return http.StatusBadRequest, "BadExpirationDate"
		}
	}
	if len(r.Header.Get("apns-collapse-id")) > 64 {
		return http.StatusBadRequest, "BadCollapseId"
	}
	if id := r.Header.Get("apns-id"); id != "" && !uuidRe.MatchString(id) {
		return http.StatusBadRequest, "BadMessageId"
	}
	if !hexToken.MatchString(tok) {
		return http.StatusBadRequest, "BadDeviceToken"
	}
	switch issuedFor, ok := f.tokens.lookup(strings.ToLower(tok)); {
	case !ok:
		// Not a token this environment issued: made up, or a sandbox
		// token sent to production (or the reverse).
		return http.StatusBadRequest, "BadDeviceToken"
	case issuedFor != topic:
		// A PushKit token gets VoIP pushes only, a remote-notification
		// token everything else.
		return http.StatusBadRequest, "DeviceTokenNotForTopic"
	}
	limit := 4096
	if pushType == "voip" {
		limit = 5120
	}
	if len(body) > limit {
		return http.StatusRequestEntityTooLarge, "PayloadTooLarge"
	}
	var payload struct {
		APS map[string]json.RawMessage `json:"aps"`
	}
	if len(body) == 0 || json.Unmarshal(body, &payload) != nil || payload.APS == nil {
		return http.StatusBadRequest, "PayloadEmpty"
	}
	if pushType == "background" && !backgroundAPS(payload.APS) {
		// Apple lists no reason for a payload that is not what its
		// apns-push-type says. InvalidPushType is the nearest: the type
		// claimed does not fit the push (PayloadEmpty means no payload
		// at all, and the fake keeps it for a missing aps).
		return http.StatusBadRequest, "InvalidPushType"
	}
	return 0, ""
}

// backgroundAPS tells whether aps is what Apple requires of a background
// push: "content-available": 1 and nothing for the user to see or hear.
func backgroundAPS(aps map[string]json.RawMessage) bool {
	for _, k := range []string{"alert", "sound", "badge"} {
		if _, ok := aps[k]; ok {
			return false
		}
	}
	return string(aps["content-available"]) == "1"
}

// checkJWT verifies an APNs provider token: ES256 over header.claims with the
// fake's key, matching kid and iss, iat at most an hour old.
func (f *APNs) checkJWT(authz string) (int, string) {
	const bad = "InvalidProviderToken"
	jwt, ok := strings.CutPrefix(authz, "bearer ")
	if !ok {
		return http.StatusForbidden, bad
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return http.StatusForbidden, bad
	}
	var hdr struct{ Alg, Kid string }
	var claims struct {
		Iss string `json:"iss"`
		Iat int64  `json:"iat"`
	}
	if decodeSegment(parts[0], &hdr) != nil || decodeSegment(parts[1], &claims) != nil {
		return http.StatusForbidden, bad
	}
	if hdr.Alg != "ES256" || hdr.Kid != f.KeyID || claims.Iss != f.TeamID {
		return http.StatusForbidden, bad
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return http.StatusForbidden, bad
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	rr, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(f.pub, h[:], rr, ss) {
		return http.StatusForbidden, bad
	}
	iat := time.Unix(claims.Iat, 0)
	if time.Since(iat) > time.Hour {
		return http.StatusForbidden, "ExpiredProviderToken"
	}
	if time.Until(iat) > time.Minute {
		return http.StatusForbidden, bad
	}
	return 0, ""
}

func apnsReply(w http.ResponseWriter, apnsID string, status int, reason string) {
	if apnsID == "" {
		apnsID = newUUID()
	}
	w.Header().Set("apns-id", apnsID)
	if status == http.StatusOK {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	body := map[string]any{"reason": reason}
	if status == http.StatusGone {
		body["timestamp"] = time.Now().UnixMilli()
	}
	_ = json.NewEncoder(w).Encode(body)
}

func decodeSegment(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func jsonOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func def(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func ensureDir(dir, pattern string) (string, bool, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", false, err
		}
		return dir, false, nil
	}
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", false, err
	}
	return d, true, nil
}

var errClosed = errors.New("pushtest: fake closed")

// waitClosed is used by handlers that stall.
func waitClosed(ctx context.Context, closing <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-closing:
		return errClosed
	}
}

// Conns counts TCP connections accepted so far; a client that reuses its
// HTTP/2 connection keeps it at 1.
func (f *APNs) Conns() int { return f.connCounter.get() }

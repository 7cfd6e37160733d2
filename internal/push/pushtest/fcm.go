package pushtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
)

// FCMOptions configures a fake FCM.
type FCMOptions struct {
	// Addr to listen on; default "127.0.0.1:0".
	Addr string
	// Dir receives the service-account JSON and CA files; default a new
	// temporary directory (removed by Close).
	Dir string
	// ProjectID the fake serves; default "sipwake-test".
	ProjectID string
	// SenderID is the project's number, which the tokens the fake issues
	// are bound to; default "123456789012".
	SenderID string
	// OnPush, if set, is called for every push after it is recorded.
	OnPush func(Push)
}

// FCM is a fake Firebase Cloud Messaging HTTP v1 service with its own OAuth
// token endpoint (RS256 JWT-bearer grant). It answers with FCM's real error
// shapes. Like FCM it only delivers to registration tokens it issued for
// its sender id: take them from Token, or register others with BindToken.
type FCM struct {
	recorder
	connCounter

	// URL is the fake's base URL; push.FCMConfig.Endpoint is URL+"/v1".
	URL string
	// TokenURL is the OAuth endpoint the service-account file points at.
	TokenURL string
	// Files written into Dir.
	Dir, CredentialsFile, CAFile string
	ProjectID, ClientEmail       string
	// SenderID is the Firebase project number.
	SenderID string

	// tokens maps each registration token the fake issued to the sender
	// id it was issued for.
	tokens registry

	key           *rsa.PrivateKey
	keyID         string
	tokenRequests atomic.Int64

	mu     sync.Mutex
	access map[string]time.Time // issued access tokens and their expiry

	srv     *http.Server
	closing chan struct{}
	once    sync.Once
	tmpDir  bool
}

// NewFCM starts a fake FCM for a test and closes it when the test ends.
func NewFCM(tb testing.TB) *FCM {
	tb.Helper()
	f, err := StartFCM(FCMOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(f.Close)
	return f
}

// serviceAccountKey is the key of every fake's service account, made once a
// process: a 2048-bit RSA key takes tens of milliseconds, and push's tests
// alone start dozens of fakes. Each fake still has its own key id, CA and
// address; WriteForeignServiceAccount makes a key no fake knows.
var serviceAccountKey = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
})

// StartFCM starts a fake FCM.
func StartFCM(o FCMOptions) (*FCM, error) {
	f := &FCM{
		recorder:  newRecorder(o.OnPush),
		ProjectID: def(o.ProjectID, "sipwake-test"),
		SenderID:  def(o.SenderID, "123456789012"),
		access:    map[string]time.Time{},
		closing:   make(chan struct{}),
		keyID:     newUUID(),
	}
	f.ClientEmail = "sipwake@" + f.ProjectID + ".iam.gserviceaccount.com"
	dir, tmp, err := ensureDir(o.Dir, "pushtest-fcm-")
	if err != nil {
		return nil, err
	}
	f.Dir, f.tmpDir = dir, tmp
	if f.key, err = serviceAccountKey(); err != nil {
		return nil, err
	}
	ca, err := peertest.NewCA("fake FCM test CA")
	if err != nil {
		return nil, err
	}
	if f.CAFile, err = writeFile(dir, "fcm-ca.pem", ca.PEM()); err != nil {
		return nil, err
	}
	addr := def(o.Addr, "127.0.0.1:0")
	serverCert, err := ca.Issue("fake FCM", serverHosts(addr)...)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pushtest: fake FCM listen: %w", err)
	}
	f.URL = "https://" + ln.Addr().String()
	f.TokenURL = f.URL + "/token"
	if f.CredentialsFile, err = f.writeServiceAccount(filepath.Join(dir, "fcm-service-account.json"), f.key, f.keyID); err != nil {
		_ = ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.serveToken)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", f.serveSend)
	f.srv = &http.Server{Handler: mux, ErrorLog: discardLog(), ConnState: f.countConn, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}}
	go func() { _ = f.srv.ServeTLS(ln, "", "") }()
	return f, nil
}

// Close stops the fake, releases stalled requests and removes a temporary
// Dir.
func (f *FCM) Close() {
	f.once.Do(func() {
		close(f.closing)
		_ = f.srv.Close()
		if f.tmpDir {
			_ = os.RemoveAll(f.Dir)
		}
	})
}

// App returns a push.AppConfig for the fake's project.
func (f *FCM) App(name string) push.AppConfig {
	return push.AppConfig{Name: name, Provider: push.ProviderFCM, FCM: push.FCMConfig{
		ProjectID: f.ProjectID, SenderID: f.SenderID, CredentialsFile: f.CredentialsFile,
		Endpoint: f.URL + "/v1", CAFile: f.CAFile,
	}}
}

// BindToken registers token as one FCM issued to an app of senderID, the
// project number the app was built with.
func (f *FCM) BindToken(token, senderID string) { f.tokens.bind(token, senderID) }

// Token returns FCMToken(i), bound to the fake's SenderID.
func (f *FCM) Token(i int) string {
	tok := FCMToken(i)
	f.BindToken(tok, f.SenderID)
	return tok
}

// Target returns a push target for token on the fake's project.
func (f *FCM) Target(token string) push.Target {
	return push.Target{Provider: push.ProviderFCM, Token: token, Param: f.ProjectID}
}

// TokenRequests counts OAuth token requests received.
func (f *FCM) TokenRequests() int { return int(f.tokenRequests.Load()) }

// WriteForeignServiceAccount writes a well-formed service-account file whose
// key the fake does not know (for bad-credential tests).
func (f *FCM) WriteForeignServiceAccount(path string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	_, err = f.writeServiceAccount(path, k, newUUID())
	return err
}

func (f *FCM) writeServiceAccount(path string, key *rsa.PrivateKey, keyID string) (string, error) {
	pk, err := pkcs8PEM(key)
	if err != nil {
		return "", err
	}
	sa := map[string]string{
		"type":                        "service_account",
		"project_id":                  f.ProjectID,
		"private_key_id":              keyID,
		"private_key":                 string(pk),
		"client_email":                f.ClientEmail,
		"client_id":                   "100000000000000000001",
		"auth_uri":                    f.URL + "/auth",
		"token_uri":                   f.TokenURL,
		"auth_provider_x509_cert_url": f.URL + "/certs",
	}
	b, err := json.MarshalIndent(sa, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", err
	}
	return path, nil
}

// FCMToken returns a plausible, distinct registration token for i. A fake
// delivers to it only once bound (Token binds it).
func FCMToken(i int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "sipwake-android-%d", i))
	return "f" + base64.RawURLEncoding.EncodeToString(sum[:8]) + ":APA91b" + base64.RawURLEncoding.EncodeToString(sum[8:])
}

// serveToken implements the OAuth 2.0 JWT-bearer grant Google's token
// endpoint speaks for service accounts.
func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	f.tokenRequests.Add(1)
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request", "bad form")
		return
	}
	if r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		oauthError(w, "unsupported_grant_type", "Invalid grant_type")
		return
	}
	if msg := f.checkAssertion(r.PostForm.Get("assertion")); msg != "" {
		oauthError(w, "invalid_grant", msg)
		return
	}
	tok := "ya29.fake-" + strings.ReplaceAll(newUUID(), "-", "")
	f.mu.Lock()
	f.access[tok] = time.Now().Add(time.Hour)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": 3600, "token_type": "Bearer"})
}

func (f *FCM) checkAssertion(a string) string {
	parts := strings.Split(a, ".")
	if len(parts) != 3 {
		return "Invalid JWT: malformed"
	}
	var hdr struct{ Alg, Kid string }
	var c struct {
		Iss   string `json:"iss"`
		Aud   string `json:"aud"`
		Scope string `json:"scope"`
		Iat   int64  `json:"iat"`
		Exp   int64  `json:"exp"`
	}
	if decodeSegment(parts[0], &hdr) != nil || decodeSegment(parts[1], &c) != nil {
		return "Invalid JWT: undecodable"
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || hdr.Alg != "RS256" {
		return "Invalid JWT Signature."
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(&f.key.PublicKey, crypto.SHA256, h[:], sig) != nil {
		return "Invalid JWT Signature."
	}
	now := time.Now()
	switch {
	case c.Iss != f.ClientEmail:
		return "Invalid JWT: unknown issuer"
	case c.Aud != f.TokenURL:
		return "Invalid JWT: Failed audience check."
	case !strings.Contains(" "+c.Scope+" ", " "+"https://www.googleapis.com/auth/firebase.messaging"+" ") &&
		!strings.Contains(" "+c.Scope+" ", " https://www.googleapis.com/auth/cloud-platform "):
		return "Invalid JWT: scope does not allow FCM"
	case now.After(time.Unix(c.Exp, 0)), time.Unix(c.Iat, 0).After(now.Add(time.Minute)):
		return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
	}
	return ""
}

func oauthError(w http.ResponseWriter, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

var ttlRe = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)

// maxFCMData is FCM's limit on a data message's keys and values together.
const maxFCMData = 4096

type fcmMessage struct {
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Condition    string            `json:"condition"`
	Data         map[string]string `json:"data"`
	Notification json.RawMessage   `json:"notification"`
	Android      *struct {
		Priority     string          `json:"priority"`
		TTL          string          `json:"ttl"`
		Notification json.RawMessage `json:"notification"`
	} `json:"android"`
}

func (f *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(r.Header.Get("Authorization")) {
		fcmError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
		return
	}
	if r.PathValue("project") != f.ProjectID {
		fcmError(w, http.StatusForbidden, "PERMISSION_DENIED", "",
			"Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/"+r.PathValue("project")+"'")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	var req struct {
		Message      json.RawMessage `json:"message"`
		ValidateOnly bool            `json:"validate_only"`
	}
	var m fcmMessage
	if json.Unmarshal(body, &req) != nil || json.Unmarshal(req.Message, &m) != nil {
		fcmError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "", "Invalid JSON payload received.")
		return
	}
	p := Push{Provider: push.ProviderFCM, Token: m.Token, Payload: req.Message, At: time.Now()}
	status, code, msg := checkMessage(m)
	if status == 0 {
		status, code, msg = f.checkToken(m.Token)
	}
	if status == 0 {
		if b, ok := f.behavior(m.Token); ok {
			if b.Stall {
				f.record(p)
				_ = waitClosed(r.Context(), f.closing)
				return
			}
			status, code = b.Status, b.Reason
			if status == 0 {
				status = fcmStatus(code)
			}
			msg = fcmMessageFor(code)
		}
	}
	if status == 0 {
		status = http.StatusOK
	}
	p.Status, p.Reason = status, code
	f.record(p)
	if status != http.StatusOK {
		fcmError(w, status, fcmCanonical(code), code, msg)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]string{"name": "projects/" + f.ProjectID + "/messages/0:" + strings.ReplaceAll(newUUID(), "-", "")})
}

func (f *FCM) authorized(h string) bool {
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	exp, ok := f.access[tok]
	return ok && time.Now().Before(exp)
}

// checkToken answers as FCM does for a token it did not issue, or issued to
// an app of another project.
func (f *FCM) checkToken(tok string) (int, string, string) {
	switch sender, ok := f.tokens.lookup(tok); {
	case !ok:
		return http.StatusBadRequest, "INVALID_ARGUMENT", fcmMessageFor("INVALID_ARGUMENT")
	case sender != f.SenderID:
		return http.StatusForbidden, "SENDER_ID_MISMATCH", fcmMessageFor("SENDER_ID_MISMATCH")
	}
	return 0, "", ""
}

var fcmTokenRe = regexp.MustCompile(`^[A-Za-z0-9_:\-]{20,1000}$`)

// checkMessage validates what sipwake sends: a token target, data-only,
// Android priority and TTL in the v1 formats.
func checkMessage(m fcmMessage) (int, string, string) {
	bad := func(msg string) (int, string, string) {
		return http.StatusBadRequest, "INVALID_ARGUMENT", msg
	}
	switch {
	case m.Topic != "" || m.Condition != "":
		return bad("sipwake fake FCM: only token targets are expected")
	case m.Token == "":
		return bad("Recipient of the message is not set.")
	case !fcmTokenRe.MatchString(m.Token):
		return bad("The registration token is not a valid FCM registration token")
	case len(m.Notification) > 0 && string(m.Notification) != "null":
		return bad("sipwake fake FCM: messages must be data-only")
	case m.Android == nil:
		return bad("sipwake fake FCM: android config (priority, ttl) expected")
	case len(m.Android.Notification) > 0 && string(m.Android.Notification) != "null":
		return bad("sipwake fake FCM: messages must be data-only")
	}
	size := 0
	for k, v := range m.Data {
		size += len(k) + len(v)
	}
	if size > maxFCMData {
		// FCM: "the maximum payload is 4096 bytes" for data messages.
		return bad("Android message is too big")
	}
	switch strings.ToLower(m.Android.Priority) {
	case "high", "normal":
	default:
		return bad(fmt.Sprintf("Invalid value at 'message.android.priority' (%q)", m.Android.Priority))
	}
	if m.Android.TTL != "" && !ttlRe.MatchString(m.Android.TTL) {
		return bad(fmt.Sprintf("Invalid value at 'message.android.ttl' (%q)", m.Android.TTL))
	}
	return 0, "", ""
}

// fcmStatus maps an FcmError code to the HTTP status FCM answers with.
func fcmStatus(code string) int {
	switch code {
	case "UNREGISTERED":
		return http.StatusNotFound
	case "INVALID_ARGUMENT":
		return http.StatusBadRequest
	case "SENDER_ID_MISMATCH":
		return http.StatusForbidden
	case "QUOTA_EXCEEDED":
		return http.StatusTooManyRequests
	case "UNAVAILABLE":
		return http.StatusServiceUnavailable
	case "THIRD_PARTY_AUTH_ERROR":
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// fcmCanonical maps an FcmError code to the google.rpc status FCM puts next
// to it.
func fcmCanonical(code string) string {
	switch code {
	case "UNREGISTERED":
		return "NOT_FOUND"
	case "SENDER_ID_MISMATCH":
		return "PERMISSION_DENIED"
	case "QUOTA_EXCEEDED":
		return "RESOURCE_EXHAUSTED"
	case "THIRD_PARTY_AUTH_ERROR":
		return "UNAUTHENTICATED"
	case "":
		return "INTERNAL"
	}
	return code
}

func fcmMessageFor(code string) string {
	switch code {
	case "UNREGISTERED":
		return "Requested entity was not found."
	case "INVALID_ARGUMENT":
		return "The registration token is not a valid FCM registration token"
	case "SENDER_ID_MISMATCH":
		return "SenderId mismatch"
	case "QUOTA_EXCEEDED":
		return "Quota exceeded for quota metric 'Requests per minute'"
	case "UNAVAILABLE":
		return "The service is currently unavailable."
	}
	return "Internal error encountered."
}

func fcmError(w http.ResponseWriter, status int, canonical, fcmCode, msg string) {
	e := map[string]any{"code": status, "message": msg, "status": canonical}
	if fcmCode != "" {
		e["details"] = []map[string]string{{
			"@type":     "type.googleapis.com/google.firebase.fcm.v1.FcmError",
			"errorCode": fcmCode,
		}}
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}

// Conns counts TCP connections accepted so far; a client that reuses its
// HTTP/2 connection keeps it at 1.
func (f *FCM) Conns() int { return f.connCounter.get() }

// SendFCM sends a data-only message to token the way FCM HTTP v1 clients
// do, with cfg's credentials, endpoint and CA (an app of a fake's Config):
// an OAuth access token from the service account, then messages:send. It
// returns FCM's status and body. For tests and scripts that check a fake
// (or what a config points at) without sipwake.
func SendFCM(tb testing.TB, cfg push.FCMConfig, token string, data map[string]string) (int, []byte) {
	tb.Helper()
	ca, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		tb.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	sa, err := os.ReadFile(cfg.CredentialsFile)
	if err != nil {
		tb.Fatal(err)
	}
	jwt, err := google.JWTConfigFromJSON(sa, "https://www.googleapis.com/auth/firebase.messaging")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := jwt.Client(context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: tr}))
	body, _ := json.Marshal(map[string]any{"message": map[string]any{
		"token": token, "data": data, "android": map[string]string{"priority": "high"},
	}})
	res, err := client.Post(cfg.Endpoint+"/projects/"+cfg.ProjectID+"/messages:send", "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return res.StatusCode, out
}

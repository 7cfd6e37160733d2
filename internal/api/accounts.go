package api

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sipwake/sipwake/internal/httpjson"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

const (
	minTTLDays = 3
	maxTTLDays = 6
	// Registration expiry an app may ask for, in seconds.
	minExpires     = 10
	maxExpires     = 86400
	defaultExpires = 600
)

// AccountRequest is the body of PUT /v1/accounts/{id}.
type AccountRequest struct {
	AOR       string      `json:"aor"`       // user@domain or sip:user@domain
	Registrar string      `json:"registrar"` // host[:port] or SIP URI of the registrar / outbound proxy
	Transport string      `json:"transport"` // udp (default), tcp, tls
	Username  string      `json:"username"`  // auth user; default the AOR's user
	Password  string      `json:"password"`  // password or ha1, not both
	HA1       string      `json:"ha1"`       // hex MD5(username:realm:password)
	Expires   int         `json:"expires"`   // registration expiry asked for, seconds
	Push      PushRequest `json:"push"`
	TTLDays   int         `json:"ttl_days"` // record TTL, 3–6 days
}

// PushRequest is the push target of a handed-over account.
type PushRequest struct {
	Provider string `json:"provider"` // apns, fcm
	Token    string `json:"token"`    // device token / registration token
	// Param is the RFC 8599 pn-param (APNs "<TeamID>.<bundle>.voip", FCM
	// project); App is accepted as its SIPIS-style name.
	Param string `json:"param"`
	App   string `json:"app"`
}

// AccountView is what GET (and a successful PUT) answers: everything
// sipwake holds about the account except secrets.
type AccountView struct {
	ID         string           `json:"id"`
	AOR        string           `json:"aor"`
	Registrar  string           `json:"registrar"`
	Transport  string           `json:"transport"`
	Username   string           `json:"username"`
	Credential string           `json:"credential"` // "password" or "ha1": which one is held, never its value
	Expires    int              `json:"expires"`    // registration expiry asked for
	Push       PushView         `json:"push"`
	ExpiresAt  time.Time        `json:"expires_at"` // when the record (and the credentials) are erased
	UpdatedAt  time.Time        `json:"updated_at"`
	Register   RegistrationView `json:"registration"`
}

// PushView shows the push target with the token cut to its last 6
// characters.
type PushView struct {
	Provider    string `json:"provider"`
	TokenSuffix string `json:"token_suffix"`
	Param       string `json:"param"`
}

// RegistrationView is the upstream registration's state.
type RegistrationView struct {
	State        string     `json:"state"` // registering, registered, failed, standby, unknown
	RegisteredAt *time.Time `json:"registered_at,omitempty"`
	Granted      int        `json:"granted_expires,omitempty"` // seconds the registrar granted
	LapsesAt     *time.Time `json:"lapses_at,omitempty"`
	NextRefresh  *time.Time `json:"next_refresh,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
}

func (s *Server) putAccount(w http.ResponseWriter, r *http.Request, app, id string) {
	req, status, msg := s.readAccount(w, r)
	if status != 0 {
		httpjson.Error(w, status, msg)
		return
	}
	b, ttl, status, msg := s.bindingFrom(req, app, id)
	if status != 0 {
		httpjson.Error(w, status, msg)
		return
	}
	saved, created, err := s.handover.Hand(r.Context(), b, ttl)
	if err != nil {
		status, msg := handoverFailure(err)
		if status >= 500 && status != http.StatusBadGateway && status != http.StatusGatewayTimeout {
			s.log.Error("handover failed", "app", app, "error", err)
		}
		httpjson.Error(w, status, msg)
		return
	}
	status = http.StatusOK
	if created {
		status = http.StatusCreated
	}
	httpjson.Write(w, status, s.view(saved, s.bindings.AccountID(app, id)))
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request, app, id string) {
	sid := s.bindings.AccountID(app, id)
	b, err := s.bindings.Binding(r.Context(), sid)
	if errors.Is(err, store.ErrNotFound) || err == nil && (b.Account == nil || b.Account.App != app) {
		httpjson.Error(w, http.StatusNotFound, "no such account")
		return
	}
	if err != nil {
		s.log.Error("read account", "app", app, "error", err)
		httpjson.Error(w, http.StatusInternalServerError, "internal error")
		return
	}
	httpjson.Write(w, http.StatusOK, s.view(b, sid))
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request, app, id string) {
	err := s.handover.Release(r.Context(), app, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		httpjson.Error(w, http.StatusNotFound, "no such account")
	case err != nil:
		s.log.Error("release account", "app", app, "error", err)
		httpjson.Error(w, http.StatusInternalServerError, "internal error")
	default:
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	}
}

// readAccount reads and strictly decodes a PUT body: JSON only, bounded,
// every unknown field named.
func (s *Server) readAccount(w http.ResponseWriter, r *http.Request) (AccountRequest, int, string) {
	var req AccountRequest
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return req, http.StatusUnsupportedMediaType, "Content-Type must be application/json"
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return req, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", s.cfg.MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return req, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", s.cfg.MaxBodyBytes)
		}
		return req, http.StatusBadRequest, "cannot read body"
	}
	if unknown, err := unknownFields(body); err != nil {
		return req, http.StatusBadRequest, "body is not a JSON object: " + jsonProblem(err)
	} else if len(unknown) > 0 {
		return req, http.StatusBadRequest, "unknown fields: " + strings.Join(unknown, ", ")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, http.StatusBadRequest, "bad JSON: " + jsonProblem(err)
	}
	if dec.More() {
		return req, http.StatusBadRequest, "bad JSON: more than one value in the body"
	}
	return req, 0, ""
}

// unknownFields lists the body's fields AccountRequest does not have,
// as dotted paths, so one answer names them all.
func unknownFields(body []byte) ([]string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	known := []string{"aor", "registrar", "transport", "username", "password", "ha1", "expires", "push", "ttl_days"}
	pushKnown := []string{"provider", "token", "param", "app"}
	var out []string
	for k, v := range top {
		if !slices.Contains(known, k) {
			out = append(out, fmt.Sprintf("%q", k))
			continue
		}
		if k == "push" {
			var push map[string]json.RawMessage
			if json.Unmarshal(v, &push) == nil {
				for pk := range push {
					if !slices.Contains(pushKnown, pk) {
						out = append(out, fmt.Sprintf("%q", "push."+pk))
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// jsonProblem describes a decoding error without echoing the body (it
// may hold a password).
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "body is empty or cut short"
	}
	return "not a valid account object"
}

// bindingFrom validates a request and builds the binding to hand over.
func (s *Server) bindingFrom(req AccountRequest, app, id string) (relay.Binding, time.Duration, int, string) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	aor := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(req.AOR), "sip:"), "sips:")
	user, domain, ok := strings.Cut(aor, "@")
	if !ok || user == "" || domain == "" || strings.ContainsAny(aor, " ;<>:?,\"\\\r\n") || strings.Count(aor, "@") != 1 {
		bad("aor: want user@domain")
	}
	domain = strings.ToLower(domain)
	if _, _, err := handover.Target(req.Registrar, req.Transport); err != nil {
		bad("registrar/transport: %v", err)
	}
	if req.Username == "" {
		req.Username = user
	}
	if len(req.Username) > 128 || strings.ContainsAny(req.Username, "\"\\\r\n") {
		bad("username: at most 128 characters, no quotes, backslashes or line breaks")
	}
	switch {
	case req.Password == "" && req.HA1 == "":
		bad("password or ha1 is required")
	case req.Password != "" && req.HA1 != "":
		bad("send password or ha1, not both")
	case len(req.Password) > 256:
		bad("password: at most 256 characters")
	case req.HA1 != "":
		if b, err := hex.DecodeString(req.HA1); err != nil || len(b) != 16 {
			bad("ha1: want 32 hex digits (MD5 of username:realm:password)")
		}
	}
	if req.Expires == 0 {
		req.Expires = defaultExpires
	}
	if req.Expires < minExpires || req.Expires > maxExpires {
		bad("expires: %d: want %d–%d seconds", req.Expires, minExpires, maxExpires)
	}
	if req.TTLDays == 0 {
		req.TTLDays = s.cfg.DefaultTTLDays
	}
	if req.TTLDays < minTTLDays || req.TTLDays > maxTTLDays {
		bad("ttl_days: %d: want %d–%d", req.TTLDays, minTTLDays, maxTTLDays)
	}
	p := req.Push
	provider := strings.ToLower(p.Provider)
	switch {
	case provider == "":
		bad("push.provider is required (%s)", strings.Join(s.bindings.Providers(), ", "))
	case !s.bindings.Supports(provider):
		bad("push.provider %q: sipwake serves %s", p.Provider, strings.Join(s.bindings.Providers(), ", "))
	}
	if p.Token == "" || len(p.Token) > 4096 {
		bad("push.token: required, at most 4096 characters")
	}
	param := p.Param
	if p.App != "" && p.Param != "" && p.App != p.Param {
		bad("push.app and push.param differ; send one")
	}
	if param == "" {
		param = p.App
	}
	if len(param) > 256 {
		bad("push.param: at most 256 characters")
	}
	if len(problems) > 0 {
		return relay.Binding{}, 0, http.StatusUnprocessableEntity, strings.Join(problems, "; ")
	}
	b := relay.Binding{
		AOR:    relay.AOR(user + "@" + domain),
		Device: relay.Device{Provider: provider, Token: p.Token, Param: param},
		Account: &relay.Account{
			ID: id, App: app, Registrar: strings.TrimSpace(req.Registrar), Transport: strings.ToLower(req.Transport),
			Username: req.Username, Password: req.Password, HA1: strings.ToLower(req.HA1), Expires: req.Expires,
		},
	}
	return b, time.Duration(req.TTLDays) * 24 * time.Hour, 0, ""
}

// handoverFailure maps a failed handover to the app's answer.
func handoverFailure(err error) (int, string) {
	var herr *handover.Error
	if !errors.As(err, &herr) {
		return http.StatusInternalServerError, "internal error"
	}
	switch herr.Cause {
	case handover.CauseCredentials, handover.CauseRejected, handover.CauseAccount:
		return http.StatusUnprocessableEntity, herr.Error()
	case handover.CauseTimeout:
		return http.StatusGatewayTimeout, herr.Error()
	default:
		return http.StatusBadGateway, herr.Error()
	}
}

func (s *Server) view(b relay.Binding, sid store.ID) AccountView {
	a := b.Account
	v := AccountView{
		ID: a.ID, AOR: string(b.AOR), Registrar: a.Registrar, Transport: a.Transport, Username: a.Username,
		Credential: "password", Expires: a.Expires,
		Push:      PushView{Provider: b.Device.Provider, TokenSuffix: tokenSuffix(b.Device.Token), Param: b.Device.Param},
		ExpiresAt: b.ExpiresAt.UTC(), UpdatedAt: b.UpdatedAt.UTC(),
		Register: RegistrationView{State: "unknown"},
	}
	if a.Password == "" {
		v.Credential = "ha1"
	}
	st, ok := s.handover.Status(sid)
	if !ok {
		return v
	}
	v.Register.State = string(st.Phase)
	v.Register.LastError = st.LastError
	if !st.RegisteredAt.IsZero() {
		at := st.RegisteredAt.UTC()
		lapses := at.Add(time.Duration(st.Expires) * time.Second)
		v.Register.RegisteredAt, v.Register.LapsesAt, v.Register.Granted = &at, &lapses, st.Expires
	}
	if !st.NextAttempt.IsZero() {
		next := st.NextAttempt.UTC()
		v.Register.NextRefresh = &next
	}
	return v
}

func tokenSuffix(t string) string {
	if len(t) <= 6 {
		return ""
	}
	return t[len(t)-6:]
}

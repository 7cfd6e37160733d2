package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
	"github.com/sipwake/sipwake/internal/httpserve"
)

// The spec is held to the running server: every exchange below is a real
// request to the API, and both the request and the answer are validated
// against docs/openapi.yaml. kin-openapi validates an OpenAPI 3.1 document's
// schemas with a JSON Schema 2020-12 validator (santhosh-tekuri/jsonschema),
// so const, anyOf/not and type-less keywords in the spec are checked, and so
// are the response headers marked required (Cache-Control, Retry-After,
// WWW-Authenticate, Allow). It does not validate HEAD answers.

const specPath = "../../docs/openapi.yaml"

// specOptions are the validator's settings for every exchange.
var specOptions = &openapi3filter.Options{
	IncludeResponseStatus: true, // a status the spec does not list is drift too
	SkipSettingDefaults:   true,
	AuthenticationFunc:    bearerSent,
}

// bearerSent is the part of the server's key check that the spec states:
// an Authorization header "Bearer <key>" (the scheme in any case). Whether
// the key is known is the server's business (401 either way).
func bearerSent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if s := in.SecurityScheme; s.Type != "http" || s.Scheme != "bearer" {
		return fmt.Errorf("security scheme %s/%s, the server checks http bearer", s.Type, s.Scheme)
	}
	if _, ok := httpserve.BearerSum(in.RequestValidationInput.Request); !ok {
		return errors.New("no Authorization: Bearer <key>")
	}
	return nil
}

// contract is a running API and the spec it must keep.
type contract struct {
	*fixture
	doc    *openapi3.T
	router routers.Router
}

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(specPath)
	if err != nil {
		t.Fatalf("load %s: %v", specPath, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", specPath, err)
	}
	return doc
}

func newContract(t *testing.T, f *fixture) *contract {
	t.Helper()
	doc := loadSpec(t)
	// The router matches the servers' URLs: point it at this test's server.
	doc.Servers = openapi3.Servers{{URL: f.url}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contract{fixture: f, doc: doc, router: router}
}

// call is one request as sent, for both the wire and the validator.
type call struct {
	method, path string
	auth         string // the whole Authorization header, "" for none
	contentType  string
	body         string
}

func bearer(key string) string { return "Bearer " + key }

func (c call) request(t *testing.T, base string) *http.Request {
	t.Helper()
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, base+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	return req
}

// exchange is a real request, its answer and the validator's verdicts.
type exchange struct {
	reply
	input      *openapi3filter.RequestValidationInput
	requestErr error
}

// send validates the request against the spec, sends it to the server and
// returns the answer; the answer's own validation is answerErr.
func (c *contract) send(t *testing.T, cl call) exchange {
	t.Helper()
	req := cl.request(t, c.url)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Fatalf("%s %s: not in the spec: %v", cl.method, cl.path, err)
	}
	input := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: specOptions}
	requestErr := openapi3filter.ValidateRequest(context.Background(), input)

	res, err := http.DefaultClient.Do(cl.request(t, c.url))
	if err != nil {
		t.Fatalf("%s %s: %v", cl.method, cl.path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return exchange{reply: reply{status: res.StatusCode, header: res.Header, body: string(b)}, input: input, requestErr: requestErr}
}

// answerErr validates an answer (status, headers, body) against the
// operation the request was routed to.
func answerErr(input *openapi3filter.RequestValidationInput, status int, header http.Header, body string) error {
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: input, Status: status, Header: header, Options: specOptions}
	out.SetBodyBytes([]byte(body))
	return openapi3filter.ValidateResponse(context.Background(), out)
}

// check sends cl and fails unless the answer has status want, the spec
// accepts the answer, and the spec judges the request as valid says.
func (c *contract) check(t *testing.T, name string, cl call, valid bool, want ...int) exchange {
	t.Helper()
	x := c.send(t, cl)
	switch {
	case valid && x.requestErr != nil:
		t.Errorf("%s: the server takes this request but the spec refuses it: %v", name, x.requestErr)
	case !valid && x.requestErr == nil:
		t.Errorf("%s: the spec accepts a request the server refuses (%d %s)", name, x.status, strings.TrimSpace(x.body))
	case !valid:
		t.Logf("%s: the spec refuses it too: %.160s", name, strings.ReplaceAll(x.requestErr.Error(), "\n", " "))
	}
	ok := false
	for _, w := range want {
		ok = ok || x.status == w
	}
	if !ok {
		t.Errorf("%s: %s %s answered %d %s, want %v", name, cl.method, cl.path, x.status, strings.TrimSpace(x.body), want)
	}
	if err := answerErr(x.input, x.status, x.header, x.body); err != nil {
		t.Errorf("%s: %d answer does not match the spec: %v", name, x.status, err)
	}
	return x
}

// offRoute sends a request the spec has no operation for (another path or
// method) and validates its answer against the named component response.
func (c *contract) offRoute(t *testing.T, name string, cl call, status int, component string) {
	t.Helper()
	resp := c.doc.Components.Responses[component]
	if resp == nil {
		t.Fatalf("%s: no components.responses.%s in the spec", name, component)
	}
	req := cl.request(t, c.url)
	if _, _, err := c.router.FindRoute(req); err == nil {
		t.Errorf("%s: %s %s is an operation of the spec; the server has none", name, cl.method, cl.path)
	}
	res, err := http.DefaultClient.Do(cl.request(t, c.url))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != status {
		t.Errorf("%s: %d %s, want %d", name, res.StatusCode, b, status)
	}
	route := &routers.Route{Spec: c.doc, Path: cl.path, Method: cl.method,
		Operation: &openapi3.Operation{Responses: openapi3.NewResponses(openapi3.WithStatus(status, resp))}}
	input := &openapi3filter.RequestValidationInput{Request: req, Route: route, Options: specOptions}
	if err := answerErr(input, res.StatusCode, res.Header, string(b)); err != nil {
		t.Errorf("%s: answer does not match components.responses.%s: %v", name, component, err)
	}
}

func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenAPIDocument: the spec loads as OpenAPI 3.1 and names exactly the
// routes the server serves.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %s, want 3.1", doc.OpenAPI)
	}
	var got []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			got = append(got, method+" "+path)
		}
	}
	want := []string{"DELETE /v1/accounts/{id}", "GET /v1/accounts/{id}", "HEAD /v1/accounts/{id}", "PUT /v1/accounts/{id}"}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("operations %v, want %v (the routes of internal/api)", got, want)
	}
}

// TestOpenAPIExchanges drives every operation and the main errors through
// the real server and holds each request and answer to the spec.
func TestOpenAPIExchanges(t *testing.T) {
	t.Parallel()
	c := newContract(t, start(t, nil))
	alice := handovertest.Users()["alice"]
	acc := func(edit func(m map[string]any)) string {
		m := c.account("alice", alice)
		if edit != nil {
			edit(m)
		}
		return jsonBody(t, m)
	}
	const path = "/v1/accounts/phone-1"
	put := func(body string) call {
		return call{method: "PUT", path: path, auth: bearer(key1), contentType: "application/json", body: body}
	}
	get := call{method: "GET", path: path, auth: bearer(key1)}
	del := call{method: "DELETE", path: path, auth: bearer(key1)}

	c.check(t, "GET before PUT", get, true, 404)
	x := c.check(t, "PUT new", put(acc(nil)), true, 201)
	if v := x.json(t); v["id"] != "phone-1" || v["registration"].(map[string]any)["state"] != "registered" {
		t.Errorf("PUT view: %s", x.body)
	}
	c.check(t, "PUT again", put(acc(func(m map[string]any) { m["ttl_days"] = 6; m["transport"] = "UDP" })), true, 200)
	c.check(t, "GET", get, true, 200)
	c.check(t, "GET, the scheme in other cases (RFC 6750)", call{method: "GET", path: path, auth: "bEARER  " + key1 + " "}, true, 200)
	c.check(t, "GET by another app", call{method: "GET", path: path, auth: bearer(key2)}, true, 404)
	if x := c.send(t, call{method: "HEAD", path: path, auth: bearer(key1)}); x.status != 200 || x.body != "" || x.requestErr != nil {
		t.Errorf("HEAD: %d %q, request: %v", x.status, x.body, x.requestErr)
	}
	ha1 := handovertest.HA1("carol", handovertest.Users()["carol"])
	carol := c.account("carol", "")
	delete(carol, "password")
	carol["ha1"] = strings.ToUpper(ha1)
	carol["push"].(map[string]any)["app"] = carol["push"].(map[string]any)["param"]
	delete(carol["push"].(map[string]any), "param")
	c.check(t, "PUT with ha1 and push.app", call{method: "PUT", path: "/v1/accounts/c", auth: bearer(key1),
		contentType: "application/json; charset=utf-8", body: jsonBody(t, carol)}, true, 201)
	if v := c.check(t, "GET ha1 account", call{method: "GET", path: "/v1/accounts/c", auth: bearer(key1)}, true, 200).json(t); v["credential"] != "ha1" {
		t.Errorf("credential %v, want ha1", v["credential"])
	}

	// The registrar refuses: a valid request, a 422.
	c.check(t, "wrong password", put(acc(func(m map[string]any) { m["password"] = "wrong" })), true, 422)
	// Nobody answers on that port: the registrar is unreachable or silent.
	kamHost, _, _ := net.SplitHostPort(c.env.Kamailio.Addr)
	c.check(t, "registrar silent", put(acc(func(m map[string]any) { m["registrar"] = net.JoinHostPort(kamHost, "5999") })), true, 502, 504)
	// The server does not serve this provider: the spec cannot know.
	c.check(t, "provider not served", put(acc(func(m map[string]any) { m["push"].(map[string]any)["provider"] = "webpush" })), true, 422)

	for _, e := range []struct {
		name   string
		cl     call
		status int
	}{
		{"no key", call{method: "PUT", path: path, contentType: "application/json", body: acc(nil)}, 401},
		{"basic auth", call{method: "DELETE", path: path, auth: "Basic YTpi"}, 401},
		{"text body", call{method: "PUT", path: path, auth: bearer(key1), contentType: "text/plain", body: acc(nil)}, 415},
		{"no content type", call{method: "PUT", path: path, auth: bearer(key1), body: acc(nil)}, 415},
		{"huge body", put(`{"aor":"` + strings.Repeat("a", 20000) + `@example.test"}`), 413},
		{"not JSON", put(`{"aor": `), 400},
		{"array", put(`[1,2]`), 400},
		{"unknown fields", put(acc(func(m map[string]any) { m["pasword"] = "x"; m["push"].(map[string]any)["topic"] = "y" })), 400},
		{"field name case", put(acc(func(m map[string]any) { m["AOR"] = m["aor"]; delete(m, "aor") })), 400},
		{"wrong type", put(acc(func(m map[string]any) { m["expires"] = "600" })), 400},
		{"no credentials", put(acc(func(m map[string]any) { delete(m, "password") })), 422},
		{"both credentials", put(acc(func(m map[string]any) { m["ha1"] = strings.Repeat("a", 32) })), 422},
		{"short ha1", put(acc(func(m map[string]any) { delete(m, "password"); m["ha1"] = "abc" })), 422},
		{"ttl too long", put(acc(func(m map[string]any) { m["ttl_days"] = 9 })), 422},
		{"expires too short", put(acc(func(m map[string]any) { m["expires"] = 5 })), 422},
		{"bad aor", put(acc(func(m map[string]any) { m["aor"] = "alice" })), 422},
		{"bad transport", put(acc(func(m map[string]any) { m["transport"] = "sctp" })), 422},
		{"no push token", put(acc(func(m map[string]any) { delete(m["push"].(map[string]any), "token") })), 422},
		{"bad id PUT", call{method: "PUT", path: "/v1/accounts/a%20b", auth: bearer(key1), contentType: "application/json", body: acc(nil)}, 400},
		{"bad id GET", call{method: "GET", path: "/v1/accounts/" + strings.Repeat("x", 129), auth: bearer(key1)}, 400},
		{"bad id DELETE", call{method: "DELETE", path: "/v1/accounts/a%2Fb", auth: bearer(key1)}, 400},
	} {
		c.check(t, e.name, e.cl, false, e.status)
	}
	// A key the server does not know is still a well-formed request.
	c.check(t, "unknown key", call{method: "GET", path: path, auth: bearer("nope")}, true, 401)

	c.offRoute(t, "POST", call{method: "POST", path: path, auth: bearer(key1), contentType: "application/json", body: acc(nil)}, 405, "MethodNotAllowed")
	c.offRoute(t, "PATCH without key", call{method: "PATCH", path: path}, 405, "MethodNotAllowed")
	c.offRoute(t, "other version", call{method: "GET", path: "/v2/accounts/x", auth: bearer(key1)}, 404, "NoSuchResource")
	c.offRoute(t, "collection", call{method: "GET", path: "/v1/accounts/", auth: bearer(key1)}, 404, "NoSuchResource")
	c.offRoute(t, "sub-resource", call{method: "GET", path: path + "/x", auth: bearer(key1)}, 404, "NoSuchResource")

	c.check(t, "DELETE", del, true, 204)
	c.check(t, "DELETE again", del, true, 404)
	c.check(t, "GET after DELETE", get, true, 404)
	if n := c.records(t); n != 1 {
		t.Errorf("%d records, want carol's only", n)
	}
}

// TestOpenAPIRateLimits: both 429s carry Retry-After as the spec says.
func TestOpenAPIRateLimits(t *testing.T) {
	t.Parallel()
	c := newContract(t, start(t, func(cfg *api.Config) {
		cfg.RateLimit = api.RateLimit{PerKey: 0.001, PerKeyBurst: 2, PerSource: 0.001, PerSourceBurst: 3}
	}))
	get := call{method: "GET", path: "/v1/accounts/x", auth: bearer(key1)}
	c.check(t, "first", get, true, 404)
	c.check(t, "second", get, true, 404)
	if x := c.check(t, "per key", get, true, 429); x.errorText(t) != "too many requests for this API key" {
		t.Errorf("per key: %s", x.body)
	}
	if x := c.check(t, "per source", call{method: "DELETE", path: "/v1/accounts/x", auth: bearer(key2)}, true, 429); x.errorText(t) != "too many requests from this address" {
		t.Errorf("per source: %s", x.body)
	}
}

// TestOpenAPICatchesDrift proves the validation has teeth: real answers,
// changed the way a careless edit of the server would change them, fail.
func TestOpenAPICatchesDrift(t *testing.T) {
	t.Parallel()
	c := newContract(t, start(t, nil))
	good := c.account("alice", handovertest.Users()["alice"])
	put := call{method: "PUT", path: "/v1/accounts/d", auth: bearer(key1), contentType: "application/json", body: jsonBody(t, good)}
	c.check(t, "PUT", put, true, 201)
	view := c.check(t, "GET", call{method: "GET", path: "/v1/accounts/d", auth: bearer(key1)}, true, 200)
	missing := c.check(t, "GET missing", call{method: "GET", path: "/v1/accounts/none", auth: bearer(key1)}, true, 404)

	edit := func(body string, f func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		return jsonBody(t, m)
	}
	without := func(h http.Header, name string) http.Header {
		h = h.Clone()
		h.Del(name)
		return h
	}
	retry := view.header.Clone()
	retry.Set("Retry-After", "1")
	for _, d := range []struct {
		name   string
		x      exchange // the real exchange whose answer is edited
		status int
		header http.Header
		body   string
	}{
		{"push.token_suffix renamed", view, 200, view.header, edit(view.body, func(m map[string]any) {
			p := m["push"].(map[string]any)
			p["tokenSuffix"] = p["token_suffix"]
			delete(p, "token_suffix")
		})},
		{"the push token shown", view, 200, view.header, edit(view.body, func(m map[string]any) { m["push"].(map[string]any)["token"] = token })},
		{"a password shown", view, 200, view.header, edit(view.body, func(m map[string]any) { m["password"] = "x" })},
		{"registration.state dropped", view, 200, view.header, edit(view.body, func(m map[string]any) { delete(m["registration"].(map[string]any), "state") })},
		{"unknown state", view, 200, view.header, edit(view.body, func(m map[string]any) { m["registration"].(map[string]any)["state"] = "ok" })},
		{"expires_at not a time", view, 200, view.header, edit(view.body, func(m map[string]any) { m["expires_at"] = "soon" })},
		{"expires as a string", view, 200, view.header, edit(view.body, func(m map[string]any) { m["expires"] = "60" })},
		{"no Cache-Control", view, 200, without(view.header, "Cache-Control"), view.body},
		{"error renamed", missing, 404, missing.header, `{"message": "no such account"}`},
		{"error with more", missing, 404, missing.header, `{"error": "no such account", "code": 404}`},
		{"error as text", missing, 404, http.Header{"Content-Type": {"text/plain"}, "Cache-Control": {"no-store"}}, "no such account"},
		{"429 without Retry-After", missing, 429, missing.header, `{"error": "slow down"}`},
		{"undocumented status", view, 409, missing.header, `{"error": "conflict"}`},
	} {
		err := answerErr(d.x.input, d.status, d.header, d.body)
		if err == nil {
			t.Errorf("%s: the spec accepts it", d.name)
			continue
		}
		t.Logf("%s: caught: %.200s", d.name, strings.ReplaceAll(err.Error(), "\n", " "))
	}
	// The unchanged answers pass, so the failures above are the edits'.
	if err := answerErr(view.input, 200, view.header, view.body); err != nil {
		t.Errorf("unchanged GET: %v", err)
	}
	if err := answerErr(missing.input, 429, retry, `{"error": "slow down"}`); err != nil {
		t.Errorf("429 with Retry-After: %v", err)
	}

	// And requests: a field the server does not know, renamed or added.
	for name, body := range map[string]string{
		"aor renamed":    edit(put.body, func(m map[string]any) { m["address"] = m["aor"]; delete(m, "aor") }),
		"push.topic":     edit(put.body, func(m map[string]any) { m["push"].(map[string]any)["topic"] = "x" }),
		"ttl as minutes": edit(put.body, func(m map[string]any) { m["ttl_minutes"] = 10 }),
	} {
		req := put
		req.body = body
		r := req.request(t, c.url)
		route, params, err := c.router.FindRoute(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
			Request: r, PathParams: params, Route: route, Options: specOptions}); err == nil {
			t.Errorf("request with %s: the spec accepts it", name)
		} else {
			t.Logf("request with %s: caught: %.200s", name, strings.ReplaceAll(err.Error(), "\n", " "))
		}
	}
}

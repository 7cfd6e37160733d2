package push_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/sipwake/sipwake/internal/push"
)

// schemaDir holds the JSON Schemas docs/CLIENTS.md gives app developers.
const schemaDir = "../../docs/schemas"

// schemaCase is one push as the relay sends it, the schema its payload
// must match, and fields whose loss the schema must catch.
type schemaCase struct {
	name     string
	schema   string
	services []string // APNs: the iPhone's tokens; nil: an Android phone
	m        push.Message
	service  string   // APNs: the token the push goes to
	pushType string   // APNs: apns-push-type
	required []string // JSON pointers the schema requires
}

// schemaCases sends every kind the way internal/relay builds it: a call or
// MESSAGE with the caller and the call's wait, a cancel with only the Call-ID
// and the reason (wake.go's follow-up), a refresh with the refresh lead, an
// expiry warning with an hour.
func schemaCases() []schemaCase {
	call := callMsg()
	call.CallerURI = "sip:+4930123456@example.org"
	message := push.Message{Kind: push.KindMessage, CallID: "m1@example.org", CallerName: "Alice Example",
		CallerURI: "sip:alice@example.org", Expiration: 30 * time.Second}
	missed := push.Message{Kind: push.KindCancel, CallID: call.CallID, Reason: push.ReasonMissed}
	elsewhere := push.Message{Kind: push.KindCancel, CallID: call.CallID, Reason: push.ReasonAnsweredElsewhere}
	refresh := push.Message{Kind: push.KindRegister, Expiration: 2 * time.Minute}
	warning := push.Message{Kind: push.KindExpiryWarning, Expiration: time.Hour}
	both := []string{"voip", "remote"}
	return []schemaCase{
		{"APNs VoIP call", "apns-voip-call.json", both, call, "voip", "voip",
			[]string{"/aps/call-id", "/aps/loc-key", "/kind", "/push_id", "/call_id", "/pn_ttl"}},
		{"APNs alert call", "apns-alert-call.json", []string{"remote"}, call, "remote", "alert",
			[]string{"/call-id", "/aps/alert/loc-key", "/aps/sound", "/caller_name"}},
		{"APNs missed call", "apns-missed-call.json", both, missed, "remote", "alert",
			[]string{"/reason", "/call-id", "/aps/alert/loc-args", "/call_id"}},
		{"APNs message", "apns-message.json", both, message, "remote", "alert",
			[]string{"/call-id", "/aps/mutable-content", "/aps/alert", "/caller_number"}},
		{"APNs refresh", "apns-background.json", both, refresh, "remote", "background",
			[]string{"/aps/content-available", "/kind", "/push_id"}},
		{"APNs answered elsewhere", "apns-background.json", []string{"remote"}, elsewhere, "remote", "background",
			[]string{"/reason", "/call_id"}},
		{"APNs expiry warning", "apns-expiry-warning.json", both, warning, "remote", "alert",
			[]string{"/aps/alert/title", "/aps/alert/body", "/kind"}},
		{"FCM call", "fcm-message.json", nil, call, "", "",
			[]string{"/token", "/data/call-id", "/data/caller_name", "/data/loc-key", "/android/ttl", "/android/priority"}},
		{"FCM missed call", "fcm-message.json", nil, missed, "", "", []string{"/data/reason", "/data/call-id"}},
		{"FCM answered elsewhere", "fcm-message.json", nil, elsewhere, "", "", []string{"/data/reason", "/data/call_id"}},
		{"FCM message", "fcm-message.json", nil, message, "", "", []string{"/data/call-id", "/data/send-time"}},
		{"FCM refresh", "fcm-message.json", nil, refresh, "", "", []string{"/data/kind", "/data/push_id", "/android"}},
		{"FCM expiry warning", "fcm-message.json", nil, warning, "", "", []string{"/data/push_id"}},
	}
}

// What sipwake really sends, through a real Dispatcher to the fakes,
// matches the schemas of docs/schemas; and each schema fails a payload
// that lacks a field it promises, so this test can fail.
func TestPayloadsMatchSchemas(t *testing.T) {
	e := newEnv(t)
	schemas := compileSchemas(t)
	for i, c := range schemaCases() {
		t.Run(c.name, func(t *testing.T) {
			sch := schemas[c.schema]
			if sch == nil {
				t.Fatalf("no schema %s in %s", c.schema, schemaDir)
			}
			body := sendForSchema(t, e, 800+i, c)
			doc := decodeInstance(t, body)
			if err := sch.Validate(doc); err != nil {
				t.Fatalf("%s does not match %s:\n%s\n%v", c.name, c.schema, body, err)
			}
			for _, ptr := range c.required {
				cut, ok := without(t, body, ptr)
				if !ok {
					t.Fatalf("%s: the payload has no %s:\n%s", c.name, ptr, body)
				}
				if err := sch.Validate(cut); err == nil {
					t.Errorf("%s: %s still validates without %s", c.name, c.schema, ptr)
				}
			}
		})
	}
}

// The schemas refuse wrong types, not only missing fields: APNs loc-args is
// an array, FCM data values are strings only, a background push shows
// nothing, a call push always goes at high priority.
func TestSchemasRefuseWrongShapes(t *testing.T) {
	schemas := compileSchemas(t)
	e := newEnv(t)
	cases := schemaCases()
	voip := sendForSchema(t, e, 900, cases[0])
	refresh := sendForSchema(t, e, 901, cases[4])
	fcmCall := sendForSchema(t, e, 902, cases[7])
	for _, c := range []struct {
		name, schema string
		body         []byte
		edit         func(m map[string]any)
	}{
		{"loc-args a string", "apns-voip-call.json", voip, func(m map[string]any) { m["aps"].(map[string]any)["loc-args"] = "Alice" }},
		{"pn_ttl a string", "apns-voip-call.json", voip, func(m map[string]any) { m["pn_ttl"] = "30" }},
		{"kind of another push", "apns-voip-call.json", voip, func(m map[string]any) { m["kind"] = "message" }},
		{"send-time in RFC 3339", "apns-voip-call.json", voip, func(m map[string]any) {
			m["aps"].(map[string]any)["send-time"] = "2026-12-04T17:48:46Z"
		}},
		{"background with a sound", "apns-background.json", refresh, func(m map[string]any) { m["aps"].(map[string]any)["sound"] = "x.caf" }},
		{"FCM data value a number", "fcm-message.json", fcmCall, func(m map[string]any) { m["data"].(map[string]any)["pn_ttl"] = 30 }},
		{"FCM call at normal priority", "fcm-message.json", fcmCall, func(m map[string]any) { m["android"].(map[string]any)["priority"] = "normal" }},
	} {
		var m map[string]any
		if err := json.Unmarshal(c.body, &m); err != nil {
			t.Fatal(err)
		}
		c.edit(m)
		b, _ := json.Marshal(m)
		if err := schemas[c.schema].Validate(decodeInstance(t, b)); err == nil {
			t.Errorf("%s: %s accepts %s", c.name, c.schema, b)
		}
	}
	// Keys a schema does not name are allowed: apps must ignore them.
	var m map[string]any
	_ = json.Unmarshal(voip, &m)
	m["some-future-key"] = map[string]any{"x": 1}
	b, _ := json.Marshal(m)
	if err := schemas["apns-voip-call.json"].Validate(decodeInstance(t, b)); err != nil {
		t.Errorf("an unknown key is refused: %v", err)
	}
}

// Every schema in docs/schemas is a valid draft 2020-12 schema and is
// checked against a real payload above.
func TestEverySchemaIsTested(t *testing.T) {
	schemas := compileSchemas(t)
	used := map[string]bool{}
	for _, c := range schemaCases() {
		used[c.schema] = true
	}
	for name := range schemas {
		if !used[name] {
			t.Errorf("%s/%s is validated against no payload", schemaDir, name)
		}
	}
}

// compileSchemas compiles every schema file from disk; the 2020-12
// meta-schema is built into the validator, so nothing is fetched.
func compileSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas in %s: %v", schemaDir, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noNetwork{})
	out := map[string]*jsonschema.Schema{}
	for _, f := range files {
		sch, err := c.Compile(f)
		if err != nil {
			t.Fatalf("compile %s: %v", f, err)
		}
		out[filepath.Base(f)] = sch
	}
	return out
}

// noNetwork loads only files: a schema that refers to anything online
// fails the test rather than fetching it.
type noNetwork struct{}

func (noNetwork) Load(url string) (any, error) {
	if !strings.HasPrefix(url, "file://") {
		return nil, os.ErrNotExist
	}
	return jsonschema.FileLoader{}.Load(url)
}

// sendForSchema sends c.m through the Dispatcher to a new device (index i)
// and returns what the fake recorded: the APNs body, or FCM's message
// object.
func sendForSchema(t *testing.T, e *env, i int, c schemaCase) []byte {
	t.Helper()
	const instance = "<urn:uuid:4f1c0f2e-6f7a-4b8e-9d39-0b6c4b0e7d1a>"
	if c.services == nil {
		tok := e.FCM.Token(i)
		tgt := e.FCM.Target(tok)
		tgt.Instance = instance
		if res := e.d.Send(ctxFor(t, 5*time.Second), tgt, c.m); res.Outcome != push.Delivered {
			t.Fatalf("%s: %+v", c.name, res)
		}
		ps := e.FCM.PushesTo(tok)
		if len(ps) != 1 {
			t.Fatalf("%s: %d pushes to the FCM token", c.name, len(ps))
		}
		return ps[0].Payload
	}
	tgt, toks := iphone(e.APNs, i, c.services...)
	tgt.Instance = instance
	if res := e.d.Send(ctxFor(t, 5*time.Second), tgt, c.m); res.Outcome != push.Delivered {
		t.Fatalf("%s: %+v", c.name, res)
	}
	ps := e.APNs.PushesTo(toks[c.service])
	if len(ps) != 1 || !ps[0].Accepted() {
		t.Fatalf("%s: pushes to the %s token: %+v", c.name, c.service, ps)
	}
	if got := ps[0].Header.Get("apns-push-type"); got != c.pushType {
		t.Fatalf("%s: apns-push-type %q, want %q", c.name, got, c.pushType)
	}
	return ps[0].Payload
}

func decodeInstance(t *testing.T, b []byte) any {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("payload %s: %v", b, err)
	}
	return v
}

// without returns a copy of the JSON document b without the member at the
// JSON pointer ptr, and whether there was one.
func without(t *testing.T, b []byte, ptr string) (any, bool) {
	t.Helper()
	doc := decodeInstance(t, b)
	keys := strings.Split(strings.TrimPrefix(ptr, "/"), "/")
	obj, ok := doc.(map[string]any)
	for _, k := range keys[:len(keys)-1] {
		if !ok {
			return nil, false
		}
		obj, ok = obj[k].(map[string]any)
	}
	if !ok {
		return nil, false
	}
	last := keys[len(keys)-1]
	if _, has := obj[last]; !has {
		return nil, false
	}
	delete(obj, last)
	return doc, true
}

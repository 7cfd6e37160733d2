package push_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/fcm"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

func TestValidate(t *testing.T) {
	f := pushtest.NewFakes(t)
	if errs := f.Config.Validate(); len(errs) != 0 {
		t.Fatalf("fake config invalid: %v", errs)
	}
	dir := t.TempDir()
	notKey := filepath.Join(dir, "notkey.p8")
	if err := os.WriteFile(notKey, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	ios := f.APNs.App("ios")
	android := f.FCM.App("android")
	cases := []struct {
		name string
		edit func(c *push.Config)
		want string
	}{
		{"missing key file", func(c *push.Config) { c.Apps[0].APNs.KeyFile = "/nonexistent/x.p8" },
			`push.apps[0].apns.key_file: file "/nonexistent/x.p8" not readable`},
		{"key not p8", func(c *push.Config) { c.Apps[0].APNs.KeyFile = notKey }, `push.apps[0].apns.key_file: file "` + notKey + `" is not a .p8 ECDSA key`},
		{"no key id", func(c *push.Config) { c.Apps[0].APNs.KeyID = "" }, "push.apps[0].apns.key_id: required with key_file"},
		{"no team id", func(c *push.Config) { c.Apps[0].APNs.TeamID = "" }, "push.apps[0].apns.team_id: required with key_file"},
		{"both auths", func(c *push.Config) { c.Apps[0].APNs.CertFile = f.APNs.ClientCertFile }, "push.apps[0].apns: key_file and cert_file both set"},
		{"no auth", func(c *push.Config) { c.Apps[0].APNs.KeyFile = "" }, "push.apps[0].apns.key_file: required (or cert_file)"},
		{"bad endpoint", func(c *push.Config) { c.Apps[0].APNs.Endpoint = "http://x" }, `push.apps[0].apns.endpoint: "http://x" is not an https URL`},
		{"voip bundle", func(c *push.Config) { c.Apps[0].APNs.BundleID = "a.b.voip" }, "push.apps[0].apns.bundle_id:"},
		{"bad ca", func(c *push.Config) { c.Apps[0].APNs.CAFile = notKey }, "push.apps[0].apns.ca_file: file"},
		{"bad provider", func(c *push.Config) { c.Apps[1].Provider = "webpush" }, `push.apps[1].provider: "webpush" is not apns or fcm`},
		{"dup name", func(c *push.Config) { c.Apps[1].Name = "ios" }, `push.apps[1].name: "ios" already used by push.apps[0]`},
		{"fcm creds", func(c *push.Config) { c.Apps[1].FCM.CredentialsFile = notKey }, `push.apps[1].fcm.credentials_file: file "` + notKey + `" is not JSON`},
		{"fcm project", func(c *push.Config) { c.Apps[1].FCM.ProjectID = "" }, "push.apps[1].fcm.project_id: required"},
		{"fcm on apns", func(c *push.Config) { c.Apps[0].FCM.ProjectID = "p" }, "push.apps[0].fcm: set on an apns app"},
		{"negative", func(c *push.Config) { c.MaxInFlight = -1 }, "push.max_in_flight:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := push.Config{Apps: []push.AppConfig{ios, android}}
			c.edit(&cfg)
			errs := cfg.Validate()
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			if len(errs) == 0 || !strings.Contains(strings.Join(msgs, "\n"), c.want) {
				t.Fatalf("errors %q, want one containing %q", msgs, c.want)
			}
			if _, err := push.New(cfg, nil, nil, push.WithFCM(fcm.New)); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
	// Every problem is reported at once.
	cfg := push.Config{Apps: []push.AppConfig{{Name: "a", Provider: "apns"}, {Provider: "fcm"}}}
	if errs := cfg.Validate(); len(errs) < 4 {
		t.Errorf("only %d errors for a config with many problems: %v", len(errs), errs)
	}
}

// TestConfigTags checks every config field has a snake_case yaml tag and an
// allowed type, as the lead's strict loader expects.
func TestConfigTags(t *testing.T) {
	allowed := map[reflect.Type]bool{reflect.TypeFor[string](): true, reflect.TypeFor[int](): true,
		reflect.TypeFor[bool](): true, reflect.TypeFor[time.Duration](): true, reflect.TypeFor[[]string](): true}
	var walk func(tp reflect.Type, path string)
	walk = func(tp reflect.Type, path string) {
		for i := range tp.NumField() {
			fl := tp.Field(i)
			tag := fl.Tag.Get("yaml")
			if tag == "" || tag != strings.ToLower(tag) || strings.ContainsAny(tag, "-, ") {
				t.Errorf("%s.%s: yaml tag %q", path, fl.Name, tag)
			}
			ft := fl.Type
			switch {
			case allowed[ft]:
			case ft.Kind() == reflect.Struct:
				walk(ft, path+"."+tag)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), path+"."+tag+"[]")
			default:
				t.Errorf("%s.%s: type %v not allowed", path, fl.Name, ft)
			}
		}
	}
	walk(reflect.TypeFor[push.Config](), "push")
}

// TestConnectionReuse: many pushes, one TLS connection per app.
func TestConnectionReuse(t *testing.T) {
	e := newEnv(t)
	for i := range 20 {
		e.d.Send(ctxFor(t, 5*time.Second), e.APNs.Target(e.APNs.VoIPToken(i)), callMsg())
		e.d.Send(ctxFor(t, 5*time.Second), e.FCM.Target(e.FCM.Token(i)), callMsg())
	}
	if n := e.APNs.Conns(); n != 1 {
		t.Errorf("fake APNs saw %d connections, want 1", n)
	}
	// FCM: one for the OAuth token, reused for sends (same host).
	if n := e.FCM.Conns(); n != 1 {
		t.Errorf("fake FCM saw %d connections, want 1", n)
	}
}

package config

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzConfigParse (seeds in testdata/fuzz/FuzzConfigParse) feeds arbitrary YAML and one environment override
// through decoding, the overrides and validation. No input may panic; a
// rejected config never yields a Config; an accepted one passes Validate
// again and never prints its secrets.
func FuzzConfigParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte, env string) {
		var environ []string
		if env != "" {
			environ = []string{env}
		}
		cfg, err := Parse(raw, environ)
		if err != nil {
			if !reflect.ValueOf(cfg).IsZero() {
				t.Fatalf("rejected config (%v) came back non-zero", err)
			}
			if s := string(secretOf(raw, env)); len(s) >= 6 && strings.Contains(err.Error(), s) {
				t.Fatalf("error echoes the seal key: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		dump, err := Dump(cfg)
		if err != nil {
			t.Fatalf("dump: %v", err)
		}
		for _, s := range []Secret{cfg.Seal.Key} {
			if len(s) >= 6 && strings.Contains(dump, string(s)) {
				t.Fatal("dump prints the seal key")
			}
		}
		for _, p := range cfg.Seal.Previous {
			if len(p.Key) >= 6 && strings.Contains(dump, string(p.Key)) {
				t.Fatal("dump prints a previous seal key")
			}
		}
	})
}

// secretOf is the seal key an environment override sets, if any.
func secretOf(_ []byte, env string) Secret {
	if v, ok := strings.CutPrefix(env, EnvName("seal.key")+"="); ok {
		return Secret(v)
	}
	return ""
}

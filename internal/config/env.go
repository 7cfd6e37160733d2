package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/configerr"
)

// EnvPrefix starts every environment override: SIPWAKE_ + the key's path
// upper-cased with _ between levels (sip.upstream -> SIPWAKE_SIP_UPSTREAM).
const EnvPrefix = "SIPWAKE_"

var durationType = reflect.TypeOf(time.Duration(0))

// applyEnv walks the config by its yaml keys and sets every field whose
// variable is present. Lists and maps take their value as YAML.
func applyEnv(cfg *Config, environ []string) error {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[k] = v
		}
	}
	if len(env) == 0 {
		return nil
	}
	known := map[string]bool{}
	var problems configerr.List
	walkEnv(reflect.ValueOf(cfg).Elem(), "", func(path string, field reflect.Value) {
		name := EnvName(path)
		known[name] = true
		raw, ok := env[name]
		if !ok {
			return
		}
		if err := setFromString(field, raw); err != nil {
			problems.Add(path, "%s=%q: %v", name, shown(field, raw), err)
		}
	})
	for name := range env {
		if !known[name] {
			// No key to name: the variable is the path of the mistake.
			problems.Add(name, "no such configuration key")
		}
	}
	if len(problems) > 0 {
		return &Error{Problems: problems}
	}
	return nil
}

// EnvName is the environment variable that overrides the key at path.
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

func walkEnv(v reflect.Value, prefix string, visit func(path string, field reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		field := v.Field(i)
		if field.Kind() == reflect.Struct && field.Type() != durationType {
			walkEnv(field, path, visit)
			continue
		}
		visit(path, field)
	}
}

func setFromString(field reflect.Value, raw string) error {
	switch {
	case field.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 30s, 5m, 120h)")
		}
		field.SetInt(int64(d))
	case field.Kind() == reflect.String:
		field.SetString(raw)
	case field.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("not a boolean (true or false)")
		}
		field.SetBool(b)
	case field.Kind() >= reflect.Int && field.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("not a whole number")
		}
		field.SetInt(n)
	case field.Kind() == reflect.Slice && field.Type().Elem().Kind() == reflect.String && !strings.HasPrefix(strings.TrimSpace(raw), "["):
		parts := strings.Split(raw, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		field.Set(reflect.ValueOf(parts).Convert(field.Type()))
	default:
		fresh := reflect.New(field.Type())
		if err := decodeStrict([]byte(raw), fresh.Interface()); err != nil {
			return fmt.Errorf("not valid YAML for this key: %w", err)
		}
		field.Set(fresh.Elem())
	}
	return nil
}

// shown keeps secrets out of error messages.
func shown(field reflect.Value, raw string) string {
	if field.Type() == reflect.TypeOf(Secret("")) {
		return redacted
	}
	return raw
}

// Dump renders the effective config as YAML with secrets redacted.
func Dump(c Config) (string, error) {
	out, err := yaml.Marshal(c)
	return string(out), err
}

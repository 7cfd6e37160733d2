// Package deploy holds docker-compose.yaml and the Kubernetes manifests of
// deploy/kubernetes to the repository they deploy: what they mount exists
// (or deploy/README.md says how to make it), sipwake reads every variable
// they set and its own config loader accepts the config they give it, and
// the names, ports and timings that must agree do. It has tests only; the
// Kamailio configs are run for real by internal/app's tests.
package deploy

import (
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// repoFile reads a file of the repository (a slash path from its root).
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// repoHas reports whether the repository has a file or directory at rel.
func repoHas(rel string) bool {
	_, err := os.Stat(filepath.Join("..", filepath.FromSlash(rel)))
	return err == nil
}

// kamailioDefines are the #!trydef defaults of a Kamailio config, the
// settings kamailio -A NAME=value overrides; a quoted value is unquoted.
func kamailioDefines(t *testing.T, cfg string) map[string]string {
	t.Helper()
	defs := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^#!trydef\s+(\w+)\s+(.+?)\s*$`).FindAllStringSubmatch(cfg, -1) {
		v := m[2]
		if strings.HasPrefix(v, `"`) {
			u, err := strconv.Unquote(v)
			if err != nil {
				t.Fatalf("#!trydef %s %s: %v", m[1], v, err)
			}
			v = u
		}
		defs[m[1]] = v
	}
	if len(defs) == 0 {
		t.Fatal("the Kamailio config has no #!trydef settings")
	}
	return defs
}

// commandFlag is the value after flag in a command line ("" if absent).
func commandFlag(argv []string, flag string) string {
	for i, a := range argv {
		if a == flag && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// imageConfigPath is the config file the image's ENTRYPOINT gives sipwake
// (Dockerfile), the file a deployment must provide or override.
func imageConfigPath(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^ENTRYPOINT\s+(\[.*\])\s*$`).FindStringSubmatch(repoFile(t, "Dockerfile"))
	if m == nil {
		t.Fatal("Dockerfile: no ENTRYPOINT in exec form")
	}
	var argv []string
	if err := yaml.Unmarshal([]byte(m[1]), &argv); err != nil {
		t.Fatalf("Dockerfile ENTRYPOINT: %v", err)
	}
	p := commandFlag(argv, "-config")
	if p == "" {
		t.Fatalf("Dockerfile ENTRYPOINT %v gives no -config", argv)
	}
	return p
}

// container is what a sipwake container is given: its config file, its
// environment, and the files its mounts put in each directory.
type container struct {
	config string
	env    map[string]string
	// mounts maps a directory of the container to the names of the files
	// a mount puts there (none for an empty, writable directory).
	mounts map[string][]string
}

// loadSipwake runs sipwake's own config loader (config.Parse) on what c
// gives sipwake, in a temporary directory standing for the container's
// filesystem: the mounted files are made there and every path under a
// mount is moved there, so a file the config names that no mount provides
// is still a path outside it (see mountedFiles). The loader reads the push
// credentials, so those are real: a fresh .p8 key, a fake FCM's service
// account. It returns the config and the directory.
func loadSipwake(t *testing.T, c container) (config.Config, string) {
	t.Helper()
	root := t.TempDir()
	dirs := make([]string, 0, len(c.mounts))
	for d := range c.mounts {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) }) // deepest first
	var pairs []string
	for _, d := range dirs {
		pairs = append(pairs, path.Clean(d)+"/", root+path.Clean(d)+"/")
		if err := os.MkdirAll(root+d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range c.mounts[d] {
			if err := os.WriteFile(filepath.Join(root+d, f), []byte("mounted\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	moved := strings.NewReplacer(pairs...)
	raw := moved.Replace(c.config)
	var environ []string
	for k, v := range c.env {
		environ = append(environ, k+"="+moved.Replace(v))
	}

	apps := pushApps(t, raw, environ)
	fcm := pushtest.NewFCM(t)
	sa, err := os.ReadFile(fcm.CredentialsFile)
	if err != nil {
		t.Fatal(err)
	}
	inRoot := func(key, p string) {
		if !strings.HasPrefix(p, root+"/") {
			t.Fatalf("%s %s: no mount provides it", key, p)
		}
	}
	for _, a := range apps {
		if p := a.APNs.KeyFile; p != "" {
			inRoot("push app "+a.Name+" apns.key_file", p)
			if err := pushtest.WriteP8Key(p); err != nil {
				t.Fatal(err)
			}
		}
		if p := a.FCM.CredentialsFile; p != "" {
			inRoot("push app "+a.Name+" fcm.credentials_file", p)
			if err := os.WriteFile(p, sa, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg, err := config.Parse([]byte(raw), environ)
	if err != nil {
		t.Fatalf("sipwake refuses the config:\n%v", err)
	}
	return cfg, root
}

// pushApps reads push.apps from the config text and its environment
// override, before the loader, which needs their files in place.
func pushApps(t *testing.T, raw string, environ []string) []push.AppConfig {
	t.Helper()
	var file struct {
		Push push.Config `yaml:"push"`
	}
	if err := yaml.Unmarshal([]byte(raw), &file); err != nil {
		t.Fatal(err)
	}
	apps := file.Push.Apps
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, config.EnvName("push.apps")+"="); ok {
			apps = nil
			if err := yaml.Unmarshal([]byte(v), &apps); err != nil {
				t.Fatalf("%s: %v", config.EnvName("push.apps"), err)
			}
		}
	}
	return apps
}

// mountedFiles checks that every file the config names (each key ending
// in _file) is one a mount provides: under root (loadSipwake) and there.
// It returns how many it checked.
func mountedFiles(t *testing.T, cfg config.Config, root string) int {
	t.Helper()
	n := 0
	eachFile(reflect.ValueOf(cfg), "", func(key, p string) {
		n++
		if _, err := os.Stat(p); err != nil || !strings.HasPrefix(p, root+"/") {
			t.Errorf("%s: %s is not a file any mount provides", key, strings.TrimPrefix(p, root))
		}
	})
	return n
}

// eachFile calls fn with every non-empty config key ending in _file.
func eachFile(v reflect.Value, key string, fn func(key, path string)) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			eachFile(v.Field(i), strings.TrimPrefix(key+"."+tag, "."), fn)
		}
	case reflect.Slice:
		for i := range v.Len() {
			eachFile(v.Index(i), key+"["+strconv.Itoa(i)+"]", fn)
		}
	case reflect.String:
		if strings.HasSuffix(key, "_file") && v.String() != "" {
			fn(key, v.String())
		}
	}
}

package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/configerr"
	"github.com/sipwake/sipwake/internal/sip"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sipwake.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultIsValid(t *testing.T) {
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.Store.RecordTTL != DefaultRecordTTL || cfg.SIP.Listen.UDP != "127.0.0.1:5060" || cfg.SIP.Listen.TCP != "127.0.0.1:5060" {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := Load(filepath.Join("..", "..", "configs", "sipwake.yaml"), nil)
	if err != nil {
		t.Fatalf("configs/sipwake.yaml: %v", err)
	}
	if cfg.SIP.UpstreamMode == "" {
		t.Fatal("example config lost sip.upstream_mode")
	}
}

// redisYAML starts a valid Redis store section; cases append keys of
// store.redis to it.
const redisYAML = "seal:\n  key: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\nstore:\n  backend: redis\n  redis:\n    addrs: [127.0.0.1:6379]\n"

func TestBadValuesNameKeyValueAndAllowed(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"ttl too short", "store:\n  record_ttl: 48h\n", []string{"store.record_ttl", "48h0m0s", "between 72h (3 days) and 144h (6 days)"}},
		{"ttl too long", "store:\n  record_ttl: 200h\n", []string{"store.record_ttl", "200h0m0s"}},
		{"mode", "sip:\n  upstream_mode: sideways\n", []string{"sip.upstream_mode", `"sideways"`, "path or contact"}},
		{"upstream", "sip:\n  upstream: http://x\n", []string{"sip.upstream", "http://x", "SIP URI"}},
		{"listen", "sip:\n  listen:\n    udp: nonsense\n", []string{"sip.listen.udp", "nonsense", "host:port"}},
		{"tls without cert", "sip:\n  listen:\n    tls: 127.0.0.1:5061\n", []string{"sip.listen.tls", "tls_cert_file"}},
		{"log level", "log:\n  level: loud\n", []string{"log.level", "loud", "debug, info, warn or error"}},
		{"key and file", "seal:\n  key: abc\n  key_file: /x\n", []string{"seal.key", "not both"}},
		{"previous without key", "seal:\n  previous:\n    - id: old\n", []string{"seal.previous[0]", "exactly one of key or key_file"}},
		{"memory limit not a size", "runtime:\n  memory_limit: lots\n", []string{"runtime.memory_limit", `"lots"`, "256MiB"}},
		{"memory limit too small", "runtime:\n  memory_limit: 10MiB\n", []string{"runtime.memory_limit", "64MiB to 1TiB"}},
		{"heap floor not a size", "runtime:\n  heap_floor: big\n", []string{"runtime.heap_floor", `"big"`, "0 for off"}},
		{"gc percent", "runtime:\n  gc_percent: -5\n", []string{"runtime.gc_percent", `"-5"`, "1 to 10000"}},
		{"min replicas", redisYAML + "    min_replicas: -1\n", []string{"store.redis.min_replicas", `"-1"`, "0 (do not wait) to 16"}},
		{"min replicas on a cluster", redisYAML + "    cluster: true\n    min_replicas: 1\n", []string{"store.redis.min_replicas", "not supported with a Redis Cluster"}},
		{"replica timeout", redisYAML + "    replica_timeout: 1m\n", []string{"store.redis.replica_timeout", "1m0s", "between 10ms and 5s"}},
		{"tls file without tls", redisYAML + "    tls_ca_file: /etc/ca.pem\n", []string{"store.redis.tls_ca_file", "tls is off"}},
		{"tls cert without key", redisYAML + "    tls: true\n    tls_cert_file: /etc/c.pem\n", []string{"store.redis.tls_cert_file", "set both or neither"}},
		{"tls ca unreadable", redisYAML + "    tls: true\n    tls_ca_file: /nonexistent/ca.pem\n", []string{"store.redis.tls_ca_file", "/nonexistent/ca.pem"}},
		{"sentinel password twice", redisYAML + "    master_name: m\n    sentinel_password: a\n    sentinel_password_file: /x\n", []string{"store.redis.sentinel_password", "not both"}},
		{"sentinel user without sentinels", redisYAML + "    sentinel_username: u\n", []string{"store.redis.sentinel_username", "need master_name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, tc.yaml), nil)
			if err == nil {
				t.Fatal("bad config accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	_, err := Load(writeFile(t, "store:\n  record_ttl: 1h\nlog:\n  format: xml\n"), nil)
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per problem, got %d: %q", len(lines), err)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := Load(writeFile(t, "sip:\n  upstraem: sip:x\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "upstraem") {
		t.Fatalf("unknown key not named: %v", err)
	}
}

func TestEnvOverrides(t *testing.T) {
	path := writeFile(t, "sip:\n  upstream: sip:10.0.0.1\n")
	cfg, err := Load(path, []string{
		"SIPWAKE_SIP_UPSTREAM=sip:127.0.0.9:5070;transport=tcp",
		"SIPWAKE_STORE_RECORD_TTL=96h",
		"SIPWAKE_SIP_LISTEN_TCP=",
		"SIPWAKE_SEAL_KEY=c2VjcmV0",
		"SIPWAKE_SEAL_PREVIOUS=[{id: k0, key_file: /run/k0}]",
		"SIPWAKE_RUNTIME_MEMORY_LIMIT=192MiB",
		"SIPWAKE_RUNTIME_HEAP_FLOOR=0",
		"PATH=/usr/bin",
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := cfg.Runtime.MemoryLimitBytes(); err != nil || n != 192<<20 {
		t.Fatalf("runtime.memory_limit from env = %d, %v", n, err)
	}
	if n, err := cfg.Runtime.HeapFloorBytes(); err != nil || n != 0 {
		t.Fatalf("runtime.heap_floor from env = %d, %v", n, err)
	}
	if cfg.SIP.Upstream != "sip:127.0.0.9:5070;transport=tcp" || cfg.Store.RecordTTL != 96*time.Hour || cfg.SIP.Listen.TCP != "" {
		t.Fatalf("overrides not applied: %+v", cfg.SIP)
	}
	if cfg.Seal.Key != "c2VjcmV0" || len(cfg.Seal.Previous) != 1 || cfg.Seal.Previous[0].KeyFile != "/run/k0" {
		t.Fatalf("seal overrides not applied: %#v", cfg.Seal)
	}
	if got := EnvName("sip.upstream"); got != "SIPWAKE_SIP_UPSTREAM" {
		t.Fatalf("EnvName = %s", got)
	}
}

func TestEnvErrorsNameTheVariable(t *testing.T) {
	_, err := Load("", []string{"SIPWAKE_STORE_RECORD_TTL=five days", "SIPWAKE_SIP_UPSTREM=x"})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"SIPWAKE_STORE_RECORD_TTL", "five days", "not a duration", "SIPWAKE_SIP_UPSTREM: no such configuration key"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q missing %q", err, w)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	const value = "c3VwZXJzZWNyZXRrZXltYXRlcmlhbA=="
	cfg, err := Load("", []string{"SIPWAKE_SEAL_KEY=" + value})
	if err != nil {
		t.Fatal(err)
	}
	dump, err := Dump(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(cfg.Seal.Key), fmt.Sprintf("%v %+v %#v", cfg.Seal, cfg.Seal, cfg.Seal), dump} {
		if strings.Contains(s, value) {
			t.Fatalf("secret printed: %s", s)
		}
	}
	if !strings.Contains(dump, "<secret>") {
		t.Fatalf("dump lacks redaction marker: %s", dump)
	}
	_, err = Load("", []string{"SIPWAKE_SEAL_PREVIOUS=" + value + ": ["})
	if err == nil {
		t.Fatal("bad YAML accepted")
	}
}

func TestParseUpstream(t *testing.T) {
	cases := []struct {
		in   string
		want sip.Upstream
		ok   bool
	}{
		{"sip:reg.example.com", sip.Upstream{Host: "reg.example.com", Port: 5060, Transport: "udp"}, true},
		{"sip:127.0.0.2:5070;transport=TCP", sip.Upstream{Host: "127.0.0.2", Port: 5070, Transport: "tcp"}, true},
		{"sips:reg.example.com", sip.Upstream{Host: "reg.example.com", Port: 5061, Transport: "tls"}, true},
		{"sip:[::1]:5080", sip.Upstream{Host: "::1", Port: 5080, Transport: "udp"}, true},
		{"sip:host;transport=sctp", sip.Upstream{}, false},
		{"sip:host:99999", sip.Upstream{}, false},
		{"tel:+123", sip.Upstream{}, false},
		{"sip:", sip.Upstream{}, false},
	}
	for _, tc := range cases {
		got, err := ParseUpstream(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseUpstream(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

// Every key of the config has its place in the annotated example.
func TestExampleConfigNamesEveryKey(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "configs", "sipwake.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	cfg := Default()
	walkEnv(reflect.ValueOf(&cfg).Elem(), "", func(path string, _ reflect.Value) {
		var node any = doc
		for _, part := range strings.Split(path, ".") {
			m, ok := node.(map[string]any)
			if !ok {
				t.Errorf("configs/sipwake.yaml lacks %s", path)
				return
			}
			if node, ok = m[part]; !ok {
				t.Errorf("configs/sipwake.yaml lacks %s", path)
				return
			}
		}
	})
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "1GiB": 1 << 30, "300MB": 300e6, "1048576": 1 << 20, " 64 MiB ": 64 << 20, "2TB": -1, "1.5GiB": -1, "-1MiB": -1, "MiB": -1} {
		got, err := ParseBytes(in)
		if want < 0 {
			if err == nil {
				t.Errorf("ParseBytes(%q) = %d, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// Phones on mobile networks often have only IPv6: sipwake listens on IPv6
// and dual-stack addresses and advertises a bracketed IPv6 public address.
func TestIPv6Addresses(t *testing.T) {
	base := "sip:\n  upstream: sip:127.0.0.1:5070\n"
	cases := []struct {
		name, yaml string
		bad        []string // nil: valid
	}{
		{"dual-stack listen", "  listen:\n    udp: '[::]:5060'\n    tcp: '[::]:5060'\n", nil},
		{"loopback listen", "  listen:\n    udp: '[::1]:5060'\n", nil},
		{"global listen", "  listen:\n    tcp: '[2001:db8::1]:5060'\n", nil},
		{"public bracketed", "  public_address: '[2001:db8::1]'\n", nil},
		{"public bracketed with port", "  public_address: '[2001:db8::1]:5060'\n", nil},
		{"public ipv6 beside ipv4", "  public_address: 192.0.2.1\n  public_address_ipv6: '[2001:db8::1]:5060'\n", nil},
		{"listen unbracketed", "  listen:\n    udp: '::1:5060'\n", []string{"sip.listen.udp", `"::1:5060"`, "[::]:5060"}},
		{"listen bracketed ipv4", "  listen:\n    udp: '[127.0.0.1]:5060'\n", []string{"sip.listen.udp"}},
		{"listen not an address", "  listen:\n    udp: '[2001:db8::zz]:5060'\n", []string{"sip.listen.udp", "2001:db8::zz"}},
		{"listen port too big", "  listen:\n    tcp: '[::1]:70000'\n", []string{"sip.listen.tcp", "70000"}},
		{"public unbracketed", "  public_address: '2001:db8::1'\n", []string{"sip.public_address", "2001:db8::1", "in brackets"}},
		{"public unclosed", "  public_address: '[2001:db8::1'\n", []string{"sip.public_address", "[2001:db8::1"}},
		{"public bad literal", "  public_address: '[2001:db8::g]:5060'\n", []string{"sip.public_address", "2001:db8::g"}},
		{"public ipv6 not ipv6", "  public_address_ipv6: 192.0.2.1\n", []string{"sip.public_address_ipv6", "192.0.2.1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(writeFile(t, base+tc.yaml), nil)
			if tc.bad == nil {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("bad config accepted")
			}
			for _, w := range tc.bad {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestIPv6NodeAddressAndPrefixes(t *testing.T) {
	ok := "sip:\n  upstream: sip:[2001:db8::5]:5070;transport=tcp\ncluster:\n  node_address: '[2001:db8::2]:5060'\n" +
		"calls:\n  trusted_sources: ['2001:db8:1::/48', '10.0.0.0/8']\n" +
		"trunks:\n  - name: carrier\n    sources: ['2001:db8:2::/64']\n    domain: example.test\n"
	if _, err := Load(writeFile(t, ok), nil); err != nil {
		t.Fatalf("IPv6 node address, upstream and prefixes refused: %v", err)
	}
	bad := "cluster:\n  node_address: '2001:db8::2:5060'\ncalls:\n  trusted_sources: ['2001:db8:1::/129']\n"
	_, err := Load(writeFile(t, bad), nil)
	if err == nil {
		t.Fatal("bad IPv6 node address and prefix accepted")
	}
	for _, w := range []string{"cluster.node_address", "2001:db8::2:5060", "calls.trusted_sources", "2001:db8:1::/129"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestParsePublicAddress(t *testing.T) {
	cases := []struct {
		in   string
		host string
		port int
	}{
		{"sip.example.com", "sip.example.com", 0},
		{"sip.example.com:5080", "sip.example.com", 5080},
		{"192.0.2.1:5060", "192.0.2.1", 5060},
		{"[2001:db8::1]", "2001:db8::1", 0},
		{"[2001:db8::1]:5061", "2001:db8::1", 5061},
	}
	for _, tc := range cases {
		host, port, err := ParsePublicAddress(tc.in)
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("ParsePublicAddress(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

// Every problem of a config, whichever section found it, is a Problem that
// names its key by a dotted path, so that an operator (or a tool) can find
// the line to fix.
func TestEveryProblemNamesItsKeyPath(t *testing.T) {
	raw := `sip:
  listen: {udp: nonsense, tls: 127.0.0.1:5061}
  upstream_mode: sideways
calls:
  wait: 500h
  trusted_sources: [nope]
trunks:
  - sources: []
store:
  backend: redis
  redis: {addrs: ["x"], db: -1}
seal:
  key_id: "a b"
  previous: [{id: ""}]
log: {level: loud}
push:
  max_in_flight: -1
  apps: [{provider: webpush}, {name: a, provider: apns}]
cluster: {node_address: nowhere}
api:
  listen: 0.0.0.0:8443
  keys: [{app: "a b", sha256: plain}]
admin: {listen: 0.0.0.0:9060, token_sha256: nothex}
shutdown: {drain_timeout: 1h}
runtime: {memory_limit: lots, gc_percent: -5}
`
	_, err := Parse([]byte(raw), []string{"SIPWAKE_STORE_SWEEP_INTERVAL=soon"})
	var cfgErr *Error
	if !errors.As(err, &cfgErr) {
		t.Fatalf("want a *config.Error, got %v", err)
	}
	// Env overrides are applied before validation and fail on their own.
	if len(cfgErr.Problems) != 1 || cfgErr.Problems[0].Path != "store.sweep_interval" {
		t.Fatalf("env problems: %v", err)
	}
	_, err = Parse([]byte(raw), nil)
	if !errors.As(err, &cfgErr) {
		t.Fatalf("want a *config.Error, got %v", err)
	}
	sections := map[string]bool{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var p *configerr.Problem
		if !errors.As(e, &p) {
			t.Errorf("%q is not a *configerr.Problem", e)
			continue
		}
		section, _, dotted := strings.Cut(p.Path, ".")
		if !dotted || section == "" || p.Msg == "" {
			t.Errorf("problem %q: want a dotted path and a message", p)
		}
		sections[section] = true
	}
	for _, s := range []string{"sip", "calls", "trunks[0]", "store", "seal", "log", "push", "cluster", "api", "admin", "shutdown", "runtime"} {
		if !sections[s] {
			t.Errorf("no problem found in %s: %v", s, err)
		}
	}
}

// store.redis.timeout bounds each Redis command: 0 takes the default, and
// a bound too short for a round trip or too long to fail a REGISTER in
// time is refused with its path.
func TestRedisTimeoutBounds(t *testing.T) {
	for in, ok := range map[string]bool{"0s": true, "10ms": true, "300ms": true, "1m": true, "5ms": false, "2m": false, "-1s": false} {
		raw := "store:\n  backend: redis\n  redis: {addrs: [\"127.0.0.1:6379\"], timeout: " + in + "}\n"
		_, err := Parse([]byte(raw), nil)
		found := false
		var cfgErr *Error
		if errors.As(err, &cfgErr) {
			for _, p := range cfgErr.Problems {
				found = found || p.Path == "store.redis.timeout"
			}
		}
		if found == ok {
			t.Errorf("timeout %s: problem reported %v, want %v (%v)", in, found, !ok, err)
		}
	}
}

// Package config owns sipwake's configuration: the YAML file, the SIPWAKE_*
// environment overrides, defaults and validation. It reports every problem at
// once, each naming its key, the value and what is allowed. It does not open
// files other than the config itself and the secrets it is pointed at.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/configerr"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/sip"
)

// Record TTL bounds: long enough to survive a weekend without the app being
// opened, short enough that a forgotten account does not linger.
const (
	MinRecordTTL     = 72 * time.Hour
	MaxRecordTTL     = 144 * time.Hour
	DefaultRecordTTL = 120 * time.Hour
)

// Config is the whole of sipwake's configuration.
type Config struct {
	SIP    SIP         `yaml:"sip"`
	Calls  Calls       `yaml:"calls"`
	Trunks []Trunk     `yaml:"trunks"`
	Store  Store       `yaml:"store"`
	Seal   Seal        `yaml:"seal"`
	Log    Log         `yaml:"log"`
	Push   push.Config `yaml:"push"`
	// Cluster matters with store.backend redis: several nodes.
	Cluster Cluster `yaml:"cluster"`
	// API is the HTTPS handover API apps post their accounts to.
	API api.Config `yaml:"api"`
	// Admin is the operator listener (metrics, health, admin API).
	Admin Admin `yaml:"admin"`
	// Shutdown bounds the graceful stop.
	Shutdown Shutdown `yaml:"shutdown"`
	// Runtime tunes memory use and garbage collection.
	Runtime Runtime `yaml:"runtime"`
}

// SIP is the wire side: where sipwake listens and where it forwards.
type SIP struct {
	Listen sip.Listen `yaml:"listen"`
	// PublicAddress is host[:port] put in Path, Contact and Record-Route so
	// that the registrar and callers reach sipwake; empty means the UDP
	// (or TCP) listen address.
	PublicAddress string `yaml:"public_address"`
	// PublicAddressIPv6 is what sipwake puts in Path and Record-Route
	// toward peers it reaches over IPv6 when it listens on both families
	// ([::]:5060) and public_address is an IPv4 address or a name only
	// IPv4 peers resolve; empty: public_address for both.
	PublicAddressIPv6 string `yaml:"public_address_ipv6"`
	// Upstream is the provider's registrar/proxy as a SIP URI.
	Upstream string `yaml:"upstream"`
	// UpstreamMode is how sipwake stays on the path of calls: "path"
	// (RFC 3327 Path header) or "contact" (Contact rewritten to sipwake).
	UpstreamMode string `yaml:"upstream_mode"`
	// UpstreamTimeout bounds how long a device waits for the registrar.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// UserAgent is sent in requests sipwake originates.
	UserAgent string `yaml:"user_agent"`
	// RegisterRate bounds REGISTERs per second from one source address
	// (beyond it: 503 with Retry-After); 0 turns the limit off.
	RegisterRate float64 `yaml:"register_rate"`
	// RegisterBurst is how many REGISTERs one source may send at once.
	RegisterBurst int `yaml:"register_burst"`
	// MaxRegistersInFlight bounds REGISTERs waiting on the registrar; past
	// it new ones get 503 at once instead of queueing without end.
	MaxRegistersInFlight int `yaml:"max_registers_in_flight"`
}

// Calls is the policy for requests that must wake a device.
type Calls struct {
	// Wait is how long a call is held for a sleeping device (1s..120s).
	Wait time.Duration `yaml:"wait"`
	// Ringing sends 180 Ringing to the caller as soon as the push is sent,
	// and progress 180s as the push is delivered and the device connects.
	Ringing bool `yaml:"ringing"`
	// TrustedSources are the CIDRs that may send calls for bindings (the
	// provider's registrar/proxies); the upstream's own address always may.
	TrustedSources []string `yaml:"trusted_sources"`
	// RefreshLead is how long before the upstream registration lapses a
	// device is woken to refresh it (and the value of the Feature-Caps
	// +sip.pnsreg sipwake answers with).
	RefreshLead time.Duration `yaml:"refresh_lead"`
	// AwakePushDelay is how long a call waits for a device with an open
	// TCP/TLS flow to answer over it before it is pushed all the same (a
	// suspended app keeps its socket but cannot answer); a Contact's
	// pn-timeout (liblinphone: 0) overrides it. 0 pushes at once.
	AwakePushDelay time.Duration `yaml:"awake_push_delay"`
	// ExpiryWarnings are how long before a record's TTL runs out the user is
	// told (visible push) to open the app once.
	ExpiryWarnings []time.Duration `yaml:"expiry_warnings"`
	// PushesPerDevicePerMinute caps call pushes to one device, so an INVITE
	// flood for one AOR does not ring the phone without end; 0 turns the
	// cap off.
	PushesPerDevicePerMinute int `yaml:"pushes_per_device_per_minute"`
}

// Trunk is a provider that sends calls straight to sipwake: the
// Request-URI's user, at Domain, is the AOR called.
type Trunk struct {
	Name    string   `yaml:"name"`
	Sources []string `yaml:"sources"`
	Domain  string   `yaml:"domain"`
}

// Store says where records live and for how long.
type Store struct {
	// Backend is "bolt" (one file in data_dir, the default) or "redis"
	// (shared by several sipwake nodes).
	Backend string `yaml:"backend"`
	DataDir string `yaml:"data_dir"`
	Redis   Redis  `yaml:"redis"`
	// RecordTTL is how long a binding is kept after its last successful
	// REGISTER: between 72h and 144h.
	RecordTTL time.Duration `yaml:"record_ttl"`
	// RefreshStaleness bounds how stale a stored refresh time may be: a
	// refresh that changes nothing else is written once the stored one is
	// this old (0..30m; 0 writes every refresh).
	RefreshStaleness time.Duration `yaml:"refresh_staleness"`
	SweepInterval    time.Duration `yaml:"sweep_interval"`
	CompactInterval  time.Duration `yaml:"compact_interval"`
}

// Seal holds the record sealing keys. With no key configured sipwake
// generates a development key in the data dir and says so in the log.
type Seal struct {
	KeyID   string `yaml:"key_id"`
	Key     Secret `yaml:"key"`
	KeyFile string `yaml:"key_file"`
	// Previous keys still open records sealed before a rotation.
	Previous []SealKey `yaml:"previous"`
}

// SealKey is one older sealing key, by id.
type SealKey struct {
	ID      string `yaml:"id"`
	Key     Secret `yaml:"key"`
	KeyFile string `yaml:"key_file"`
}

// Log configures log/slog output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

func defaultAPI() api.Config {
	var c api.Config
	c.Defaults()
	return c
}

// Secret is a string that never prints itself.
type Secret string

const redacted = "<secret>"

func (s Secret) String() string { return redacted }

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return redacted }

// MarshalYAML keeps a dumped config from carrying the value.
func (s Secret) MarshalYAML() (any, error) { return redacted, nil }

// Default is the embedded default: bbolt in ./data, SIP on loopback.
func Default() Config {
	return Config{
		SIP: SIP{
			Listen:               sip.Listen{UDP: "127.0.0.1:5060", TCP: "127.0.0.1:5060"},
			Upstream:             "sip:127.0.0.1:5070",
			UpstreamMode:         "path",
			UpstreamTimeout:      5 * time.Second,
			UserAgent:            "sipwake",
			RegisterRate:         50,
			RegisterBurst:        100,
			MaxRegistersInFlight: 2048,
		},
		Calls: Calls{
			Wait:           30 * time.Second,
			Ringing:        true,
			RefreshLead:    2 * time.Minute,
			AwakePushDelay: 2 * time.Second,
			ExpiryWarnings: []time.Duration{24 * time.Hour, time.Hour},

			PushesPerDevicePerMinute: 10,
		},
		Store: Store{
			Backend:          "bolt",
			DataDir:          "data",
			RecordTTL:        DefaultRecordTTL,
			RefreshStaleness: 5 * time.Minute,
			SweepInterval:    time.Minute,
			CompactInterval:  time.Hour,
		},
		Seal:     Seal{KeyID: "k1"},
		Log:      Log{Level: "info", Format: "text"},
		Cluster:  Cluster{RescanInterval: 30 * time.Second},
		API:      defaultAPI(),
		Admin:    defaultAdmin(),
		Shutdown: Shutdown{DrainTimeout: DefaultDrainTimeout},
	}
}

// Load reads the file at path (empty: defaults only), applies the
// environment overrides from environ and validates the result.
func Load(path string, environ []string) (Config, error) {
	var raw []byte
	if path != "" {
		var err error
		if raw, err = os.ReadFile(path); err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
	}
	cfg, err := parse(raw, environ)
	if err != nil && path != "" && !errors.As(err, new(*Error)) {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, err
}

// Parse is Load for a config already in memory: raw YAML (empty: defaults
// only), then the environment overrides, then validation. A config that
// fails any step is never returned.
func Parse(raw []byte, environ []string) (Config, error) {
	cfg, err := parse(raw, environ)
	if err != nil && !errors.As(err, new(*Error)) {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, err
}

func parse(raw []byte, environ []string) (Config, error) {
	cfg := Default()
	if len(raw) > 0 {
		if err := decodeStrict(raw, &cfg); err != nil {
			return Config{}, err
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func decodeStrict(raw []byte, into any) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Validate reports every problem at once, one line each, each naming its
// key's path.
func (c Config) Validate() error {
	var problems configerr.List
	c.SIP.validate(&problems)
	c.Calls.validate(&problems)
	validateTrunks(&problems, c.Trunks)
	c.Store.validate(&problems, c.Seal)
	c.Seal.validate(&problems)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		problems.Bad("log.level", c.Log.Level, "debug, info, warn or error")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		problems.Bad("log.format", c.Log.Format, "text or json")
	}
	problems.Take(c.Push.Validate())
	c.Cluster.validate(&problems)
	problems.Take(c.API.Validate())
	c.Admin.validate(&problems)
	c.Shutdown.validate(&problems)
	c.Runtime.validate(&problems)
	if len(problems) == 0 {
		return nil
	}
	return &Error{Problems: problems}
}

func (s SIP) validate(problems *configerr.List) {
	l := s.Listen
	if l.UDP == "" && l.TCP == "" && l.TLS == "" {
		problems.Add("sip.listen", "no listener configured (set at least one of udp, tcp, tls)")
	}
	for _, kv := range []struct{ key, addr string }{{"sip.listen.udp", l.UDP}, {"sip.listen.tcp", l.TCP}, {"sip.listen.tls", l.TLS}} {
		if kv.addr != "" && !isHostPort(kv.addr) {
			problems.Bad(kv.key, kv.addr, "host:port, e.g. 0.0.0.0:5060, [::]:5060 for both IPv6 and IPv4, [2001:db8::1]:5060")
		}
	}
	if l.TLS != "" && (l.TLSCertFile == "" || l.TLSKeyFile == "") {
		problems.Add("sip.listen.tls", "needs sip.listen.tls_cert_file and sip.listen.tls_key_file")
	}
	if a := s.PublicAddress; a != "" {
		if _, _, err := ParsePublicAddress(a); err != nil {
			problems.Bad("sip.public_address", a, "host or host:port, an IPv6 address in brackets: [2001:db8::1]:5060")
		}
	}
	if a := s.PublicAddressIPv6; a != "" {
		if host, _, err := ParsePublicAddress(a); err != nil || !isIPv6Literal(host) {
			problems.Bad("sip.public_address_ipv6", a, "an IPv6 address in brackets, with or without a port: [2001:db8::1]:5060")
		}
	}
	if _, err := ParseUpstream(s.Upstream); err != nil {
		problems.Bad("sip.upstream", s.Upstream, "a SIP URI such as sip:registrar.example.com:5060;transport=udp")
	}
	switch s.UpstreamMode {
	case "path", "contact":
	default:
		problems.Bad("sip.upstream_mode", s.UpstreamMode, "path or contact")
	}
	if d := s.UpstreamTimeout; d < 100*time.Millisecond || d > time.Minute {
		problems.Bad("sip.upstream_timeout", d, "between 100ms and 1m")
	}
	if r := s.RegisterRate; r < 0 || r > 1e6 || r != r {
		problems.Bad("sip.register_rate", r, "REGISTERs per second per source, 0 (off) to 1000000")
	}
	if n := s.MaxRegistersInFlight; n < 1 || n > 1e6 {
		problems.Bad("sip.max_registers_in_flight", n, "1 to 1000000")
	}
	if b := s.RegisterBurst; b < 0 || b > 1e6 || (s.RegisterRate > 0 && b < 1) {
		problems.Bad("sip.register_burst", b, "1 to 1000000 when sip.register_rate is set")
	}
}

func (c Calls) validate(problems *configerr.List) {
	if c.Wait < time.Second || c.Wait > 120*time.Second {
		problems.Bad("calls.wait", c.Wait, "between 1s and 120s")
	}
	for i, cidr := range c.TrustedSources {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			problems.Bad(fmt.Sprintf("calls.trusted_sources[%d]", i), cidr, "a CIDR such as 192.0.2.0/24 or 2001:db8::/32")
		}
	}
	if c.RefreshLead < 10*time.Second || c.RefreshLead > time.Hour {
		problems.Bad("calls.refresh_lead", c.RefreshLead, "between 10s and 1h")
	}
	if c.AwakePushDelay < 0 || c.AwakePushDelay >= c.Wait {
		problems.Bad("calls.awake_push_delay", c.AwakePushDelay, "0 to less than calls.wait")
	}
	if n := c.PushesPerDevicePerMinute; n < 0 || n > 1000 {
		problems.Bad("calls.pushes_per_device_per_minute", n, "0 (off) to 1000")
	}
	for i, d := range c.ExpiryWarnings {
		if d <= 0 || d >= MinRecordTTL {
			problems.Bad(fmt.Sprintf("calls.expiry_warnings[%d]", i), d, "between 0 and 72h")
		}
	}
}

func validateTrunks(problems *configerr.List, trunks []Trunk) {
	for i, t := range trunks {
		key := fmt.Sprintf("trunks[%d]", i)
		if t.Name == "" {
			problems.Add(key+".name", "must be set")
		}
		if t.Domain == "" || strings.ContainsAny(t.Domain, "@: ") {
			problems.Bad(key+".domain", t.Domain, "the SIP domain of the AORs it calls, e.g. example.com")
		}
		if len(t.Sources) == 0 {
			problems.Add(key+".sources", "must list at least one CIDR")
		}
		for j, cidr := range t.Sources {
			if _, err := netip.ParsePrefix(cidr); err != nil {
				problems.Bad(fmt.Sprintf("%s.sources[%d]", key, j), cidr, "a CIDR such as 203.0.113.0/24 or 2001:db8::/32")
			}
		}
	}
}

func (s Store) validate(problems *configerr.List, seal Seal) {
	switch s.Backend {
	case "bolt":
	case "redis":
		s.Redis.validate(problems, seal)
	default:
		problems.Bad("store.backend", s.Backend, "bolt or redis")
	}
	if s.DataDir == "" {
		problems.Bad("store.data_dir", "", "a directory path")
	}
	if d := s.RecordTTL; d < MinRecordTTL || d > MaxRecordTTL {
		problems.Bad("store.record_ttl", d, "between 72h (3 days) and 144h (6 days)")
	}
	if d := s.RefreshStaleness; d < 0 || d > 30*time.Minute {
		problems.Bad("store.refresh_staleness", d, "between 0 (write every refresh) and 30m")
	}
	if d := s.SweepInterval; d < time.Second || d > time.Hour {
		problems.Bad("store.sweep_interval", d, "between 1s and 1h")
	}
	if d := s.CompactInterval; d < time.Minute || d > 7*24*time.Hour {
		problems.Bad("store.compact_interval", d, "between 1m and 168h")
	}
}

func (s Seal) validate(problems *configerr.List) {
	if s.KeyID == "" || strings.ContainsAny(s.KeyID, " \t") {
		problems.Bad("seal.key_id", s.KeyID, "a short name without spaces, e.g. k1")
	}
	if s.Key != "" && s.KeyFile != "" {
		problems.Add("seal.key", "set seal.key or seal.key_file, not both")
	}
	seen := map[string]bool{s.KeyID: true}
	for i, p := range s.Previous {
		key := fmt.Sprintf("seal.previous[%d]", i)
		switch {
		case p.ID == "":
			problems.Add(key+".id", "must be set")
		case seen[p.ID]:
			problems.Add(key+".id", "%q is used twice", p.ID)
		}
		seen[p.ID] = true
		if (p.Key == "") == (p.KeyFile == "") {
			problems.Add(key, "set exactly one of key or key_file")
		}
	}
}

// Error lists every configuration problem, one per line.
type Error struct{ Problems configerr.List }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = "config: " + p.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each Problem.
func (e *Error) Unwrap() []error { return e.Problems.Errors() }

// isHostPort accepts host:port with a port in 0..65535 and an IPv6 host
// in brackets ([::1]:5060); a bare IPv6 address with a port appended
// (::1:5060) is ambiguous and refused.
func isHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return false
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false
	}
	return validHost(host, strings.HasPrefix(s, "["))
}

// validHost: empty (every address), an IP literal, or a name; an IPv6
// literal must have come in brackets, and brackets hold only IPv6.
func validHost(host string, bracketed bool) bool {
	if bracketed || strings.Contains(host, ":") {
		return bracketed && isIPv6Literal(host)
	}
	return !strings.ContainsAny(host, " ;<>@[]")
}

func isIPv6Literal(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Is6() && !ip.Is4In6()
}

// ParsePublicAddress splits sip.public_address into its host (IPv6
// without brackets, as a sip.Uri holds it once built) and port (0: none
// given).
func ParsePublicAddress(s string) (host string, port int, err error) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
		if !isIPv6Literal(host) {
			return "", 0, fmt.Errorf("public address %q: not an IPv6 address in brackets", s)
		}
		return host, 0, nil
	}
	if !strings.Contains(s, ":") {
		if s == "" || !validHost(s, false) {
			return "", 0, fmt.Errorf("public address %q: not a host", s)
		}
		return s, 0, nil
	}
	if !isHostPort(s) {
		return "", 0, fmt.Errorf("public address %q: want host, host:port or [IPv6]:port", s)
	}
	h, p, _ := net.SplitHostPort(s)
	port, _ = strconv.Atoi(p)
	if h == "" || port == 0 {
		return "", 0, fmt.Errorf("public address %q: want a host and a port above 0", s)
	}
	return h, port, nil
}

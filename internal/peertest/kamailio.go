package peertest

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"
)

var (
	//go:embed kamailio_registrar.cfg.tmpl
	registrarCfg string
	//go:embed kamailio_edge.cfg.tmpl
	edgeCfg string
	//go:embed kamailio_lb.cfg.tmpl
	lbCfg string

	registrarTmpl = template.Must(template.New("registrar").Parse(registrarCfg))
	edgeTmpl      = template.Must(template.New("edge").Parse(edgeCfg))
	lbTmpl        = template.Must(template.New("lb").Parse(lbCfg))
)

// KamailioOptions configures StartKamailio.
type KamailioOptions struct {
	// Addr is the ip:port Kamailio listens on, UDP and TCP. Required.
	Addr string
	// Domain is the SIP domain served (an alias of Addr). Default
	// "example.test". It is also the digest realm.
	Domain string
	// Users maps user names to passwords for REGISTER digest auth. INVITE,
	// MESSAGE etc. are not challenged: callers are trusted. Names are
	// [A-Za-z0-9._+-]+, passwords must not hold '"' or '\'.
	Users map[string]string
	// MaxExpires caps the Expires the registrar grants (default 3600).
	MaxExpires int
	// PushProvider, when set, makes the registrar announce on its REGISTER
	// 2xx that it (or a proxy of its own) already pushes for this
	// provider: Feature-Caps: *;+sip.pns="<provider>" (RFC 8599).
	PushProvider string
	// Open makes the registrar save REGISTERs without a digest challenge
	// (any user, Users ignored for REGISTER): the registrar of a provider
	// that authenticates elsewhere, and the benchmarks' flows without
	// digest.
	Open bool

	// EdgeUpstream, when set, makes this Kamailio an edge proxy instead of
	// a registrar: REGISTERs get add_path() and go to EdgeUpstream, a SIP
	// URI such as "sip:127.0.0.1:5060;transport=tcp" (or just ip:port);
	// requests that come back through the Path go to their Request-URI;
	// other initial requests go upstream, record-routed.
	EdgeUpstream string
	// Dispatch, when set, makes this Kamailio a load balancer (dispatcher,
	// round robin) in front of these node addresses (ip:port).
	Dispatch []string

	// SharedMemMB and PkgMemMB are Kamailio's -m and -M (defaults 64 and 8;
	// benchmarks use 512 and 16).
	SharedMemMB, PkgMemMB int
	// MemoryManager is Kamailio's -x: "qm" (its default, with the debug
	// bookkeeping Debian builds in), "fm" or "tlsf". Benchmarks use tlsf:
	// under qm an edge proxy spent a third more CPU per REGISTER
	// (bench/README.md, "The edge's template").
	MemoryManager string
	// Children is the number of UDP and TCP workers (default 1). One
	// worker relays datagrams that arrive back to back (a phone's 180 and
	// 200) in the order they came; with several, Kamailio may swap them,
	// which RFC 3261 allows over UDP but sipp callers, aborting on a 180
	// after the 200, do not. Benchmarks ask for more.
	Children int
	// Debug is Kamailio's log level (default 2, info; 3 is debug).
	Debug int
	// StartTimeout bounds the wait until Kamailio answers on its control
	// socket (default 10s).
	StartTimeout time.Duration
}

// Kamailio is a running Kamailio. Its process group is stopped in t.Cleanup.
type Kamailio struct {
	Addr   string // ip:port, UDP and TCP
	Domain string
	Dir    string // working dir: kamailio.cfg, kamailio.log
	// CtlSocket is the binrpc socket for kamcmd, as "unix:/path".
	CtlSocket string
	// LogPath is Kamailio's stderr log.
	LogPath string

	kamcmd string
	proc   *process
}

var safeUser = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)

// StartKamailio writes a config for opts and starts Kamailio in the
// foreground. It returns once Kamailio listens on UDP and TCP and answers
// RPCs, and fails the test otherwise. It skips the test when kamailio or
// kamcmd is missing.
func StartKamailio(t testing.TB, opts KamailioOptions) *Kamailio {
	t.Helper()
	bin := Need(t, "kamailio", "kamailio")
	kamcmd := Need(t, "kamcmd", "kamailio")
	if _, _, err := net.SplitHostPort(opts.Addr); err != nil {
		t.Fatalf("peertest: KamailioOptions.Addr %q: %v", opts.Addr, err)
	}
	if opts.Domain == "" {
		opts.Domain = "example.test"
	}
	if opts.SharedMemMB == 0 {
		opts.SharedMemMB = 64
	}
	if opts.PkgMemMB == 0 {
		opts.PkgMemMB = 8
	}
	if opts.Children == 0 {
		opts.Children = 1
	}
	if opts.Debug == 0 {
		opts.Debug = 2
	}
	if opts.MaxExpires == 0 {
		opts.MaxExpires = 3600
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	for u, p := range opts.Users {
		if !safeUser.MatchString(u) || strings.ContainsAny(p, "\"\\\n") {
			t.Fatalf("peertest: Kamailio user %q or its password has characters the generated config cannot hold", u)
		}
	}
	upstream := opts.EdgeUpstream
	if upstream != "" && !strings.HasPrefix(upstream, "sip:") {
		upstream = "sip:" + upstream
	}

	dir := t.TempDir()
	run := shortDir(t, "kam") // ctl socket and Kamailio's runtime files
	k := &Kamailio{
		Addr:      opts.Addr,
		Domain:    opts.Domain,
		Dir:       dir,
		CtlSocket: "unix:" + filepath.Join(run, "ctl.sock"),
		LogPath:   filepath.Join(dir, "kamailio.log"),
		kamcmd:    kamcmd,
	}
	data := map[string]any{
		"Addr":         opts.Addr,
		"Domain":       opts.Domain,
		"Users":        opts.Users,
		"MaxExpires":   opts.MaxExpires,
		"PushProvider": opts.PushProvider,
		"Open":         opts.Open,
		"Children":     opts.Children,
		"Debug":        opts.Debug,
		"CtlSocket":    strings.TrimPrefix(k.CtlSocket, "unix:"),
		"Upstream":     upstream,
	}
	tmpl := registrarTmpl
	if upstream != "" {
		tmpl = edgeTmpl
	}
	if len(opts.Dispatch) > 0 {
		tmpl = lbTmpl
		var list strings.Builder
		for _, n := range opts.Dispatch {
			fmt.Fprintf(&list, "1 sip:%s\n", n)
		}
		path := filepath.Join(dir, "dispatcher.list")
		if err := os.WriteFile(path, []byte(list.String()), 0o644); err != nil {
			t.Fatalf("peertest: %v", err)
		}
		data["DispatcherList"] = path
	}
	var cfg bytes.Buffer
	if err := tmpl.Execute(&cfg, data); err != nil {
		t.Fatalf("peertest: kamailio config: %v", err)
	}
	cfgPath := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		t.Fatalf("peertest: %v", err)
	}

	args := []string{"-m", strconv.Itoa(opts.SharedMemMB), "-M", strconv.Itoa(opts.PkgMemMB)}
	if opts.MemoryManager != "" {
		args = append(args, "-x", opts.MemoryManager)
	}
	k.run(t, bin, cfgPath, run, opts.StartTimeout, args...)
	return k
}

// KamailioFile is a Kamailio config file run as it stands (a shipped one),
// for StartKamailioFile.
type KamailioFile struct {
	// Path is the config file.
	Path string
	// Dir is Kamailio's working dir: a file the config includes is looked
	// up there first, then beside Path. Its log goes there too.
	Dir string
	// Addr is the ip:port the config listens on, UDP and TCP, as Defines
	// set it.
	Addr string
	// Domain is the SIP domain the tests address (the config serves any).
	Domain string
	// Defines are the config's -A NAME=value defines (#!trydef in it).
	Defines []string
}

// StartKamailioFile starts Kamailio on a config file as it stands; the file
// must load the ctl module on its default socket. It returns, as
// StartKamailio does, once Kamailio listens on f.Addr over UDP and TCP and
// answers RPCs, and fails the test otherwise.
func StartKamailioFile(t testing.TB, f KamailioFile) *Kamailio {
	t.Helper()
	bin := Need(t, "kamailio", "kamailio")
	kamcmd := Need(t, "kamcmd", "kamailio")
	path, err := filepath.Abs(f.Path)
	if err != nil {
		t.Fatalf("peertest: %v", err)
	}
	run := shortDir(t, "kam")
	k := &Kamailio{
		Addr:      f.Addr,
		Domain:    f.Domain,
		Dir:       f.Dir,
		CtlSocket: "unix:" + filepath.Join(run, "kamailio_ctl"), // ctl's default in the -Y dir
		LogPath:   filepath.Join(f.Dir, "kamailio.log"),
		kamcmd:    kamcmd,
	}
	var defines []string
	for _, d := range f.Defines {
		defines = append(defines, "-A", d)
	}
	k.run(t, bin, path, run, 10*time.Second, defines...)
	return k
}

// run starts Kamailio on cfgPath in the foreground, in k.Dir with its
// runtime files in run, and waits until it is ready.
func (k *Kamailio) run(t testing.TB, bin, cfgPath, run string, timeout time.Duration, extra ...string) {
	t.Helper()
	argv := append([]string{bin, "-f", cfgPath, "-DD", "-E", "-Y", run, "-w", k.Dir}, extra...)
	k.proc = startProcess(t, "kamailio "+k.Addr, k.Dir, k.LogPath, nil, argv...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := k.waitReady(ctx); err != nil {
		k.proc.stop(time.Second)
		dumpFile(t, "kamailio.cfg", cfgPath)
		dumpFile(t, "kamailio log", k.LogPath)
		t.Fatalf("peertest: kamailio on %s did not start: %v", k.Addr, err)
	}
}

func (k *Kamailio) waitReady(ctx context.Context) error {
	if err := waitListening(ctx, k.proc, "udp", k.Addr, time.Until(deadline(ctx))); err != nil {
		return err
	}
	if err := waitListening(ctx, k.proc, "tcp", k.Addr, time.Until(deadline(ctx))); err != nil {
		return err
	}
	for {
		_, err := k.RPC(ctx, "core.uptime")
		if err == nil {
			return nil
		}
		if k.proc.exited() {
			return fmt.Errorf("kamailio exited: %v", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("control socket: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func deadline(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(10 * time.Second)
	}
	return d
}

// Pid is the process id of Kamailio's main process, which is also the
// process group of all its workers (for the benchmarks' CPU accounting).
func (k *Kamailio) Pid() int { return k.proc.cmd.Process.Pid }

// Stop stops Kamailio now (SIGTERM, then SIGKILL), e.g. to test a
// registrar outage. t.Cleanup does it otherwise.
func (k *Kamailio) Stop() { k.proc.stop(3 * time.Second) }

// Log returns what Kamailio has logged so far.
func (k *Kamailio) Log() string {
	b, _ := os.ReadFile(k.LogPath)
	return string(b)
}

// RPC runs `kamcmd -s <CtlSocket> args...` and returns its output.
func (k *Kamailio) RPC(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, k.kamcmd, append([]string{"-s", k.CtlSocket}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if bytes.HasPrefix(out, []byte("error: 404")) || bytes.Contains(out, []byte("error: 500 - AOR not found")) {
			return string(out), fmt.Errorf("kamcmd %s: %w: %s", strings.Join(args, " "), errNotFound, bytes.TrimSpace(out))
		}
		return string(out), fmt.Errorf("kamcmd %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Binding is one contact of an AOR in Kamailio's location table.
type Binding struct {
	AOR string
	// Contact is the registered Contact URI, e.g.
	// "sip:alice@127.0.0.2:5060;transport=UDP;pn-provider=apns;pn-prid=…".
	Contact string
	// Params are Contact's URI parameters (names lower-cased; a flag
	// without '=' maps to "").
	Params map[string]string
	// Path holds the Path header entries stored with the binding, in
	// order, each as sent (e.g. "<sip:127.0.0.3:5060;lr>"); nil if none.
	Path []string
	// Expires is the time left, in seconds, as Kamailio reports it.
	Expires  int
	Received string
	CallID   string
	CSeq     int
	// UserAgent, Socket ("udp:ip:port" the REGISTER came in on) and
	// Instance (+sip.instance) as stored.
	UserAgent, Socket, Instance string
}

// HasParam reports whether the Contact URI carries parameter name.
func (b Binding) HasParam(name string) bool {
	_, ok := b.Params[strings.ToLower(name)]
	return ok
}

// OnPath reports whether hostport (e.g. sipwake's "127.0.0.5:5060") is
// the host of one of the binding's Path entries. Port 5060 also matches an
// entry without a port, as Kamailio's add_path() writes it.
func (b Binding) OnPath(hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, ""
	}
	for _, p := range b.Path {
		h, pt := uriHostPort(p)
		if h == host && (pt == port || port == "" || (pt == "" && port == "5060")) {
			return true
		}
	}
	return false
}

// uriHostPort returns the host and port ("" if absent) of a SIP URI,
// bracketed or not.
func uriHostPort(uri string) (host, port string) {
	uri = strings.Trim(strings.TrimSpace(uri), "<>")
	uri = strings.TrimPrefix(strings.TrimPrefix(uri, "sips:"), "sip:")
	if i := strings.LastIndex(uri, "@"); i >= 0 {
		uri = uri[i+1:]
	}
	if i := strings.IndexAny(uri, ";?>"); i >= 0 {
		uri = uri[:i]
	}
	if h, p, err := net.SplitHostPort(uri); err == nil {
		return h, p
	}
	return strings.Trim(uri, "[]"), ""
}

// Locations returns the live bindings of aor ("sip:alice@example.test",
// "alice@example.test" or just "alice", which gets Domain), read with
// kamcmd ul.lookup. An AOR with no bindings gives an empty slice and no
// error.
func (k *Kamailio) Locations(ctx context.Context, aor string) ([]Binding, error) {
	aor = strings.TrimPrefix(strings.TrimPrefix(aor, "sip:"), "sips:")
	if !strings.Contains(aor, "@") {
		aor += "@" + k.Domain
	}
	out, err := k.RPC(ctx, "ul.lookup", "location", aor)
	if err != nil {
		if errors.Is(err, errNotFound) {
			return nil, nil
		}
		return nil, err
	}
	return parseULLookup(out), nil
}

// parseULLookup reads kamcmd's text rendering of ul.lookup:
//
//	{
//		AoR: alice@example.test
//		Contacts: {
//			Contact: {
//				Address: sip:…
//				Expires: 597
//				Path: <sip:…;lr>
//				…
func parseULLookup(out string) []Binding {
	var (
		bs  []Binding
		aor string
		cur *Binding
	)
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			key, val = strings.TrimSuffix(line, ":"), ""
		}
		if val == "[not set]" {
			val = ""
		}
		switch key {
		case "AoR":
			aor = val
		case "Contact":
			bs = append(bs, Binding{AOR: aor})
			cur = &bs[len(bs)-1]
		}
		if cur == nil {
			continue
		}
		switch key {
		case "Address":
			cur.Contact = val
			cur.Params = uriParams(val)
		case "Expires":
			cur.Expires, _ = strconv.Atoi(val)
		case "Path":
			cur.Path = splitPath(val)
		case "Received":
			cur.Received = val
		case "Call-ID":
			cur.CallID = val
		case "CSeq":
			cur.CSeq, _ = strconv.Atoi(val)
		case "User-Agent":
			cur.UserAgent = val
		case "Socket":
			cur.Socket = val
		case "Instance":
			cur.Instance = val
		}
	}
	return bs
}

// uriParams parses the ;name=value parameters of a SIP URI (before any
// '?headers').
func uriParams(uri string) map[string]string {
	uri = strings.Trim(uri, "<>")
	uri, _, _ = strings.Cut(uri, "?")
	ps := map[string]string{}
	parts := strings.Split(uri, ";")
	for _, p := range parts[1:] {
		if p == "" {
			continue
		}
		n, v, _ := strings.Cut(p, "=")
		ps[strings.ToLower(strings.TrimSpace(n))] = v
	}
	return ps
}

func splitPath(v string) []string {
	if v == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

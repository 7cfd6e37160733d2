package peertest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// LinphoneOptions configures StartLinphone: one linphonec account that
// registers through Proxy.
type LinphoneOptions struct {
	// Addr is the ip:port linphonec binds, UDP and TCP, an IPv6 address
	// in brackets ("[::1]:5080"). Required.
	Addr string
	// Proxy is the ip:port it registers through (reg_proxy), e.g. sipwake
	// or Kamailio. Required.
	Proxy string
	// Transport to Proxy: "tcp" (default), "udp" or "tls" (linphonec then
	// listens for TLS on the port after Addr's and does not verify the
	// proxy's certificate).
	Transport string
	// User, Domain (default "example.test") and Password of the account;
	// the identity is sip:User@Domain and Domain is also the realm.
	User, Domain, Password string
	// ContactParams go into the Contact URI of its REGISTERs, e.g.
	// "pn-provider=apns;pn-prid=TOKEN;pn-param=TEAMID.org.example.app.voip".
	ContactParams string
	// Expires is reg_expires (default 600).
	Expires int
	// NoRegister starts it with reg_sendregister=0 (call Register later).
	NoRegister bool
}

// Linphone is a running linphonec, auto-answering calls. It is stopped in
// t.Cleanup.
type Linphone struct {
	Addr       string
	Dir        string
	OutputPath string // linphonec's stdout/stderr (command results, states)
	LogPath    string // liblinphone's -d 6 log, with every SIP message

	fifo   string
	mu     sync.Mutex
	cmdf   *os.File // our write end of the FIFO
	proc   *process
	holder *process
}

var linphoneRC = template.Must(template.New("rc").Parse(`[sip]
sip_port={{.Port}}
sip_tcp_port={{.Port}}
sip_tls_port={{.TLSPort}}
bind_address={{.IP}}{{if .TLSPort}}
verify_server_certs=0
verify_server_cn=0{{end}}
default_proxy=0
use_ipv6={{.IPv6}}
guess_hostname=0
contact=sip:{{.User}}@{{.ContactHost}}
supported=replaces, outbound
[net]
enable_nat_helper=0
[storage]
uri=null
[proxy_0]
reg_proxy=<sip:{{.Proxy}};transport={{.Transport}}>
reg_identity=sip:{{.User}}@{{.Domain}}
reg_expires={{.Expires}}
reg_sendregister={{.Send}}
contact_uri_parameters={{.ContactParams}}
publish=0
[auth_info_0]
username={{.User}}
passwd={{.Password}}
realm={{.Domain}}
domain={{.Domain}}
`))

// StartLinphone writes an rc file for opts and starts `linphonec -a` fed
// through a FIFO that a holder process keeps open (on end of input
// linphonec spins forever). It returns once linphonec listens on Addr/udp;
// it does not wait for the registration (use WaitOutput or the registrar).
// Skips the test when linphonec (Debian linphone-cli) is missing.
func StartLinphone(t testing.TB, opts LinphoneOptions) *Linphone {
	t.Helper()
	bin := Need(t, "linphonec", "linphone-cli")
	sleep := Need(t, "sleep", "coreutils")
	ip, port, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		t.Fatalf("peertest: LinphoneOptions.Addr %q: %v", opts.Addr, err)
	}
	if opts.Proxy == "" || opts.User == "" {
		t.Fatal("peertest: LinphoneOptions.Proxy and User are required")
	}
	if opts.Domain == "" {
		opts.Domain = "example.test"
	}
	if opts.Transport == "" {
		opts.Transport = "tcp"
	}
	if opts.Expires == 0 {
		opts.Expires = 600
	}
	send := 1
	if opts.NoRegister {
		send = 0
	}
	// On an IPv6 address (Addr "[::1]:5080") linphonec needs use_ipv6 to
	// open its sockets, and its Contact the address in brackets.
	ipv6, contactHost := 0, ip
	if strings.Contains(ip, ":") {
		ipv6, contactHost = 1, "["+ip+"]"
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(filepath.Join(home, ".local", "share", "linphone"), 0o755); err != nil {
		t.Fatalf("peertest: %v", err)
	}
	var rc bytes.Buffer
	if err := linphoneRC.Execute(&rc, map[string]any{
		"IP": ip, "IPv6": ipv6, "ContactHost": contactHost, "Port": port, "Proxy": opts.Proxy, "Transport": opts.Transport, "TLSPort": tlsPort(opts.Transport, port),
		"User": opts.User, "Domain": opts.Domain, "Password": opts.Password,
		"ContactParams": opts.ContactParams, "Expires": opts.Expires, "Send": send,
	}); err != nil {
		t.Fatalf("peertest: linphonerc: %v", err)
	}
	// linphonec rewrites its rc (e.g. reg_sendregister=0 after an
	// unregister): keep the pristine copy apart.
	rcPath := filepath.Join(dir, "linphonerc")
	if err := os.WriteFile(rcPath+".base", rc.Bytes(), 0o644); err != nil {
		t.Fatalf("peertest: %v", err)
	}
	if err := os.WriteFile(rcPath, rc.Bytes(), 0o644); err != nil {
		t.Fatalf("peertest: %v", err)
	}

	fifo := filepath.Join(shortDir(t, "lin"), "cmd")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("peertest: mkfifo: %v", err)
	}
	l := &Linphone{
		Addr:       opts.Addr,
		Dir:        dir,
		OutputPath: filepath.Join(dir, "linphonec.out"),
		LogPath:    filepath.Join(dir, "linphonec.log"),
		fifo:       fifo,
	}
	env := append(os.Environ(), "HOME="+home)
	// The holder opens the FIFO for writing first (the shell opens it before
	// exec'ing sleep); opening it blocks until linphonec opens the read end.
	l.holder = startProcess(t, "linphonec fifo holder", dir, filepath.Join(dir, "holder.log"), nil,
		"/bin/sh", "-c", `exec "$0" infinity 3>"$1"`, sleep, fifo)
	l.proc = startProcess(t, "linphonec "+opts.Addr, dir, l.OutputPath, env,
		"/bin/sh", "-c", `exec "$0" -c "$1" -a -d 6 -l "$2" <"$3"`, bin, rcPath, l.LogPath, fifo)
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("peertest: open fifo: %v", err)
	}
	l.cmdf = f
	t.Cleanup(func() {
		// quit unregisters; give it a moment, then the process cleanup kills.
		_ = l.Command("quit")
		select {
		case <-l.proc.done:
		case <-time.After(2 * time.Second):
		}
		_ = l.cmdf.Close()
		if t.Failed() {
			dumpFile(t, "linphonec rc", rcPath)
			dumpFile(t, "linphonec debug log", l.LogPath)
		}
	})
	if err := waitListening(t.Context(), l.proc, "udp", opts.Addr, 10*time.Second); err != nil {
		t.Fatalf("peertest: linphonec: %v", err)
	}
	return l
}

// Command writes one command line to linphonec (e.g. "status register",
// "call sip:bob@example.test", "terminate").
func (l *Linphone) Command(cmd string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.proc.exited() {
		return fmt.Errorf("linphonec has exited")
	}
	_, err := l.cmdf.WriteString(strings.TrimSpace(cmd) + "\n")
	return err
}

// Register sends a REGISTER again (after Unregister).
func (l *Linphone) Register() error { return l.Command("register") }

// Unregister sends a REGISTER with Expires: 0.
func (l *Linphone) Unregister() error { return l.Command("unregister") }

// Output returns everything linphonec has printed so far.
func (l *Linphone) Output() string {
	b, _ := os.ReadFile(l.OutputPath)
	return string(b)
}

// WaitOutput waits until linphonec's output contains substr (counting
// from the start), or timeout passes.
func (l *Linphone) WaitOutput(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(l.Output(), substr) {
			return nil
		}
		if l.proc.exited() {
			return fmt.Errorf("linphonec exited before printing %q", substr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("linphonec did not print %q within %v", substr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CountOutput returns how often substr occurs in linphonec's output, to
// wait for the next occurrence of a repeated message.
func (l *Linphone) CountOutput(substr string) int {
	return strings.Count(l.Output(), substr)
}

// Kill ends linphonec with SIGKILL, without un-registering: to the network
// it looks like an app the phone's OS suspended (its TCP connection drops).
func (l *Linphone) Kill() {
	l.proc.kill()
	l.holder.stop(time.Second)
}

// Suspend freezes linphonec (SIGSTOP): its TCP connection stays open and
// the kernel takes in what arrives, but nothing answers, as with an app the
// phone's OS suspended in the background.
func (l *Linphone) Suspend() { l.proc.signal(syscall.SIGSTOP) }

// Resume lets a suspended linphonec run again (SIGCONT), as a push wakes
// the app: it reads what waited on its connection.
func (l *Linphone) Resume() { l.proc.signal(syscall.SIGCONT) }

// Stop quits linphonec (which unregisters) and kills what is left.
func (l *Linphone) Stop() {
	_ = l.Command("quit")
	select {
	case <-l.proc.done:
	case <-time.After(3 * time.Second):
	}
	l.proc.stop(time.Second)
	l.holder.stop(time.Second)
}

// tlsPort is linphonec's TLS listening port: the one after its UDP/TCP
// port when it talks TLS, else 0 (off).
func tlsPort(transport, port string) int {
	if transport != "tls" {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return n + 1
}

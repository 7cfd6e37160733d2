package app_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/peertest"
)

// The Kamailio configs under deploy/ run here as they are shipped: the
// settings a deployment changes are defines (-A NAME=value), set as
// docker-compose.yaml and the Kubernetes manifests set theirs.

// repoPath is a file of the repository, from this package's directory.
func repoPath(rel string) string { return filepath.Join("..", "..", filepath.FromSlash(rel)) }

// startShippedKamailio runs Kamailio on the shipped config file cfg, as it
// stands, with the given defines, working in dir: a file the config
// includes is looked up there first, then beside cfg.
func startShippedKamailio(t *testing.T, cfg, dir, addr string, defines ...string) *peertest.Kamailio {
	t.Helper()
	return peertest.StartKamailioFile(t, peertest.KamailioFile{Path: cfg, Dir: dir, Addr: addr, Domain: domain, Defines: defines})
}

// usersFile writes the users.cfg deploy/kamailio/kamailio.cfg includes,
// with the accounts the world's phones and callers use.
func usersFile(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	users := `$sht(users=>alice) = "` + password + `";` + "\n" + `$sht(users=>bob) = "` + password + `";` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "users.cfg"), []byte(users), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The registrar docker-compose.yaml runs: a phone registers through
// sipwake with push parameters and sleeps; a stranger's call is refused
// before it can ring anything; bob calls, the phone is woken by push,
// registers again and answers, and bob hangs up through sipwake.
func TestShippedKamailioWakesPhone(t *testing.T) {
	addr := peertest.Addr(t, 1, 5060)
	// One worker, so back-to-back answers (180, 200) reach the caller in
	// order (newWorldWith).
	k := startShippedKamailio(t, repoPath("deploy/kamailio/kamailio.cfg"), usersFile(t), addr,
		"SIP_LISTEN="+addr, "WORKERS=1")
	w := newWorldOn(t, k)
	tok := w.fakes.APNs.VoIPToken(71)
	w.sleepingDevice("alice", tok, 5070)

	stranger := w.call("alice", "caller_expect", map[string]string{"expect": "407"})
	mustSucceed(t, "stranger", stranger)
	if n := len(w.fakes.APNs.Pushes()); n != 0 {
		t.Fatalf("a call Kamailio challenged pushed %d times", n)
	}

	caller := peertest.StartSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "caller_auth"),
		Remote:    k.Addr,
		LocalIP:   callerIP(t),
		LocalPort: 5062,
		Service:   "alice",
		Injection: peertest.RegisterInjection(peertest.SippUser{User: "bob", Domain: domain, Password: password}),
		Timeout:   40 * time.Second,
	})
	ps := waitPushes(t, w.fakes.APNs, 1)
	if ps[0].Token != tok || ps[0].Header.Get("apns-push-type") != "voip" {
		t.Fatalf("call push: token %s, headers %v", ps[0].Token, ps[0].Header)
	}
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	dev := mustSucceed(t, "device", device)

	invite, bye := "", false
	for _, m := range dev.Received() {
		switch {
		case strings.HasPrefix(m, "INVITE "):
			invite = m
		case strings.HasPrefix(m, "BYE "):
			bye = true
		}
	}
	if !strings.Contains(invite, "sip:bob@"+domain) {
		t.Fatalf("the phone was not called by bob:\n%s", invite)
	}
	if !bye {
		t.Fatal("bob's BYE did not reach the phone")
	}
}

// users.cfg as shipped loads, and its accounts register: a newcomer who
// only changes the passwords has a working registrar.
func TestShippedKamailioUsers(t *testing.T) {
	raw, err := os.ReadFile(repoPath("deploy/kamailio/users.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\$sht\(users=>([A-Za-z0-9._+-]+)\) = "([^"\\]*)";$`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("deploy/kamailio/users.cfg has no account line")
	}
	addr := peertest.Addr(t, 1, 5060)
	// An empty working directory: the include falls back to the file
	// beside kamailio.cfg.
	k := startShippedKamailio(t, repoPath("deploy/kamailio/kamailio.cfg"), t.TempDir(), addr, "SIP_LISTEN="+addr)
	register := func(pw string) error {
		res, err := peertest.RunSipp(t, peertest.SippOptions{
			Scenario:  peertest.Scenario(t, "register_auth_params"),
			Remote:    k.Addr,
			LocalIP:   peertest.IP(t, 3),
			LocalPort: 5070,
			Injection: peertest.RegisterInjection(peertest.SippUser{User: string(m[1]), Domain: domain, Password: pw}),
			Keys:      map[string]string{"expires": "60", "contact_params": ""},
		})
		if err != nil {
			return errors.Join(err, errors.New(res.Messages()))
		}
		return nil
	}
	if err := register(string(m[2])); err != nil {
		t.Fatalf("%s with the shipped password: %v", m[1], err)
	}
	if err := register(string(m[2]) + "x"); err == nil {
		t.Fatalf("%s registered with a wrong password", m[1])
	}
}

// configMapFile writes the value of key of the ConfigMap that has it in a
// manifest of the repository to dir/key, as the pod finds it.
func configMapFile(t *testing.T, manifest, key, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(repoPath(manifest))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("%s: no ConfigMap with %s (%v)", manifest, key, err)
		}
		if v, ok := doc.Data[key]; ok && doc.Kind == "ConfigMap" {
			p := filepath.Join(dir, key)
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
}

// The dispatcher of deploy/kubernetes/kamailio.yaml, its config and node
// list as the ConfigMap holds them, in front of three nodes. The list names
// the nodes' headless Service; Kubernetes' DNS would answer its SRV
// records (_sip._udp.<service>) with one target per ready pod, and here
// Kamailio's own DNS cache is given those records. With the registrar's
// address as REGISTRAR_NETS, a stranger's call for a binding is refused at
// the dispatcher, and TestThreeNodesBehindDispatcher's story goes through.
func TestShippedDispatcher(t *testing.T) {
	wakeBehindDispatcher(t, func(lbAddr string, nodes []string) {
		dir := t.TempDir()
		cfg := configMapFile(t, "deploy/kubernetes/kamailio.yaml", "kamailio.cfg", dir)
		list := configMapFile(t, "deploy/kubernetes/kamailio.yaml", "dispatcher.list", dir)
		k := startShippedKamailio(t, cfg, dir, lbAddr, "SIP_LISTEN="+lbAddr, "PUBLIC_ADDR="+lbAddr, "WORKERS=1",
			`DISPATCHER_LIST="`+list+`"`, `REGISTRAR_NETS="`+peertest.IP(t, 1)+`/32"`)

		raw, err := os.ReadFile(list)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^1\s+sip:([\w.-]+)\s`).FindSubmatch(raw)
		if m == nil {
			t.Fatalf("dispatcher.list names no node service in set 1:\n%s", raw)
		}
		service := string(m[1])
		dns := func(args ...string) {
			// Flags 2: a permanent entry, which no TTL takes away.
			if out, err := k.RPC(context.Background(), append(args, "2")...); err != nil {
				t.Fatalf("kamcmd %v: %v: %s", args, err, out)
			}
		}
		for i, n := range nodes {
			ip, port, _ := strings.Cut(n, ":")
			pod := "pod-" + strconv.Itoa(i) + "." + service
			dns("dns.add_a", pod, "60", ip)
			dns("dns.add_srv", "_sip._udp."+service, "60", "0", "10", port, pod)
		}

		caller := callerIP(t)
		invite := "INVITE sip:alice@" + domain + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + caller + ";rport;branch=z9hG4bK-stranger\r\n" +
			"Route: <sip:sw-0123456789abcdef@" + lbAddr + ";lr>\r\n" +
			"From: <sip:mallory@" + caller + ">;tag=stranger\r\nTo: <sip:alice@" + domain + ">\r\n" +
			"Call-ID: stranger@" + caller + "\r\nCSeq: 1 INVITE\r\nContact: <sip:mallory@" + caller + ">\r\n" +
			"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
		if got := sendRaw(t, caller, lbAddr, invite, 5*time.Second); !strings.HasPrefix(got, "SIP/2.0 403") {
			t.Fatalf("a stranger's call for a binding through %s: %q, want 403", lbAddr, got)
		}
	})
}

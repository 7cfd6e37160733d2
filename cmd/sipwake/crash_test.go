package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// acknowledged reads a sipp message trace: the devices (user and pn-prid)
// whose REGISTER got a 200.
func acknowledged(trace string) map[string]string {
	prid := regexp.MustCompile(`pn-prid=([^;>\s]+)`)
	callID := regexp.MustCompile(`(?m)^Call-ID: *(\S+)`)
	user := regexp.MustCompile(`(?m)^To: *<sip:([^@]+)@`)
	sent := map[string][2]string{} // call-id -> user, prid
	ok := map[string]string{}      // prid -> user
	for _, blk := range strings.Split(trace, "\n-------") {
		id := callID.FindStringSubmatch(blk)
		if id == nil {
			continue
		}
		_, msg, _ := strings.Cut(blk, ":\n")
		msg = strings.TrimSpace(msg)
		switch {
		case strings.Contains(blk, "message sent") && strings.HasPrefix(msg, "REGISTER "):
			if p, u := prid.FindStringSubmatch(msg), user.FindStringSubmatch(msg); p != nil && u != nil {
				sent[id[1]] = [2]string{u[1], p[1]}
			}
		case strings.Contains(blk, "message received") && strings.HasPrefix(msg, "SIP/2.0 200"):
			if d, found := sent[id[1]]; found {
				ok[d[1]] = d[0]
			}
		}
	}
	return ok
}

// kill -9 in the middle of a burst of registrations: after a restart the
// bbolt file opens and every REGISTER that got a 200 has its record.
func TestKill9MidBurstLosesNoAcknowledgedRecord(t *testing.T) {
	bin := buildShipped(t)
	const users, devices = 8, 50
	pw := "burst-Pa55"
	accounts := map[string]string{}
	var lines []peertest.SippUser
	apns := pushtest.NewAPNs(t)
	for d := range devices {
		for u := range users {
			name := fmt.Sprintf("u%02d", u)
			accounts[name] = pw
			lines = append(lines, peertest.SippUser{User: name, Domain: "example.test", Password: pw,
				Provider: "apns", PRID: fmt.Sprintf("burst%02d%03d%s", u, d, strings.Repeat("0", 40)), Param: apns.Param()})
		}
	}
	kam := peertest.StartKamailio(t, peertest.KamailioOptions{Addr: peertest.Addr(t, 1, 5060), Domain: "example.test", Users: accounts})

	apps, err := yaml.Marshal([]push.AppConfig{apns.App("ios")})
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	seal := store.NewKey()
	sipAddr, adminAddr := peertest.Addr(t, 2, 5060), peertest.Addr(t, 2, 9060)
	env := append(os.Environ(),
		"SIPWAKE_STORE_DATA_DIR="+dataDir,
		"SIPWAKE_SIP_LISTEN_UDP="+sipAddr,
		"SIPWAKE_SIP_LISTEN_TCP="+sipAddr,
		"SIPWAKE_SIP_UPSTREAM=sip:"+kam.Addr,
		"SIPWAKE_SIP_REGISTER_RATE=0",
		"SIPWAKE_ADMIN_LISTEN="+adminAddr,
		"SIPWAKE_SHUTDOWN_DRAIN_TIMEOUT=1s",
		"SIPWAKE_LOG_LEVEL=warn",
		"SIPWAKE_SEAL_KEY="+base64.StdEncoding.EncodeToString(seal),
		"SIPWAKE_PUSH_APPS="+string(apps),
	)
	run := func() (*exec.Cmd, <-chan error, *peertest.Buffer) {
		return startShipped(t, bin, env, "http://"+adminAddr+"/readyz")
	}

	cmd, exited, _ := run()
	burst := peertest.StartSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "register_auth"),
		Remote:    sipAddr,
		LocalIP:   peertest.IP(t, 3),
		LocalPort: 5060,
		Injection: peertest.RegisterInjection(lines...),
		Keys:      map[string]string{"expires": "600"},
		Calls:     len(lines),
		Rate:      400,
		Limit:     100,
		Timeout:   20 * time.Second,
	})
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(burst.Result().Messages(), "SIP/2.0 200") < len(lines)/4 {
		if time.Now().After(deadline) {
			t.Fatal("the burst never got a quarter of its 200s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil {
		t.Fatal("sipwake exited cleanly after SIGKILL")
	}
	res := burst.Stop()
	acked := acknowledged(res.Messages())
	t.Logf("SIGKILL after %d of %d REGISTERs were acknowledged", len(acked), len(lines))
	if len(acked) == 0 || len(acked) == len(lines) {
		t.Fatalf("%d acknowledged: the kill was not in the middle of the burst", len(acked))
	}

	// Restart on the same data dir: it must open the file and serve.
	cmd, exited, logs := run()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("restarted sipwake exited with %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("restarted sipwake did not stop")
	}

	keys, err := store.NewKeyring("k1", map[string][]byte{"k1": seal})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenBolt(filepath.Join(dataDir, "sipwake.db"), keys, nil)
	if err != nil {
		t.Fatalf("the store does not open after kill -9: %v", err)
	}
	defer st.Close()
	rl := relay.New(st, nil, relay.Options{RecordTTL: 120 * time.Hour, Providers: []string{"apns"}}, slog.New(slog.DiscardHandler), time.Now)
	held := map[string]bool{}
	for u := range users {
		bs, err := rl.Bindings(context.Background(), relay.AOR(fmt.Sprintf("u%02d@example.test", u)))
		if err != nil {
			t.Fatalf("read records: %v", err)
		}
		for _, b := range bs {
			held[b.Device.Token] = true
		}
	}
	lost := 0
	for prid, user := range acked {
		if !held[prid] {
			lost++
			t.Errorf("acknowledged REGISTER of %s (%s) has no record after kill -9", user, prid)
		}
	}
	n, err := st.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after restart: %d records held, %d acknowledged, %d lost", n, len(acked), lost)
}

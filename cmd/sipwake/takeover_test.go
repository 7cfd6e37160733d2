package main

import (
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/store"
)

// gauge reads one sample of a metric from a /metrics page ("" when absent).
func gauge(t *testing.T, url, sample string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return ""
	}
	return string(m[1])
}

// Two sipwake processes share a Redis. Node A takes a handed-over account
// in through its API and keeps it registered; node B stands by. A is killed
// with SIGKILL (its lease is never given back): once the lease lapses, B
// re-registers the account in the same dialog before the registrar drops
// it, and the record is intact.
func TestKilledNodeHandoverTakenOver(t *testing.T) {
	bin := buildShipped(t)
	const pw = "takeover-Pa55"
	kam := peertest.StartKamailio(t, peertest.KamailioOptions{Addr: peertest.Addr(t, 1, 5060), Domain: "example.test", Users: map[string]string{"alice": pw}})
	redisAddr := peertest.StartRedis(t, "")
	fake := pushtest.NewAPNs(t)
	apps, err := yaml.Marshal([]push.AppConfig{fake.App("ios")})
	if err != nil {
		t.Fatal(err)
	}
	const key = "takeover-api-key-0123456789"
	keys, err := yaml.Marshal([]api.Key{{App: "phone", SHA256: api.HashKey(key)}})
	if err != nil {
		t.Fatal(err)
	}
	seal := base64.StdEncoding.EncodeToString(store.NewKey())
	start := func(n int, withAPI bool) (*exec.Cmd, string) {
		sipAddr, adminAddr := peertest.Addr(t, n, 5060), peertest.Addr(t, n, 9060)
		env := append(os.Environ(),
			"SIPWAKE_STORE_BACKEND=redis",
			"SIPWAKE_STORE_REDIS_ADDRS="+redisAddr,
			"SIPWAKE_STORE_DATA_DIR="+t.TempDir(),
			"SIPWAKE_SEAL_KEY="+seal,
			"SIPWAKE_SIP_LISTEN_UDP="+sipAddr,
			"SIPWAKE_SIP_LISTEN_TCP="+sipAddr,
			"SIPWAKE_SIP_UPSTREAM=sip:"+kam.Addr,
			"SIPWAKE_CLUSTER_RESCAN_INTERVAL=200ms",
			"SIPWAKE_ADMIN_LISTEN="+adminAddr,
			"SIPWAKE_LOG_LEVEL=warn",
			"SIPWAKE_PUSH_APPS="+string(apps),
		)
		if withAPI {
			env = append(env, "SIPWAKE_API_LISTEN="+peertest.Addr(t, n, 8443), "SIPWAKE_API_KEYS="+string(keys))
		}
		cmd, _, _ := startShipped(t, bin, env, "http://"+adminAddr+"/readyz")
		return cmd, "http://" + adminAddr + "/metrics"
	}
	nodeA, _ := start(2, true)
	_, metricsB := start(7, false)

	body := `{"aor":"alice@example.test","registrar":"sip:` + kam.Addr + `","transport":"udp","username":"alice","password":"` + pw +
		`","expires":10,"push":{"provider":"apns","token":"` + pushtest.APNsToken(70) + `","param":"` + fake.Param() + `"}}`
	if code := handovertest.PutAccount(t, peertest.Addr(t, 2, 8443), key, "phone-1", body); code != http.StatusCreated {
		t.Fatalf("PUT answered %d", code)
	}
	before, err := kam.Locations(t.Context(), "alice@example.test")
	if err != nil || len(before) != 1 {
		t.Fatalf("registrar holds %+v (%v)", before, err)
	}
	eventually := func(what string, within time.Duration, ok func() bool) {
		deadline := time.Now().Add(within)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for: %s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	standby := `sipwake_upstream_registrations{state="standby"}`
	registered := `sipwake_upstream_registrations{state="registered"}`
	eventually("node B standing by", 15*time.Second, func() bool { return gauge(t, metricsB, standby) == "1" })

	if err := nodeA.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually("node B took the account over", 20*time.Second, func() bool { return gauge(t, metricsB, registered) == "1" })
	after, err := kam.Locations(t.Context(), "alice@example.test")
	if err != nil || len(after) != 1 || after[0].CallID != before[0].CallID || after[0].CSeq <= before[0].CSeq {
		t.Fatalf("not re-registered in the same dialog: before %+v after %+v (%v)", before, after, err)
	}
	if n, _ := strconv.Atoi(gauge(t, metricsB, "sipwake_store_records")); n != 1 {
		t.Fatalf("node B sees %d records, want 1", n)
	}
}

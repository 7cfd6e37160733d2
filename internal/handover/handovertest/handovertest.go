// Package handovertest builds what tests of handed-over accounts need: a
// real Kamailio registrar with digest auth, a sealed store, the relay over
// it, and Registrations, all on addresses private to the calling test.
package handovertest

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// Domain is the SIP domain (and digest realm) of the test registrar.
const Domain = "example.test"

// Users are the registrar's accounts: name -> password.
func Users() map[string]string {
	return map[string]string{"alice": "s3cret-alice", "bob": "s3cret-bob", "carol": "s3cret-carol"}
}

// HA1 is MD5(user:realm:password), the form some apps hand over instead of
// the password.
func HA1(user, password string) string {
	sum := md5.Sum([]byte(user + ":" + Domain + ":" + password))
	return hex.EncodeToString(sum[:])
}

// Env is one test's registrar and sipwake side.
type Env struct {
	Kamailio *peertest.Kamailio
	DBPath   string
	Keys     *store.Keyring
	Store    *store.Bolt
	Relay    *relay.Service
	Log      *slog.Logger
	// ContactHost is the host:port put in registered contacts.
	ContactHost string
}

// Start starts Kamailio on peertest.Addr(t, 1, 5060) and opens a fresh
// store and relay. It skips the test when Kamailio is not installed.
func Start(t testing.TB) *Env {
	t.Helper()
	k := peertest.StartKamailio(t, peertest.KamailioOptions{
		Addr:   peertest.Addr(t, 1, 5060),
		Domain: Domain,
		Users:  Users(),
	})
	keys, err := store.NewKeyring("k1", map[string][]byte{"k1": store.NewKey()})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Kamailio: k, DBPath: filepath.Join(t.TempDir(), "sipwake.db"), Keys: keys, Log: Logger(t),
		ContactHost: peertest.Addr(t, 2, 5060)}
	e.Open(t)
	return e
}

// Open (re)opens the store and builds a relay over it, as a restart does.
func (e *Env) Open(t testing.TB) {
	t.Helper()
	st, err := store.OpenBolt(e.DBPath, e.Keys, e.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e.Store = st
	e.Relay = relay.New(st, nil, relay.Options{RecordTTL: 5 * 24 * time.Hour, Providers: []string{"apns", "fcm"}}, e.Log, time.Now)
}

// Close closes the store (before Open simulates a restart).
func (e *Env) Close(t testing.TB) {
	t.Helper()
	if err := e.Store.Close(); err != nil {
		t.Fatal(err)
	}
}

// ContactFor is the contact the registrations register: sw-<id>@ContactHost.
func (e *Env) ContactFor(id store.ID, transport string) string {
	return "sip:" + sipmsg.BindingUserPrefix + id.String() + "@" + e.ContactHost + ";transport=" + transport
}

// Registrations builds and starts Registrations over the env with test-speed timings
// (opts fields left zero get them); it is stopped in t.Cleanup.
func (e *Env) Registrations(t testing.TB, opts handover.Options) *handover.Registrations {
	t.Helper()
	if opts.ContactFor == nil {
		opts.ContactFor = e.ContactFor
	}
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Second
	}
	if opts.RetryMin == 0 {
		opts.RetryMin = 200 * time.Millisecond
		opts.RetryMax = 2 * time.Second
	}
	if opts.ResumeSpread == 0 {
		opts.ResumeSpread = 500 * time.Millisecond
	}
	k, err := handover.New(e.Relay, e.Store, opts, e.Log)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = k.Stop(ctx)
	})
	return k
}

// Account is a handed-over account of user at the test registrar.
func (e *Env) Account(app, id, user, password string, expires int) relay.Binding {
	return relay.Binding{
		AOR:    relay.AOR(user + "@" + Domain),
		Device: relay.Device{Provider: "apns", Token: "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0", Param: "TEAMID.org.example.app.voip"},
		Account: &relay.Account{
			ID: id, App: app, Registrar: e.Kamailio.Addr, Transport: "udp",
			Username: user, Password: password, Expires: expires,
		},
	}
}

// Locations reads the registrar's live contacts of user.
func (e *Env) Locations(t testing.TB, user string) []peertest.Binding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bs, err := e.Kamailio.Locations(ctx, user+"@"+Domain)
	if err != nil {
		t.Fatalf("Locations(%s): %v", user, err)
	}
	return bs
}

// Eventually polls cond every 50ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Logger logs to the test when -v is given, else nowhere.
func Logger(t testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("HANDOVER_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// PutAccount hands an account over through the handover API at addr
// (host:port, plain HTTP) with API key key, and returns the status.
func PutAccount(t testing.TB, addr, key, id, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/accounts/"+id, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

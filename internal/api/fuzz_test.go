package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

const fuzzKey = "fuzz-app-key-0123456789abcdef"

// fuzzBindings serves apns and fcm and holds nothing.
type fuzzBindings struct{}

func (fuzzBindings) AccountID(app, id string) store.ID { return store.ID{} }
func (fuzzBindings) Binding(context.Context, store.ID) (relay.Binding, error) {
	return relay.Binding{}, store.ErrNotFound
}
func (fuzzBindings) Supports(p string) bool { return p == "apns" || p == "fcm" }
func (fuzzBindings) Providers() []string    { return []string{"apns", "fcm"} }

// handRecorder records what the API asked to hand over: the only way a PUT
// reaches the store.
type handRecorder struct {
	mu    sync.Mutex
	hands []relay.Binding
	ttls  []time.Duration
}

func (k *handRecorder) Hand(_ context.Context, b relay.Binding, ttl time.Duration) (relay.Binding, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hands = append(k.hands, b)
	k.ttls = append(k.ttls, ttl)
	b.ExpiresAt = time.Now().Add(ttl)
	return b, true, nil
}
func (k *handRecorder) Release(context.Context, string, string) error { return store.ErrNotFound }
func (k *handRecorder) Status(store.ID) (handover.Status, bool)       { return handover.Status{}, false }

func (k *handRecorder) take() ([]relay.Binding, []time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, t := k.hands, k.ttls
	k.hands, k.ttls = nil, nil
	return h, t
}

// FuzzAccountBody (seeds in testdata/fuzz/FuzzAccountBody) feeds arbitrary PUT bodies through the whole handler
// (decoding, validation, the registrations call, the answer). No body may panic;
// a rejected body never reaches the registrations (nothing is stored); an
// accepted one reaches it exactly once and holds only validated values;
// no answer echoes the password.
func FuzzAccountBody(f *testing.F) {
	k := &handRecorder{}
	cfg := Config{Listen: "127.0.0.1:0", Keys: []Key{{App: "app1", SHA256: HashKey(fuzzKey)}},
		RateLimit: RateLimit{PerKey: 1e9, PerKeyBurst: 1 << 30, PerSource: 1e9, PerSourceBurst: 1 << 30}}
	srv, err := New(cfg, fuzzBindings{}, k, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPut, "/v1/accounts/acc-1", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+fuzzKey)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		hands, ttls := k.take()
		res := rec.Result()
		switch {
		case res.StatusCode == http.StatusCreated || res.StatusCode == http.StatusOK:
			if len(hands) != 1 {
				t.Fatalf("answered %d after %d hand-overs, want 1", res.StatusCode, len(hands))
			}
			checkHanded(t, hands[0], ttls[0])
		case res.StatusCode >= 400 && res.StatusCode < 500:
			if len(hands) != 0 {
				t.Fatalf("answered %d yet handed %d account(s) to the registrations", res.StatusCode, len(hands))
			}
		default:
			t.Fatalf("answered %d to a body that never reached a registrar", res.StatusCode)
		}
		var req2 struct{ Password, HA1 string }
		if json.Unmarshal(body, &req2) == nil {
			var fields any
			_ = json.Unmarshal(body, &fields)
			for _, secret := range []string{req2.Password, req2.HA1} {
				// A secret that is also part of a field the answer may
				// show (an AOR of zeros and a password of zeros) is no
				// echo of the secret.
				if len(secret) >= 6 && strings.Contains(rec.Body.String(), secret) && !inOtherFields(fields, secret) {
					t.Fatalf("answer %d echoes a secret: %s", res.StatusCode, rec.Body.String())
				}
			}
		}
	})
}

// inOtherFields tells whether s is part of a string value of the decoded
// body other than the password and HA1.
func inOtherFields(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(v, s)
	case []any:
		for _, e := range v {
			if inOtherFields(e, s) {
				return true
			}
		}
	case map[string]any:
		for k, e := range v {
			if !strings.EqualFold(k, "password") && !strings.EqualFold(k, "ha1") && inOtherFields(e, s) {
				return true
			}
		}
	}
	return false
}

// checkHanded holds an accepted account to what validation promises.
func checkHanded(t *testing.T, b relay.Binding, ttl time.Duration) {
	t.Helper()
	a := b.Account
	user, domain, ok := strings.Cut(string(b.AOR), "@")
	switch {
	case a == nil:
		t.Fatal("handed a binding without an account")
	case !ok || user == "" || domain == "" || strings.ContainsAny(string(b.AOR), " ;<>:?,\"\\\r\n") || strings.Count(string(b.AOR), "@") != 1:
		t.Fatalf("handed AOR %q", b.AOR)
	case (a.Password == "") == (a.HA1 == ""):
		t.Fatal("handed an account with both or neither of password and ha1")
	case len(a.Password) > 256, a.HA1 != "" && len(a.HA1) != 32:
		t.Fatal("handed an over-long credential")
	case a.Username == "" || len(a.Username) > 128 || strings.ContainsAny(a.Username, "\"\\\r\n"):
		t.Fatalf("handed username %q", a.Username)
	case a.Expires < minExpires || a.Expires > maxExpires:
		t.Fatalf("handed expires %d", a.Expires)
	case ttl < minTTLDays*24*time.Hour || ttl > maxTTLDays*24*time.Hour:
		t.Fatalf("handed ttl %v", ttl)
	case b.Device.Provider != "apns" && b.Device.Provider != "fcm":
		t.Fatalf("handed provider %q", b.Device.Provider)
	case b.Device.Token == "" || len(b.Device.Token) > 4096 || len(b.Device.Param) > 256:
		t.Fatal("handed an empty or over-long push target")
	case a.App != "app1" || a.ID != "acc-1":
		t.Fatalf("handed app/id %q/%q", a.App, a.ID)
	}
}

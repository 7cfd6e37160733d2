package httpserve_test

import (
	"crypto/sha256"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sipwake/sipwake/internal/httpserve"
)

func TestBearerSum(t *testing.T) {
	want := sha256.Sum256([]byte("k3y"))
	for _, c := range []struct {
		header string
		ok     bool
	}{
		{"Bearer k3y", true},
		{"bearer k3y", true}, // RFC 6750: the scheme is case-insensitive
		{"BEARER   k3y  ", true},
		{"", false},
		{"Bearer", false},
		{"Bearer    ", false},
		{"Basic azN5", false},
		{"Bearerk3y", false},
		{"Token k3y", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if c.header != "" {
			r.Header.Set("Authorization", c.header)
		}
		sum, ok := httpserve.BearerSum(r)
		if ok != c.ok || (ok && sum != want) {
			t.Errorf("%q: ok=%v, sum matches=%v; want ok=%v", c.header, ok, sum == want, c.ok)
		}
	}
}

// A Slot starts once, serves, stops once and does not start again.
func TestSlot(t *testing.T) {
	var s httpserve.Slot
	if s.Addr() != "" || s.URL() != "" {
		t.Fatalf("before Start: %q %q", s.Addr(), s.URL())
	}
	opts := httpserve.Options{Name: "test", Addr: "127.0.0.1:0", Log: slog.New(slog.DiscardHandler),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "up") })}
	if started, err := s.Start(t.Context(), opts); !started || err != nil {
		t.Fatalf("Start = %v, %v", started, err)
	}
	addr := s.Addr()
	if started, err := s.Start(t.Context(), opts); started || err != nil || s.Addr() != addr {
		t.Fatalf("second Start = %v, %v (addr %s, was %s)", started, err, s.Addr(), addr)
	}
	res, err := http.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if s.URL() != "http://"+addr || string(body) != "up" {
		t.Fatalf("GET %s: %q", s.URL(), body)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if res, err := http.Get("http://" + addr); err == nil {
		_ = res.Body.Close()
		t.Error("still served after Stop")
	}
	if started, err := s.Start(t.Context(), opts); started || err == nil {
		t.Errorf("Start after Stop = %v, %v; want an error", started, err)
	}
}

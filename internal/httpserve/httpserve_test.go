package httpserve_test

import (
	"crypto/sha256"
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

package sip

import (
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/limit"
)

func TestSubscriberOf(t *testing.T) {
	cases := []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa::17", "2001:db8:1:2::"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
		{"::1", "::"},
	}
	for _, tc := range cases {
		if got := subscriberOf(netip.MustParseAddr(tc.in)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("subscriberOf(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// A phone that hops between the addresses of its /64 is one source to the
// REGISTER limit; its neighbour in the next /64 has its own budget.
func TestRegisterLimitKeysIPv6ByPrefix(t *testing.T) {
	l := limit.New[netip.Addr](0.001, 1, time.Now)
	if !l.Allow(subscriberOf(netip.MustParseAddr("2001:db8:0:1::17"))) {
		t.Fatal("first REGISTER refused")
	}
	if l.Allow(subscriberOf(netip.MustParseAddr("2001:db8:0:1:abcd::99"))) {
		t.Fatal("another address of the same /64 got a fresh budget")
	}
	if !l.Allow(subscriberOf(netip.MustParseAddr("2001:db8:0:2::17"))) {
		t.Fatal("the next /64 shares the first one's budget")
	}
}

func TestIPv6URIHosts(t *testing.T) {
	var u sip.Uri
	if err := sip.ParseUri("sip:sw-x@[2001:db8::17]:50233;transport=tcp;lr", &u); err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.INVITE, u)
	dest, transport := nextHop(req)
	if dest != "[2001:db8::17]:50233" || transport != "tcp" {
		t.Fatalf("nextHop = %q %q, want [2001:db8::17]:50233 tcp", dest, transport)
	}
	s := &Server{opts: Options{PublicHost: "192.0.2.1", PublicHost6: "2001:db8::1", PublicPort: 5060}}
	for _, c := range []struct {
		uri   string
		local bool
	}{
		{"sip:sw-a@[2001:db8::1]:5060;lr", true},
		{"sip:sw-a@[2001:db8::1];lr", true},
		{"sip:sw-a@192.0.2.1:5060;lr", true},
		{"sip:sw-a@[2001:db8::2]:5060;lr", false},
		{"sip:sw-a@[2001:db8::1]:5070;lr", false},
	} {
		var u sip.Uri
		if err := sip.ParseUri(c.uri, &u); err != nil {
			t.Fatal(err)
		}
		if got := s.isLocal(u); got != c.local {
			t.Errorf("isLocal(%s) = %v, want %v", c.uri, got, c.local)
		}
	}
	for _, c := range []struct{ peer, host string }{
		{"[2001:db8::17]:50233", "2001:db8::1"},
		{"2001:db8::17", "2001:db8::1"},
		{"[2001:db8::17]", "2001:db8::1"},
		{"198.51.100.4:5060", "192.0.2.1"},
		{"registrar.example.com", "192.0.2.1"},
	} {
		if got := s.publicHostFor(c.peer); got != c.host {
			t.Errorf("publicHostFor(%s) = %s, want %s", c.peer, got, c.host)
		}
	}
	rr := s.recordRoute("udp", "[2001:db8::17]:50233")
	if got := rr.Value(); got != "<sip:[2001:db8::1]:5060;transport=udp;lr>" {
		t.Errorf("Record-Route toward an IPv6 phone = %s", got)
	}
}

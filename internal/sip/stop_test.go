package sip

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStopEndsRegistersWaitingForTheRegistrar: Stop ends the stateless
// REGISTERs still waiting for the registrar (here it reads them and never
// answers) instead of waiting out sip.upstream_timeout, and gives back
// their places among sip.max_registers_in_flight.
func TestStopEndsRegistersWaitingForTheRegistrar(t *testing.T) {
	s, registrar, device := behindSilentRegistrar(t, time.Hour, 0)
	const n = 3
	for i := range n {
		req := strings.Replace(seedMessages[0], "CSeq: 1 ", fmt.Sprintf("CSeq: %d ", i+1), 1)
		if _, err := device.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	for range n { // all forwarded: each waits for its answer
		_ = registrar.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _, err := registrar.ReadFrom(buf)
		if err != nil {
			t.Fatalf("registrar got no REGISTER: %v", err)
		}
		if !strings.HasPrefix(string(buf[:k]), "REGISTER ") {
			t.Fatalf("registrar got %q", buf[:k])
		}
	}
	if got := s.inFlight.Load(); got != n {
		t.Fatalf("%d REGISTERs in flight, want %d", got, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v (it waited for the registrar)", err)
	}
	if got := s.inFlight.Load(); got != 0 {
		t.Fatalf("%d REGISTERs in flight after Stop, want 0", got)
	}
}

// behindSilentRegistrar starts a server over UDP (upstream timeout and
// in-flight bound as given; 0 leaves the bound at its default) in front of
// a registrar that reads and never answers, and a device's socket
// connected to it; the sockets close with tb.
func behindSilentRegistrar(tb testing.TB, timeout time.Duration, maxInFlight int) (s *Server, registrar *net.UDPConn, device net.Conn) {
	tb.Helper()
	registrar, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = registrar.Close() })
	opts := fuzzOptions
	opts.Listen = Listen{UDP: "127.0.0.1:0"}
	opts.Upstream.Port = registrar.LocalAddr().(*net.UDPAddr).Port
	opts.UpstreamTimeout = timeout
	opts.MaxRegistersInFlight = maxInFlight
	s = serverWith(tb, fuzzRelay, opts)
	if err := s.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	device, err = net.Dial("udp", s.Addr("udp"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = device.Close() })
	return s, registrar, device
}

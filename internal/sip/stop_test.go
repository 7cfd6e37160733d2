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
	registrar, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer registrar.Close()
	opts := fuzzOptions
	opts.Listen = Listen{UDP: "127.0.0.1:0"}
	opts.Upstream.Port = registrar.LocalAddr().(*net.UDPAddr).Port
	opts.UpstreamTimeout = time.Hour
	s := serverWith(t, fuzzRelay, opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	device, err := net.Dial("udp", s.Addr("udp"))
	if err != nil {
		t.Fatal(err)
	}
	defer device.Close()
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

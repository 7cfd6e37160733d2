package sip

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// storeModes are the two ways the stateless path admits a REGISTER: on
// the socket's read loop (the store in this process, bbolt) or on a worker
// (a store across the network, Redis).
var storeModes = map[string]bool{"store in process": true, "store across the network": false}

// TestStopEndsRegistersWaitingForTheRegistrar: Stop ends the stateless
// REGISTERs still waiting for the registrar (here it reads them and never
// answers) instead of waiting out sip.upstream_timeout, and gives back
// their places among sip.max_registers_in_flight.
func TestStopEndsRegistersWaitingForTheRegistrar(t *testing.T) {
	for name, inProcess := range storeModes {
		t.Run(name, func(t *testing.T) {
			s, registrar, device := behindSilentRegistrar(t, time.Hour, 0, inProcess)
			const n = 3
			for i := range n {
				req := strings.Replace(seedMessages[0], "CSeq: 1 ", fmt.Sprintf("CSeq: %d ", i+1), 1)
				if _, err := device.Write([]byte(req)); err != nil {
					t.Fatal(err)
				}
			}
			readRegisters(t, registrar, n) // all forwarded: each waits for its answer
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
		})
	}
}

// TestSilentRegistrarAnswered408: a REGISTER the registrar leaves
// unanswered gets sipwake's 408 once sip.upstream_timeout ran out (and at
// most expireTick later), and gives back its place among
// sip.max_registers_in_flight; no goroutine waited for it.
func TestSilentRegistrarAnswered408(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for name, inProcess := range storeModes {
		t.Run(name, func(t *testing.T) {
			s, registrar, device := behindSilentRegistrar(t, timeout, 0, inProcess)
			req, _ := sippPushRegister("u00001") // as sipp's register_push.xml sends it
			start := time.Now()
			if _, err := device.Write([]byte(req)); err != nil {
				t.Fatal(err)
			}
			readRegisters(t, registrar, 1)
			buf := make([]byte, 4096)
			_ = device.SetReadDeadline(time.Now().Add(10 * time.Second))
			k, err := device.Read(buf)
			if err != nil {
				t.Fatalf("device got no answer: %v", err)
			}
			took := time.Since(start)
			if got := string(buf[:k]); !strings.HasPrefix(got, "SIP/2.0 408 ") || !strings.Contains(got, "branch=z9hG4bK-u00001") {
				t.Fatalf("device got %q, want a 408 to its REGISTER", got)
			}
			if took < timeout || took > timeout+expireTick(timeout)+2*time.Second {
				t.Fatalf("408 after %v, want it once %v ran out", took, timeout)
			}
			waitInFlight(t, s)
		})
	}
}

// TestUnsentREGISTERAnswered503: a REGISTER sipwake cannot send upstream
// (a registrar whose name does not resolve; an IPv6 one, which the IPv4
// socket cannot send to) gets a 503 and gives back its place among
// sip.max_registers_in_flight.
func TestUnsentREGISTERAnswered503(t *testing.T) {
	for _, upstream := range []string{"registrar.invalid", "::1"} {
		for name, inProcess := range storeModes {
			t.Run(upstream+" "+name, func(t *testing.T) { unsentAnswered503(t, upstream, inProcess) })
		}
	}
}

func unsentAnswered503(t *testing.T, upstream string, inProcess bool) {
	opts := fuzzOptions
	opts.Listen = Listen{UDP: "127.0.0.1:0"}
	opts.Upstream.Host = upstream
	opts.StoreInProcess = inProcess
	s := serverWith(t, fuzzRelay, opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	device, err := net.Dial("udp", s.Addr("udp"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = device.Close() })
	req, _ := sippPushRegister("u00001") // as sipp's register_push.xml sends it
	if _, err := device.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	// A resolver that cannot reach its server gives up after two
	// 5 s attempts.
	_ = device.SetReadDeadline(time.Now().Add(30 * time.Second))
	k, err := device.Read(buf)
	if err != nil {
		t.Fatalf("device got no answer: %v", err)
	}
	if got := string(buf[:k]); !strings.HasPrefix(got, "SIP/2.0 503 ") || !strings.Contains(got, "registrar cannot be reached") {
		t.Fatalf("device got %q, want sipwake's 503", got)
	}
	waitInFlight(t, s)
}

// waitInFlight waits up to 2 s for s to hold no REGISTER in flight (a
// place is given back just after the answer went out), failing t if one
// stays.
func waitInFlight(t *testing.T, s *Server) {
	t.Helper()
	for end := time.Now().Add(2 * time.Second); s.inFlight.Load() != 0 && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	if got := s.inFlight.Load(); got != 0 {
		t.Fatalf("%d REGISTERs in flight after the answer, want 0", got)
	}
}

// TestZeroUpstreamTimeoutTakesTheDefault: Options without an upstream
// timeout wait the default for the registrar, and sipwake serves and stops
// (expire's tick is a tenth of it).
func TestZeroUpstreamTimeoutTakesTheDefault(t *testing.T) {
	opts := fuzzOptions
	opts.Listen = Listen{UDP: "127.0.0.1:0"}
	opts.UpstreamTimeout = 0
	s := serverWith(t, fuzzRelay, opts)
	if s.opts.UpstreamTimeout != defaultUpstreamTimeout {
		t.Fatalf("upstream timeout %v, want %v", s.opts.UpstreamTimeout, defaultUpstreamTimeout)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// readRegisters reads n REGISTERs at registrar, failing tb if they do not
// come within 10 s each.
func readRegisters(tb testing.TB, registrar *net.UDPConn, n int) {
	tb.Helper()
	buf := make([]byte, 4096)
	for range n {
		_ = registrar.SetReadDeadline(time.Now().Add(10 * time.Second))
		k, _, err := registrar.ReadFrom(buf)
		if err != nil {
			tb.Fatalf("registrar got no REGISTER: %v", err)
		}
		if !strings.HasPrefix(string(buf[:k]), "REGISTER ") {
			tb.Fatalf("registrar got %q", buf[:k])
		}
	}
}

// behindSilentRegistrar starts a server over UDP (upstream timeout,
// in-flight bound and StoreInProcess as given; a bound of 0 leaves it at
// its default) in front of a registrar that reads and never answers, and a
// device's socket connected to it; the sockets close with tb.
func behindSilentRegistrar(tb testing.TB, timeout time.Duration, maxInFlight int, inProcess bool) (s *Server, registrar *net.UDPConn, device net.Conn) {
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
	opts.StoreInProcess = inProcess
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

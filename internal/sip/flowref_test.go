package sip

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// Asking whether a device's flow is open (liveFlow on every call, flowOpen
// on every in-dialog request) must give back the connection reference
// sipgo's pool lends: a reference kept grows without end, and one given
// back twice drops a live phone's count toward the hard close. The count
// stays where it was however often it is asked; once the phone hangs up,
// the flow is gone.
func TestFlowOpenKeepsReferencesBalanced(t *testing.T) {
	s, err := New(Options{Listen: Listen{TCP: "127.0.0.1:0"}}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = s.Stop(stop)
	})
	phone, err := net.Dial("tcp", s.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	f := flow{transport: "tcp", source: phone.LocalAddr().String()}
	pool := s.ua.TransportLayer().Pool("tcp")
	deadline := time.Now().Add(2 * time.Second)
	for pool.Get(f.source) == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c := pool.Get(f.source)
	if c == nil {
		t.Fatal("the phone's connection never reached the pool")
	}
	before := c.Ref(0)
	for range 100 {
		if !s.flowOpen(f) {
			t.Fatal("an open flow reported gone")
		}
	}
	if after := c.Ref(0); after != before {
		t.Fatalf("100 looks at the flow moved its reference count from %d to %d", before, after)
	}
	// The two references this test took (the polling loop's last Get and
	// c's) go back.
	for range 2 {
		_, _ = c.TryClose()
	}
	_ = phone.Close()
	deadline = time.Now().Add(2 * time.Second)
	for s.flowOpen(f) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s.flowOpen(f) {
		t.Fatal("a closed flow is still reported open")
	}
}

package sip

import (
	"io"
	"net"
	"testing"
	"time"
)

func TestBoundedListenerClosesIdleAndCapsPerSource(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := bound(raw, 200*time.Millisecond, 2)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := c.Read(make([]byte, 1))
		ne, timeout := err.(net.Error)
		return err != nil && !(timeout && ne.Timeout())
	}
	a, b := dial(), dial()
	third := dial()
	if !closedWithin(third, time.Second) {
		t.Fatal("a third connection from one address was kept")
	}
	if _, err := a.Write([]byte("OPTIONS")); err != nil { // half a message
		t.Fatal(err)
	}
	if !closedWithin(a, 2*time.Second) || !closedWithin(b, 2*time.Second) {
		t.Fatal("idle connections were not closed")
	}
	// Their slots are free again.
	c := dial()
	if closedWithin(c, 100*time.Millisecond) {
		t.Fatal("a new connection was refused after the others closed")
	}
	c.Close()
}

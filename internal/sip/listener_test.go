package sip

import (
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
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
	_ = c.Close()
}

func TestGrowBuffers(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sockopt := func(opt int) int {
		rc, err := conn.(*net.UDPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		if err := rc.Control(func(fd uintptr) { v, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, opt) }); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := growBuffers(conn); err != nil {
		t.Fatal(err)
	}
	// The kernel grants up to its maximum (and reports twice what it
	// grants, for its bookkeeping).
	for _, c := range []struct {
		opt int
		max string
	}{{syscall.SO_RCVBUF, "rmem_max"}, {syscall.SO_SNDBUF, "wmem_max"}} {
		raw, err := os.ReadFile("/proc/sys/net/core/" + c.max)
		if err != nil {
			t.Fatal(err)
		}
		limit, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := sockopt(c.opt), min(udpBuffer, limit); got < want {
			t.Errorf("%s: buffer %d, want at least %d (asked %d, kernel max %d)", c.max, got, want, udpBuffer, limit)
		}
	}
}

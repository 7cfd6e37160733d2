package peertest

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves lines back on addr until the test ends.
func echo(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write(append(sc.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// roundTrip sends a line on c and reads the answer, if one comes within wait.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string, wait time.Duration) (string, error) {
	t.Helper()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	return r.ReadString('\n')
}

// Paused, the relay keeps the connection and holds the bytes back; resumed,
// it delivers them; down, it resets connections and refuses new ones; up,
// it serves again on the same address.
func TestTCPRelay(t *testing.T) {
	target := Addr(t, 1, 7001)
	echo(t, target)
	r := StartTCPRelay(t, Addr(t, 2, 7001), target)
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	if got, err := roundTrip(t, c, rd, "one", 5*time.Second); err != nil || got != "one\n" {
		t.Fatalf("through the relay: %q %v", got, err)
	}

	r.Pause()
	if got, err := roundTrip(t, c, rd, "two", 200*time.Millisecond); err == nil {
		t.Fatalf("paused, the relay let %q through", got)
	}
	r.Resume()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := rd.ReadString('\n'); err != nil || got != "two\n" {
		t.Fatalf("resumed, the held line: %q %v", got, err)
	}

	r.Down()
	if _, err := roundTrip(t, c, rd, "three", 5*time.Second); err == nil {
		t.Fatal("the connection outlived Down")
	}
	if c2, err := net.Dial("tcp", r.Addr()); err == nil {
		_ = c2.Close()
		t.Fatal("down, the relay accepted a connection")
	}
	r.Up()
	c3, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatalf("up again: %v", err)
	}
	defer c3.Close()
	if got, err := roundTrip(t, c3, bufio.NewReader(c3), "four", 5*time.Second); err != nil || got != "four\n" {
		t.Fatalf("up again, through the relay: %q %v", got, err)
	}
}

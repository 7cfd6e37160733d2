package peertest

import (
	"net"
	"sync"
	"testing"
)

// TCPRelay forwards TCP connections from its own address to a target, so a
// test can take the network between a client and a real server away
// without touching the server (its data, keys and certificates stay):
//
//   - Pause stalls every connection, open and new, as a partition does:
//     connections stay open and bytes queue, nothing arrives; Resume lets
//     the queued bytes through.
//   - Down resets every connection and refuses new ones, as a server gone
//     away does; Up listens again on the same address.
type TCPRelay struct {
	tb     testing.TB
	addr   string
	target string

	mu      sync.Mutex
	ln      net.Listener // nil while down
	conns   map[net.Conn]bool
	resumed chan struct{} // closed unless paused
	closed  bool
}

// StartTCPRelay relays listen (an ip:port, e.g. peertest.Addr(tb, 9, 6379);
// port 0 picks one) to target until tb ends.
func StartTCPRelay(tb testing.TB, listen, target string) *TCPRelay {
	tb.Helper()
	r := &TCPRelay{tb: tb, addr: listen, target: target, conns: map[net.Conn]bool{}, resumed: make(chan struct{})}
	close(r.resumed)
	r.Up()
	r.addr = r.ln.Addr().String()
	tb.Cleanup(r.Close)
	return r
}

// Addr is the relay's ip:port, for the client to dial instead of the target.
func (r *TCPRelay) Addr() string { return r.addr }

// Pause stops forwarding bytes in both directions; connections stay open
// and new ones are accepted (and stall too).
func (r *TCPRelay) Pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.resumed:
		r.resumed = make(chan struct{})
	default: // paused already
	}
}

// Resume forwards again, the bytes held back first.
func (r *TCPRelay) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resumeLocked()
}

func (r *TCPRelay) resumeLocked() {
	select {
	case <-r.resumed:
	default:
		close(r.resumed)
	}
}

// Down resets every connection and refuses new ones until Up.
func (r *TCPRelay) Down() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.downLocked()
}

func (r *TCPRelay) downLocked() {
	if r.ln != nil {
		_ = r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		_ = c.Close()
		delete(r.conns, c)
	}
	// Copies waiting for a Resume see their connection closed and end.
	r.resumeLocked()
}

// Up listens again on the relay's address after Down.
func (r *TCPRelay) Up() {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil || r.closed {
		return
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.tb.Fatalf("relay: listen %s: %v", r.addr, err)
	}
	r.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.pipe(c)
		}
	}()
}

// Close takes the relay down for good.
func (r *TCPRelay) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.downLocked()
}

func (r *TCPRelay) pipe(c net.Conn) {
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !r.track(c, up) {
		return
	}
	go r.copy(up, c)
	r.copy(c, up)
}

// track registers a connection pair, or closes it when the relay went down
// meanwhile.
func (r *TCPRelay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln == nil {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.conns[c] = true
	}
	return true
}

// copy forwards src to dst, holding each chunk while paused, and closes
// dst when src ends.
func (r *TCPRelay) copy(dst, src net.Conn) {
	defer func() { _ = dst.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			resumed := r.resumed
			r.mu.Unlock()
			<-resumed
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

package sip

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Stream connections (TCP, TLS) are held to two bounds, so a client that
// opens connections and sends nothing, or half a message, cannot tie
// sipwake up: a connection idle longer than idleTimeout is closed (longer
// than any keep-alive interval a phone uses, RFC 5626 suggests 95-120 s),
// and one address holds at most maxConnsPerSource at once.
const (
	idleTimeout       = 3 * time.Minute
	maxConnsPerSource = 64
)

// udpBuffer is the receive and send buffer asked for the UDP listener. One
// socket carries every phone's datagrams: at the kernel's default (208 KiB,
// about a hundred datagrams) a few milliseconds without a read (a
// collection, a descheduled reader) drop REGISTERs, and each drop costs
// its phone a 500 ms retransmission. The kernel grants at most
// net.core.rmem_max and wmem_max (docs/OPERATIONS.md).
const udpBuffer = 4 << 20

// growBuffers asks the kernel for udpBuffer each way on conn.
func growBuffers(conn net.PacketConn) error {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		return nil
	}
	return errors.Join(uc.SetReadBuffer(udpBuffer), uc.SetWriteBuffer(udpBuffer))
}

// boundedListener wraps a stream listener with both bounds.
type boundedListener struct {
	net.Listener
	idle    time.Duration
	perAddr int

	mu    sync.Mutex
	conns map[netip.Addr]int
}

func bound(l net.Listener, idle time.Duration, perAddr int) *boundedListener {
	return &boundedListener{Listener: l, idle: idle, perAddr: perAddr, conns: map[netip.Addr]int{}}
}

// Accept hands out connections within their source's share; extra ones
// are closed at once.
func (l *boundedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := remoteIP(c)
		l.mu.Lock()
		ok := l.conns[src] < l.perAddr
		if ok {
			l.conns[src]++
		}
		l.mu.Unlock()
		if !ok {
			_ = c.Close()
			continue
		}
		return &idleConn{Conn: c, idle: l.idle, release: func() { l.release(src) }}, nil
	}
}

func (l *boundedListener) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns[src]--; l.conns[src] <= 0 {
		delete(l.conns, src)
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// idleConn closes itself when no byte arrives within idle.
type idleConn struct {
	net.Conn
	idle    time.Duration
	once    sync.Once
	release func()
}

func (c *idleConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *idleConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

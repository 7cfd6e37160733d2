package store

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

// clientTLS trusts ca and presents the certificate in certFile/keyFile
// (none if certFile is empty).
func clientTLS(t *testing.T, ca *peertest.TestCA, certFile, keyFile string) *tls.Config {
	t.Helper()
	c := &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}

// A Redis that speaks only TLS and asks for client certificates: the store
// opens and works with the right CA and a client certificate; it refuses to
// open, saying why, with a CA that did not sign the server's certificate,
// without a client certificate, or without TLS. A TLS store does not fall
// back to plain text on a Redis that has no TLS: its handshake gets no
// answer, and the open times out.
func TestRedisTLS(t *testing.T) {
	ca := peertest.NewTestCA(t, "redis CA")
	addr := peertest.StartRedisTLS(t, peertest.Addr(t, 1, 6380), ca, true)
	cert, key := ca.IssueFiles(t, "sipwake")
	stranger := peertest.NewTestCA(t, "another CA")
	plain := peertest.StartRedis(t, peertest.Addr(t, 2, 6379))

	open := func(addr string, c *tls.Config) (*Redis, error) {
		// A Redis without TLS never answers a TLS handshake: bound the wait.
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		s, err := OpenRedis(ctx, RedisOptions{Addrs: []string{addr}, TLS: c}, testKeyring(t, "a"), nil)
		if err == nil {
			t.Cleanup(func() { _ = s.Close() })
		}
		return s, err
	}
	s, err := open(addr, clientTLS(t, ca, cert, key))
	if err != nil {
		t.Fatalf("right CA and client certificate: %v", err)
	}
	r := haRecord(s, 1)
	if err := s.Put(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, addr string
		tls        *tls.Config
		want       string
	}{
		{"wrong CA", addr, clientTLS(t, stranger, cert, key), "certificate signed by unknown authority"},
		{"no client certificate", addr, clientTLS(t, ca, "", ""), "certificate required"},
		{"no TLS", addr, nil, ""},
		{"TLS to a plain Redis", plain, clientTLS(t, ca, cert, key), "deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := open(tc.addr, tc.tls)
			if err == nil {
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// Sentinels, primary and replica that all speak only TLS: the store finds
// the primary through the Sentinels and writes to it over TLS (with
// MinReplicas, so replication runs over TLS too), and after the primary
// crashes it reads what it wrote from the promoted replica and writes on.
func TestRedisSentinelTLS(t *testing.T) {
	ca := peertest.NewTestCA(t, "redis CA")
	h := peertest.StartRedisHA(t, peertest.RedisHAOptions{Replicas: 2, TLS: ca})
	s, err := OpenRedis(t.Context(), RedisOptions{
		Addrs: h.Sentinels, MasterName: h.MasterName, MinReplicas: 1, TLS: clientTLS(t, ca, "", ""),
	}, testKeyring(t, "a"), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	before := haRecord(s, 1)
	if err := s.Put(t.Context(), before); err != nil {
		t.Fatal(err)
	}
	h.WaitPromoted(t, h.KillPrimary(t))
	if _, err := s.Get(t.Context(), before.ID); err != nil {
		t.Fatalf("written before the failover: %v", err)
	}
	if err := s.Put(t.Context(), haRecord(s, 2)); err != nil {
		t.Fatalf("put after the failover: %v", err)
	}
}

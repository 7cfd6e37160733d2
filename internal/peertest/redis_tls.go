package peertest

import (
	"net"
	"testing"
)

// StartRedisTLS starts a redis-server that speaks only TLS, on addr
// (host:port; no plain port), with a server certificate from ca for addr's
// host. With clientAuth it asks every client for a certificate from ca
// (tls-auth-clients yes). It returns addr once the server listens; the
// rest is as StartRedis.
func StartRedisTLS(tb testing.TB, addr string, ca *TestCA, clientAuth bool) string {
	tb.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	cert, key := ca.IssueFiles(tb, "redis", host)
	auth := "no"
	if clientAuth {
		auth = "yes"
	}
	p, _ := startRedisServer(tb, shortDir(tb, "swr"), host, "0",
		"--tls-port", port, "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", ca.File, "--tls-auth-clients", auth)
	waitRedis(tb, p, "tcp", addr)
	return addr
}

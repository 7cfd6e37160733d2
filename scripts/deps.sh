#!/bin/sh
# Installs the real peers the tests drive (sipp, Kamailio, linphonec, Redis,
# Prometheus), the Go modules and golangci-lint. Idempotent: installs only
# what is missing.
#
#   sipp         Debian sip-tester
#   kamailio     Debian kamailio (also provides kamcmd)
#   linphonec    Debian linphone-cli
#   redis-server Debian redis-server (with TLS; also the Sentinel, as
#                redis-server --sentinel, so redis-sentinel is not needed)
#   openssl      Debian openssl (writes the .p12 of the APNs certificate test)
#   prometheus   Debian prometheus (also provides promtool): checks and
#                unit-tests deploy/prometheus, scrapes sipwake for the dashboard
#   prometheus-node-exporter  Debian prometheus-node-exporter: the host's
#                filesystems, which the records-near-the-disk alert reads
#
# The tests start their own Kamailio, Redis and Prometheus on 127.x.y.z
# addresses. A package's postinst may start a system daemon (Kamailio on
# :5060, Redis on 127.0.0.1:6379, Prometheus on :9090, the node exporter on
# :9100) where services can start (not in Docker builds, where
# policy-rc.d forbids it); this script stops and disables them so they never
# answer in a test's place.
set -eu

missing=""
for bin in sipp kamailio kamcmd linphonec redis-server openssl prometheus promtool prometheus-node-exporter; do
	command -v "$bin" >/dev/null 2>&1 || missing="$missing $bin"
done

if [ -n "$missing" ]; then
	echo "deps: missing:$missing; installing Debian packages" >&2
	SUDO=""
	if [ "$(id -u)" -ne 0 ]; then
		SUDO="sudo"
	fi
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		sip-tester kamailio linphone-cli redis-server openssl prometheus prometheus-node-exporter
	for svc in kamailio redis-server prometheus prometheus-node-exporter; do
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
			$SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
		else
			$SUDO service "$svc" stop >/dev/null 2>&1 || true
		fi
	done
fi

cd "$(dirname "$0")/.."
go mod download

# golangci-lint at the version .golangci.yml is written for, in GOPATH/bin
# (scripts/test.sh calls it by that path).
lint_version=2.15.0
lint="$(go env GOPATH | cut -d: -f1)/bin/golangci-lint"
if ! "$lint" version 2>/dev/null | grep -q "version $lint_version "; then
	echo "deps: installing golangci-lint $lint_version" >&2
	GOBIN="$(dirname "$lint")" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v$lint_version"
fi

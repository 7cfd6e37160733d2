#!/bin/sh
# Installs the real peers the tests drive (sipp, Kamailio, linphonec, Redis)
# and the Go modules. Idempotent: installs only what is missing.
#
#   sipp         Debian sip-tester
#   kamailio     Debian kamailio (also provides kamcmd)
#   linphonec    Debian linphone-cli
#   redis-server Debian redis-server
#   openssl      Debian openssl (writes the .p12 of the APNs certificate test)
#
# The tests start their own Kamailio and Redis on 127.x.y.z addresses. A
# package's postinst may start a system daemon (Kamailio on :5060, Redis on
# 127.0.0.1:6379) where services can start (not in Docker builds, where
# policy-rc.d forbids it); this script stops and disables them so they never
# answer in a test's place.
set -eu

missing=""
for bin in sipp kamailio kamcmd linphonec redis-server openssl; do
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
		sip-tester kamailio linphone-cli redis-server openssl
	for svc in kamailio redis-server; do
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
			$SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
		else
			$SUDO service "$svc" stop >/dev/null 2>&1 || true
		fi
	done
fi

cd "$(dirname "$0")/.."
go mod download

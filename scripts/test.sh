#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing (real
# Kamailio, sipp, linphonec, redis-server from Debian; Go modules;
# golangci-lint), then runs vet, golangci-lint (.golangci.yml) and every test
# with the race detector. Fails, never skips, in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
"$(go env GOPATH | cut -d: -f1)/bin/golangci-lint" run ./...
PEERTEST_REQUIRED=1 go test -race -count=1 -timeout 12m ./...
# A short run of every fuzz target past its seed corpus (the seeds already
# ran above as plain tests).
bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

#!/bin/sh
# Runs every fuzz target for N seconds each (default 10): ./scripts/fuzz.sh [N]
# Seeds live in each package's testdata/fuzz/<Target>; plain `go test` runs
# them as ordinary tests. New failing inputs are written there too: commit
# them with the fix.
set -eu
cd "$(dirname "$0")/.."
secs="${1:-10}"
status=0
for target in \
	./internal/sip:FuzzSIPMessage \
	./internal/api:FuzzAccountBody \
	./internal/config:FuzzConfigParse \
	./internal/store:FuzzKeyringOpen \
	./internal/relay:FuzzDecodeBinding; do
	pkg="${target%%:*}"
	name="${target##*:}"
	echo "== $name ($pkg, ${secs}s)"
	out=$(go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" 2>&1) || status=1
	printf '%s\n' "$out" | grep -E '^(fuzz: elapsed|PASS|FAIL|ok|---|    )' | tail -n 4
done
exit "$status"

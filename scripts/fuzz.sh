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
	./internal/relay:FuzzDecodeBinding \
	./internal/sip:FuzzFlowTokenOpen \
	./internal/push/pn:FuzzPushParams; do
	pkg="${target%%:*}"
	name="${target##*:}"
	echo "== $name ($pkg, ${secs}s)"
	corpus="$pkg/testdata/fuzz/$name"
	before=$(ls "$corpus" 2>/dev/null | wc -l)
	if out=$(go test "$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "${secs}s" 2>&1); then
		printf '%s\n' "$out" | grep -E '^(fuzz: elapsed|PASS|FAIL|ok|---|    )' | tail -n 4
		continue
	fi
	printf '%s\n' "$out" | grep -E '^(fuzz: elapsed|PASS|FAIL|ok|---|    )' | tail -n 4
	# Go's fuzz coordinator can report its own -fuzztime deadline as a
	# failure, with no failing input (go.dev/issue/75804, fixed in Go
	# 1.27). Anything else, or a new input in the corpus, is a failure.
	if [ "$(ls "$corpus" 2>/dev/null | wc -l)" -eq "$before" ] &&
		printf '%s\n' "$out" | grep -q '^    context deadline exceeded$' &&
		[ "$(printf '%s\n' "$out" | grep -c '^--- FAIL')" -eq 1 ]; then
		echo "   (the -fuzztime deadline race of go.dev/issue/75804, no failing input: not counted)"
		continue
	fi
	status=1
done
exit "$status"

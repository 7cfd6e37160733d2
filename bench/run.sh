#!/usr/bin/env bash
# sipwake's REGISTER-rate load harness: Kamailio, sipwake and sipp on
# 127.x.y.n, one table out.
#
#   bash bench/run.sh                # three flows × Kamailio direct, Kamailio edge,
#                                    # sipwake; ~15 min; prints the table
#   bash bench/run.sh cluster        # 1 vs 3 nodes on one Redis behind a dispatcher
#   bash bench/run.sh cluster-calls  # woken calls/s, 1 vs 3 nodes
#   bash bench/run.sh profile RATE   # in-process sipwake at RATE REGISTER/s for
#                                    # 8 s under -cpuprofile; prints pprof -top
#   bash bench/run.sh profile-process RATE  # the same against sipwake as its own
#                                    # process (its /admin/pprof/profile); the
#                                    # digest flow, or FLOW=first / FLOW=refresh
#   bash bench/run.sh kill           # kill -9 sipwake mid-run at 3,000
#                                    # REGISTER/s (-kill.rate), first and
#                                    # moved registrations: acknowledged
#                                    # vs lost; ~1 min
#   bash bench/run.sh calls          # wake-up calls/s vs direct Kamailio calls,
#                                    # INVITE→push latency; ~8 min
#   bash bench/run.sh parked         # dispatch latency with 100 / 1,000 calls
#                                    # parked, RSS per call with 10,000; ~6 min
#   bash bench/run.sh records        # 1,000,000 bindings: write, file size,
#                                    # start-up, RSS, sweep; ~4 min
#   bash bench/run.sh cpuprofile BENCH  # any of the above (BenchmarkWakeCalls, …)
#                                    # under -cpuprofile; prints pprof -top
#   bash bench/run.sh soak [DURATION]   # churn for DURATION (30m; e.g. 5m, 1h30m,
#                                    # or SOAK_DURATION) on 1 node (bbolt) and 3
#                                    # (Redis) side by side; a row per node every
#                                    # minute; fails on growth that does not level off
#
# Needs kamailio, kamcmd and sipp (scripts/deps.sh installs them). Extra
# arguments after the mode go to the benchmark binary, e.g.
# -register.users=20000. BENCH_KEEP=1 keeps the temp dir (logs, binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

for bin in kamailio kamcmd sipp; do
	command -v "$bin" >/dev/null || { echo "run.sh: $bin missing; run scripts/deps.sh" >&2; exit 1; }
done

tmp=$(mktemp -d)
follow=
cleanup() {
	[[ -n $follow ]] && kill "$follow" 2>/dev/null
	if [[ ${BENCH_KEEP:-} == 1 ]]; then echo "run.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

# The separate-process set-up runs the binary an operator gets.
go build -o "$tmp/sipwake" ./cmd/sipwake
go test -c -o "$tmp/bench.test" ./bench

# bench NAME TIMEOUT [flags...] runs the benchmark binary once, its output
# in bench.log; when it fails, the log's tail and exit 1.
bench() {
	local name=$1 timeout=$2
	shift 2
	if ! (cd bench && "$tmp/bench.test" -test.run '^$' -test.bench "$name" \
		-test.benchtime 1x -test.timeout "$timeout" -test.v "$@") >"$tmp/bench.log" 2>&1; then
		tail -n 60 "$tmp/bench.log" >&2
		echo "run.sh: benchmark failed" >&2
		exit 1
	fi
}

mode=${1:-table}
[[ $# -gt 0 ]] && shift
case $mode in
table)
	bench '^BenchmarkRegisterRate$/^(first|digest|refresh)$/^(direct|edge|sipwake)$' 40m \
		-sipwake.bin "$tmp/sipwake" -register.table "$tmp/table.txt" "$@"
	cat "$tmp/table.txt"
	;;
cluster)
	bench '^BenchmarkClusterRegisterRate$' 30m -register.table "$tmp/table.txt" "$@"
	cat "$tmp/table.txt"
	;;
cluster-calls)
	bench '^BenchmarkClusterWakeCalls$' 40m -calls.table "$tmp/table.txt" "$@"
	cat "$tmp/table.txt"
	;;
profile)
	rate=${1:?usage: run.sh profile RATE}
	shift
	bench '^BenchmarkRegisterRate$/^digest$/^sipwake-inprocess$' 10m -test.cpuprofile "$tmp/cpu.out" \
		-register.rate "$rate" -register.table "$tmp/table.txt" "$@"
	cat "$tmp/table.txt"
	echo
	go tool pprof -top -nodecount=15 "$tmp/bench.test" "$tmp/cpu.out" 2>/dev/null
	echo
	go tool pprof -top -cum -nodecount=25 "$tmp/bench.test" "$tmp/cpu.out" 2>/dev/null
	;;
profile-process)
	rate=${1:?usage: run.sh profile-process RATE}
	shift
	bench "^BenchmarkRegisterRate\$/^${FLOW:-digest}\$/^sipwake\$" 10m -sipwake.bin "$tmp/sipwake" \
		-sipwake.cpuprofile "$tmp/proc.out" -register.rate "$rate" -register.table "$tmp/table.txt" "$@"
	cat "$tmp/table.txt"
	echo
	go tool pprof -top -nodecount=15 "$tmp/sipwake" "$tmp/proc.out" 2>/dev/null
	echo
	go tool pprof -top -cum -nodecount=25 "$tmp/sipwake" "$tmp/proc.out" 2>/dev/null
	;;
kill)
	bench '^BenchmarkKill9UnderLoad$' 10m "$@"
	grep -E '^ *(durability|BenchmarkKill9UnderLoad)|acknowledged' "$tmp/bench.log"
	;;
calls | parked | records)
	name=$(case $mode in calls) echo BenchmarkWakeCalls ;; parked) echo BenchmarkParkedCalls ;; records) echo BenchmarkRecords ;; esac)
	bench "^$name\$" 40m -sipwake.bin "$tmp/sipwake" "-$mode.table" "$tmp/table.txt" "$@"
	cat "$tmp/table.txt"
	;;
cpuprofile)
	name=${1:?usage: run.sh cpuprofile BENCHMARK [flags]}
	shift
	bench "^$name\$" 40m -test.cpuprofile "$tmp/cpu.out" -sipwake.bin "$tmp/sipwake" "$@"
	grep -v '^ *[0-9]*([0-9]*) ' "$tmp/bench.log" | tail -n 40
	echo
	go tool pprof -top -nodecount=20 "$tmp/bench.test" "$tmp/cpu.out" 2>/dev/null
	echo
	go tool pprof -top -cum -nodecount=30 "$tmp/bench.test" "$tmp/cpu.out" 2>/dev/null
	;;
soak)
	dur=${SOAK_DURATION:-30m}
	if [[ ${1:-} =~ ^([0-9]+h)?([0-9]+m)?([0-9]+s)?$ && -n ${1:-} ]]; then
		dur=$1
		shift
	fi
	[[ $dur =~ ^([0-9]+h)?([0-9]+m)?([0-9]+s)?$ ]] || { echo "run.sh: soak duration $dur: want e.g. 30m, 1h30m, 90s" >&2; exit 2; }
	h=${BASH_REMATCH[1]%h} m=${BASH_REMATCH[2]%m} s=${BASH_REMATCH[3]%s}
	secs=$((${h:-0} * 3600 + ${m:-0} * 60 + ${s:-0}))
	# The report is written as the soak goes: follow it here.
	: >"$tmp/table.txt"
	tail -n +1 -f "$tmp/table.txt" &
	follow=$!
	bench '^BenchmarkSoak$' "$((secs + 1200))s" -soak.duration "$dur" -soak.table "$tmp/table.txt" "$@"
	sleep 1
	;;
*)
	echo "usage: run.sh [table|cluster|cluster-calls|profile RATE|profile-process RATE|calls|parked|records|cpuprofile BENCH|soak [DURATION]] [benchmark flags]" >&2
	exit 2
	;;
esac

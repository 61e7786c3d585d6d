#!/usr/bin/env bash
# The direct link across a WAN: ferry ship of the log input over a link
# through latproxy (tests/bench/latproxy), which delays each direction like
# netem, with tcp.max_in_flight 1 (stop-and-wait: one round trip idle per
# segment) against the default (several segments in flight), in one run.
#
#   tests/bench/wan.sh                   # 64 MiB, 1 MiB segments, 20 ms each way
#   DELAY=40ms SIZE=256MiB tests/bench/wan.sh
#
# Environment:
#   SIZE       input size (default 64MiB)
#   SEED       loggen seed (default 1)
#   RUNS       timed runs per row; the best is reported (default 2)
#   DELAY      one-way delay (default 20ms)
#   SEGMENT    ship --max-bytes (default 1MiB)
#   IN_FLIGHT  the pipelined row's tcp.max_in_flight (default 4, the default)
#   BENCH_DIR  work dir (default /tmp/ferry-bench)
#
# A measurement: it exits 0 when the target is missed.
set -euo pipefail

SIZE=${SIZE:-64MiB}
SEED=${SEED:-1}
RUNS=${RUNS:-2}
DELAY=${DELAY:-20ms}
SEGMENT=${SEGMENT:-1MiB}
IN_FLIGHT=${IN_FLIGHT:-4}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}

TARGET_RATIO=1.5 # pipelined MB/s / stop-and-wait MB/s, at least

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
build_bins ferry latproxy
make_input
warm_input

work=$(mktemp -d "$BENCH_DIR/wan-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# start_link ROW: a receiver on a free port and latproxy in front of it;
# sets proxy (host:port).
start_link() {
	local row=$1 port
	pick_port
	mkdir -p "$work/$row"
	"$ferry" receive --listen "127.0.0.1:$port" --insecure --token "$token" --stream bench \
		--state "$work/$row/state" --apply "file:$work/$row/replica" 2>"$work/$row/receive.err" &
	pids+=($!)
	"$latproxy" -target "127.0.0.1:$port" -delay "$DELAY" -addr-file "$work/$row/proxy.addr" 2>"$work/$row/proxy.err" &
	pids+=($!)
	for _ in $(seq 100); do
		[[ -s $work/$row/proxy.addr ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.05
	done
	[[ -s $work/$row/proxy.addr ]] || die "latproxy did not start: $(cat "$work/$row/proxy.err")"
	proxy=$(cat "$work/$row/proxy.addr")
}

run_ship() { # run_ship ROW ROUND IN_FLIGHT
	local row=$1 round=$2 inflight=$3 t0 t1
	start_link "$row-$round"
	cat >"$work/$row-$round/ship.toml" <<EOT
stream = "bench"
store = "tcp://$proxy"
[tcp]
token = "$token"
insecure = true
max_in_flight = $inflight
[ship]
spool = "$work/$row-$round/spool"
EOT
	t0=$(now)
	"$ferry" ship --config "$work/$row-$round/ship.toml" --max-bytes "$SEGMENT" <"$input" >/dev/null 2>"$work/$row-$round/ship.err" ||
		{ cat "$work/$row-$round/ship.err" >&2; die "ferry ship ($row, round $round) failed"; }
	t1=$(now)
	keep "$row" "$(elapsed "$t0" "$t1")" || true
	segments=$(grep -o 'in [0-9]* segments' "$work/$row-$round/ship.err" | awk '{print $2}')
}

for ((round = 1; round <= RUNS; round++)); do
	echo "== round $round/$RUNS: max_in_flight 1, then $IN_FLIGHT"
	run_ship stop "$round" 1
	run_ship pipe "$round" "$IN_FLIGHT"
done

report_header "direct link, $DELAY each way (latproxy)" ", --max-bytes $SEGMENT ($segments segments)" "$(go version | cut -d' ' -f3)" "spool and receiver"
awk -v size="$size_bytes" -v stop="${best[stop]}" -v pipe="${best[pipe]}" -v n="$IN_FLIGHT" -v want="$TARGET_RATIO" \
	"$awk_target"'
BEGIN {
	printf "  max_in_flight 1: %.2fs (%.1f MB/s); max_in_flight %d: %.2fs (%.1f MB/s)\n", stop, size / 1e6 / stop, n, pipe, size / 1e6 / pipe
	target("pipelined / stop-and-wait", stop / pipe, ">=", want)
}'
reproduce "DELAY=$DELAY SEGMENT=$SEGMENT IN_FLIGHT=$IN_FLIGHT"

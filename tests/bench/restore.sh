#!/usr/bin/env bash
# Restore benchmark: ferry restore of a log-like archive from S3 (a real
# versitygw on loopback) into a new file, reading ahead (--prefetch, the
# default 4) vs. one segment at a time (--prefetch 0), twice: straight to
# versitygw on loopback, and through latproxy (tests/bench/latproxy), which
# delays every chunk by DELAY in each direction, as netem would, so the
# store is "across a network". On loopback a fetch has no latency for
# read-ahead to hide; a real S3 endpoint is a network away (a same-region
# round trip is typically 10-20 ms, hence the default DELAY=10ms one way).
#
#   tests/bench/restore.sh                           # 256 MiB input, best of 2
#   SIZE=1GiB RUNS=3 tests/bench/restore.sh
#   SIZE=1GiB DELAY=10ms CONN_BW=50MB tests/bench/restore.sh
#
# Environment:
#   SIZE       input size (default 256MiB; B, KiB, MiB, GiB, kB, MB, GB)
#   SEED       loggen seed (default 1)
#   RUNS       timed runs per row; the best is reported (default 2)
#   MAX_BYTES  ferry ship --max-bytes of the archive (default 16MiB, as in run.sh)
#   PREFETCH   the read-ahead compared with none (default 4, ferry's default)
#   DELAY      one-way delay latproxy adds (default 10ms; Go duration such
#              as 10ms or 1.5ms; 0: loopback rows only)
#   CONN_BW    latproxy's cap per connection and direction in bytes per
#              second (e.g. 50MB; default 0: no cap). A WAN stream is also
#              held back by its congestion window; read-ahead uses several
#              connections at once.
#   BENCH_DIR  work dir: cached input and binaries (default /tmp/ferry-bench);
#              this run's spool, states, replicas and S3 data go in a temp dir under it
#   VERSITYGW  versitygw binary (default: $PATH, then $(go env GOPATH)/bin)
#
# It is a measurement: it exits 0 when a target is missed, non-zero only
# when something could not be measured (missing tool, failed build or run,
# a replica that differs from the input).
set -euo pipefail

SIZE=${SIZE:-256MiB}
SEED=${SEED:-1}
RUNS=${RUNS:-2}
MAX_BYTES=${MAX_BYTES:-16MiB}
PREFETCH=${PREFETCH:-4}
DELAY=${DELAY:-10ms}
CONN_BW=${CONN_BW:-0}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}

TARGET_SPEEDUP=2 # restore MB/s with --prefetch PREFETCH / with --prefetch 0, at least

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
[[ $PREFETCH =~ ^[1-9][0-9]*$ ]] || die "PREFETCH=$PREFETCH: want a whole number of segments, at least 1"
[[ $DELAY =~ ^(0|[0-9]+(\.[0-9]+)?(us|ms|s))$ ]] || die "DELAY=$DELAY: want 0 or a duration such as 10ms"
[[ $CONN_BW =~ ^[0-9]+[[:space:]]*([kKMG]i?B|B)?$ ]] || die "CONN_BW=$CONN_BW: want 0 or bytes per second such as 50MB"
need_versitygw

bins=(ferry)
[[ $DELAY == 0 ]] || bins+=(latproxy)
build_bins "${bins[@]}"
make_input
warm_input

work=$(mktemp -d "$BENCH_DIR/restore-XXXXXX")
proxy_pid=""
cleanup() {
	if [[ -n $proxy_pid ]]; then
		kill "$proxy_pid" 2>/dev/null || true
		wait "$proxy_pid" 2>/dev/null || true
	fi
	s3_stop
	rm -rf "$work"
}
trap cleanup EXIT

# ---- S3 server ---------------------------------------------------------------
s3_start "$work"
store="s3://$bucket/archive"
paths=(loopback)
declare -A env_of
env_of[loopback]="${s3env[*]}"
if [[ $DELAY != 0 ]]; then
	echo "== starting latproxy in front of $endpoint: -delay $DELAY -bw $CONN_BW"
	"$latproxy" -target "${endpoint#http://}" -delay "$DELAY" -bw "$CONN_BW" -addr-file "$work/proxy.addr" 2>"$work/proxy.log" &
	proxy_pid=$!
	for _ in $(seq 100); do
		[[ -s $work/proxy.addr ]] && break
		kill -0 "$proxy_pid" 2>/dev/null || break
		sleep 0.05
	done
	[[ -s $work/proxy.addr ]] || { cat "$work/proxy.log" >&2; die "latproxy did not start (log above)"; }
	proxy_endpoint="http://$(cat "$work/proxy.addr")"
	echo "   $proxy_endpoint"
	paths+=(delayed)
	# env takes the last of two assignments to one variable.
	env_of[delayed]="${s3env[*]} AWS_ENDPOINT_URL_S3=$proxy_endpoint"
fi

# ---- the archive (not timed) ---------------------------------------------------
echo "== shipping the input into $store (--max-bytes $MAX_BYTES; not timed)"
"${s3env[@]}" "$ferry" ship --store "$store" --stream bench --spool "$work/spool" \
	--max-bytes "$MAX_BYTES" <"$input" >/dev/null 2>"$work/ship.err" || {
	cat "$work/ship.err" >&2
	die "ferry ship --store $store failed (stderr above)"
}
rm -rf "$work/spool"
echo "   $(grep -m 1 '^ferry ship:' "$work/ship.err")"

# ---- timed runs ------------------------------------------------------------------
# run_restore PATH ROW ROUND PREFETCH restores the whole archive through
# PATH (loopback or delayed) into a new file and checks it against the input.
run_restore() {
	local path=$1 row=$1-$2 round=$3 pf=$4 t0 t1 err cmd
	err="$work/restore-$row-$round.err"
	read -r -a cmd <<<"${env_of[$path]}"
	rm -rf "$work/state" "$work/replica.log"
	t0=$(now)
	if ! "${cmd[@]}" "$ferry" restore --store "$store" --stream bench --state "$work/state" \
		--apply "file:$work/replica.log" --prefetch "$pf" >/dev/null 2>"$err"; then
		cat "$err" >&2
		die "ferry restore --prefetch $pf from $store ($path) failed (stderr above)"
	fi
	t1=$(now)
	if keep "$row" "$(elapsed "$t0" "$t1")"; then
		cp "$err" "$work/$row-best.err"
	fi
	cmp -s "$input" "$work/replica.log" || die "the replica restored from $store ($path) differs from the input (kept: $work/replica.log)"
	rm -f "$work/replica.log"
}

load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
for ((round = 1; round <= RUNS; round++)); do
	for path in "${paths[@]}"; do
		echo "== round $round/$RUNS, $path: restore --prefetch 0, then --prefetch $PREFETCH"
		run_restore "$path" none "$round" 0
		run_restore "$path" ahead "$round" "$PREFETCH"
	done
done
check="OK: every restored replica is byte-identical to the input ($size_bytes bytes)"
segments=$(sed -n 's/^ferry ship: .* in \([0-9]*\) segments.*/\1/p' "$work/ship.err")

# ---- report ----------------------------------------------------------------------
report_header "restore benchmark" ", archive of $segments segments (--max-bytes $MAX_BYTES)" \
	"versitygw $("$gw" --version 2>/dev/null | awk -F': *' '/^Version/ {print $2; exit}') (posix backend) on $endpoint" "$work"
echo "  the S3 server runs on the same machine and competes with ferry for the CPUs"
if [[ $DELAY != 0 ]]; then
	bw="no per-connection cap"
	[[ $CONN_BW == 0 ]] || bw="each connection capped at $CONN_BW/s per direction"
	echo "  delayed: through latproxy, +$DELAY each way (a round trip +2x$DELAY), $bw"
fi
echo
printf "%-9s %-42s %8s %9s   %s\n" "path" "" "wall s" "MB/s" "all runs, wall s"
for path in "${paths[@]}"; do
	for row in none ahead; do
		case $row in
		none) name="ferry restore --prefetch 0 (one at a time)" ;;
		ahead) name="ferry restore --prefetch $PREFETCH" ;;
		esac
		awk -v p="$path" -v n="$name" -v w="${best[$path-$row]}" -v b="$size_bytes" -v a="${all[$path-$row]}" \
			'BEGIN {printf "%-9s %-42s %8.3f %9.1f   %s\n", p, n, w, b / 1e6 / w, a}'
	done
done
echo "  MB = 10^6 bytes of input restored per second of wall time (process start to exit)"
echo
for path in "${paths[@]}"; do
	awk -v n="${best[$path-none]}" -v a="${best[$path-ahead]}" -v t="$TARGET_SPEEDUP" -v p="$path" "$awk_target"' BEGIN {
		target(sprintf("%-40s", "restore MB/s prefetch / none, " p), n / a, ">=", t)
	}'
done
echo "check   $check"
echo "load    $load_start before the timed runs, $load after (/proc/loadavg; a shared machine)"
echo
echo "ferry's own summaries (best runs, stderr):"
for path in "${paths[@]}"; do
	echo "  $path --prefetch 0: $(grep -m 1 '^ferry restore:' "$work/$path-none-best.err")"
	echo "  $path --prefetch $PREFETCH: $(grep -m 1 '^ferry restore:' "$work/$path-ahead-best.err")"
done
echo
reproduce "MAX_BYTES=$MAX_BYTES PREFETCH=$PREFETCH DELAY=$DELAY CONN_BW=$CONN_BW BENCH_DIR=$BENCH_DIR"

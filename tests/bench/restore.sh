#!/usr/bin/env bash
# Restore benchmark: ferry restore of a log-like archive from S3 (a real
# versitygw on loopback) into a new file, reading ahead (--prefetch, the
# default 4) vs. one segment at a time (--prefetch 0).
#
#   tests/bench/restore.sh               # 256 MiB input, best of 2
#   SIZE=1GiB RUNS=3 tests/bench/restore.sh
#
# Environment:
#   SIZE       input size (default 256MiB; B, KiB, MiB, GiB, kB, MB, GB)
#   SEED       loggen seed (default 1)
#   RUNS       timed runs per row; the best is reported (default 2)
#   MAX_BYTES  ferry ship --max-bytes of the archive (default 16MiB, as in run.sh)
#   PREFETCH   the read-ahead compared with none (default 4, ferry's default)
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
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}

TARGET_SPEEDUP=2 # restore MB/s with --prefetch PREFETCH / with --prefetch 0, at least

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
[[ $PREFETCH =~ ^[1-9][0-9]*$ ]] || die "PREFETCH=$PREFETCH: want a whole number of segments, at least 1"
need_versitygw

build_bins ferry
make_input
warm_input

work=$(mktemp -d "$BENCH_DIR/restore-XXXXXX")
cleanup() {
	s3_stop
	rm -rf "$work"
}
trap cleanup EXIT

# ---- S3 server ---------------------------------------------------------------
s3_start "$work"
store="s3://$bucket/archive"

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
# run_restore ROW ROUND PREFETCH restores the whole archive into a new file
# and checks it against the input.
run_restore() {
	local row=$1 round=$2 pf=$3 t0 t1 err="$work/restore-$1-$2.err"
	rm -rf "$work/state" "$work/replica.log"
	t0=$(now)
	if ! "${s3env[@]}" "$ferry" restore --store "$store" --stream bench --state "$work/state" \
		--apply "file:$work/replica.log" --prefetch "$pf" >/dev/null 2>"$err"; then
		cat "$err" >&2
		die "ferry restore --prefetch $pf from $store failed (stderr above)"
	fi
	t1=$(now)
	if keep "$row" "$(elapsed "$t0" "$t1")"; then
		cp "$err" "$work/$row-best.err"
	fi
	cmp -s "$input" "$work/replica.log" || die "the replica restored from $store differs from the input (kept: $work/replica.log)"
	rm -f "$work/replica.log"
}

for ((round = 1; round <= RUNS; round++)); do
	echo "== round $round/$RUNS: restore --prefetch 0, then --prefetch $PREFETCH"
	run_restore none "$round" 0
	run_restore ahead "$round" "$PREFETCH"
done
check="OK: every restored replica is byte-identical to the input ($size_bytes bytes)"
segments=$(sed -n 's/^ferry ship: .* in \([0-9]*\) segments.*/\1/p' "$work/ship.err")

# ---- report ----------------------------------------------------------------------
report_header "restore benchmark" ", archive of $segments segments (--max-bytes $MAX_BYTES)" \
	"versitygw $("$gw" --version 2>/dev/null | awk -F': *' '/^Version/ {print $2; exit}') (posix backend) on $endpoint" "$work"
echo "  the S3 server runs on the same machine and competes with ferry for the CPUs"
echo
printf "%-48s %8s %9s   %s\n" "" "wall s" "MB/s" "all runs, wall s"
for row in none ahead; do
	case $row in
	none) name="ferry restore --prefetch 0 (one at a time)" ;;
	ahead) name="ferry restore --prefetch $PREFETCH" ;;
	esac
	awk -v n="$name" -v w="${best[$row]}" -v b="$size_bytes" -v a="${all[$row]}" \
		'BEGIN {printf "%-48s %8.3f %9.1f   %s\n", n, w, b / 1e6 / w, a}'
done
echo "  MB = 10^6 bytes of input restored per second of wall time (process start to exit)"
echo
awk -v n="${best[none]}" -v a="${best[ahead]}" -v t="$TARGET_SPEEDUP" "$awk_target"' BEGIN {
	target(sprintf("%-40s", "restore MB/s prefetch / none"), n / a, ">=", t)
}'
echo "check   $check"
echo
echo "ferry's own summaries (best runs, stderr):"
echo "  --prefetch 0:         $(grep -m 1 '^ferry restore:' "$work/none-best.err")"
echo "  --prefetch $PREFETCH:         $(grep -m 1 '^ferry restore:' "$work/ahead-best.err")"
echo
reproduce "MAX_BYTES=$MAX_BYTES PREFETCH=$PREFETCH BENCH_DIR=$BENCH_DIR"

#!/usr/bin/env bash
# S3 benchmark: ferry ship into a local directory store vs. into S3 (a real
# versitygw on loopback), on the same log-like input, and the receiver's
# catch-up rate on the S3 backlog.
#
#   tests/bench/s3.sh                    # 256 MiB input, best of 2
#   SIZE=1GiB RUNS=3 tests/bench/s3.sh
#
# Environment:
#   SIZE       input size (default 256MiB; B, KiB, MiB, GiB, kB, MB, GB)
#   SEED       loggen seed (default 1)
#   RUNS       timed runs per row; the best is reported (default 2)
#   MAX_BYTES  ferry ship --max-bytes (default 16MiB, as in run.sh)
#   PREFETCH   ferry receive --prefetch (default 4, ferry's default)
#   BENCH_DIR  work dir: cached input and binaries (default /tmp/ferry-bench);
#              this run's stores, spools and S3 data go in a temp dir under it
#   VERSITYGW  versitygw binary (default: $PATH, then $(go env GOPATH)/bin)
#
# It is a measurement: it exits 0 when a target is missed, non-zero only
# when something could not be measured (missing tool, failed build or run).
set -euo pipefail

SIZE=${SIZE:-256MiB}
SEED=${SEED:-1}
RUNS=${RUNS:-2}
MAX_BYTES=${MAX_BYTES:-16MiB}
PREFETCH=${PREFETCH:-4}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}

# Targets.
TARGET_S3_VS_DIR=0.7   # ship MB/s into S3 / ship MB/s into the dir store, at least
TARGET_CATCHUP=1.5     # receive --once MB/s from S3 / ship MB/s into S3, at least

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
[[ $PREFETCH =~ ^[0-9]+$ ]] || die "PREFETCH=$PREFETCH: want a whole number of segments (0 for none)"
need_versitygw

build_bins ferry
make_input
warm_input

work=$(mktemp -d "$BENCH_DIR/s3-XXXXXX")
cleanup() {
	s3_stop
	rm -rf "$work"
}
trap cleanup EXIT

# ---- S3 server ---------------------------------------------------------------
s3_start "$work"

# ---- timed runs --------------------------------------------------------------
run_ship() { # run_ship ROW ROUND STORE
	local row=$1 round=$2 store=$3 t0 t1 err="$work/ship-$1-$2.err"
	rm -rf "$work/spool"
	t0=$(now)
	if ! "${s3env[@]}" "$ferry" ship --store "$store" --stream bench --spool "$work/spool" \
		--max-bytes "$MAX_BYTES" <"$input" >/dev/null 2>"$err"; then
		cat "$err" >&2
		die "ferry ship --store $store failed (round $round; stderr above)"
	fi
	t1=$(now)
	if keep "$row" "$(elapsed "$t0" "$t1")"; then
		cp "$err" "$work/ship-$row.err"
		if [[ $row == dir ]]; then
			rm -rf "$work/store-best"
			mv "$store" "$work/store-best"
		fi
	fi
	rm -rf "$store"
	return 0
}

for ((round = 1; round <= RUNS; round++)); do
	echo "== round $round/$RUNS: ship into the dir store, then into S3"
	run_ship dir "$round" "$work/store-$round"
	run_ship s3 "$round" "s3://$bucket/run-$round"
done

# run_receive ROW ROUND STORE replays STORE into a file with receive --once
# and checks the file against the input.
run_receive() {
	local row=$1 round=$2 store=$3 t0 t1 err="$work/receive-$1-$2.err"
	rm -rf "$work/state" "$work/replica.log"
	t0=$(now)
	if ! "${s3env[@]}" "$ferry" receive --store "$store" --stream bench --state "$work/state" \
		--apply "file:$work/replica.log" --prefetch "$PREFETCH" --once >/dev/null 2>"$err"; then
		cat "$err" >&2
		die "ferry receive --once from $store failed (stderr above)"
	fi
	t1=$(now)
	if keep "$row" "$(elapsed "$t0" "$t1")"; then
		cp "$err" "$work/$row-best.err"
	fi
	cmp -s "$input" "$work/replica.log" || die "the replica received from $store differs from the input (kept: $work/replica.log)"
	rm -f "$work/replica.log"
}

# Receive from the S3 prefix of round 1 (all rounds stored the same
# records), and from the best dir store for comparison: the same receiver
# work without S3 in the way.
for ((round = 1; round <= RUNS; round++)); do
	echo "== receive round $round/$RUNS: receive --once from S3, then from the dir store"
	run_receive receive "$round" "s3://$bucket/run-1"
	run_receive receive-dir "$round" "$work/store-best"
done
check="OK: every received replica is byte-identical to the input ($size_bytes bytes)"

segments=$(sed -n 's/^ferry ship: .* in \([0-9]*\) segments.*/\1/p' "$work/ship-s3.err")
[[ -n $segments ]] || die "no segment count in ferry's summary: $(cat "$work/ship-s3.err")"
stored=$("${s3env[@]}" "$ferry" ls --store "s3://$bucket/run-1" --stream bench | awk '/ segments, / {print $1}')
[[ $stored == "$segments" ]] || die "ship says $segments segments, ferry ls counts $stored"

# ---- report --------------------------------------------------------------------
report_header "S3 benchmark" ", --max-bytes $MAX_BYTES, receive --prefetch $PREFETCH" \
	"versitygw $("$gw" --version 2>/dev/null | awk -F': *' '/^Version/ {print $2; exit}') (posix backend) on $endpoint" "$work"
echo "  the S3 server runs on the same machine and competes with ferry for the CPUs"
echo
printf "%-48s %8s %9s   %s\n" "" "wall s" "MB/s" "all runs, wall s"
for row in dir s3 receive receive-dir; do
	case $row in
	dir) name="ferry ship --store DIR" ;;
	s3) name="ferry ship --store s3://$bucket/run-N" ;;
	receive) name="ferry receive --once, S3 backlog" ;;
	receive-dir) name="ferry receive --once, DIR backlog (reference)" ;;
	esac
	awk -v n="$name" -v w="${best[$row]}" -v b="$size_bytes" -v a="${all[$row]}" \
		'BEGIN {printf "%-48s %8.3f %9.1f   %s\n", n, w, b / 1e6 / w, a}'
done
echo "  MB = 10^6 bytes of input per second of wall time (receive: input bytes replayed per second)"
echo
awk -v d="${best[dir]}" -v s="${best[s3]}" -v r="${best[receive]}" -v rd="${best[receive-dir]}" -v ts="$TARGET_S3_VS_DIR" -v tc="$TARGET_CATCHUP" \
	-v seg="$segments" -v b="$size_bytes" -v mb="$MAX_BYTES" "$awk_target"' BEGIN {
	# same input, so the MB/s ratio is the inverse wall-time ratio
	target(sprintf("%-32s", "ship MB/s S3 / dir"), d / s, ">=", ts)
	target(sprintf("%-32s", "receive MB/s / ship MB/s (S3)"), s / r, ">=", tc)
	printf "info    receive MB/s / ship MB/s (dir)   = %.2f   (the same receiver work without S3)\n", d / rd
	printf "info    S3 requests per GiB of input: %.1f PUT (one per segment: %d segments of up to %s for %.3f GiB),\n", seg / (b / 2^30), seg, mb, b / 2^30
	printf "        plus 1 LIST per ship start; receive: %.1f GET per GiB (one per segment) + a LIST per poll\n", seg / (b / 2^30)
}'
echo "check   $check"
echo
echo "ferry's own summaries (best runs, stderr):"
echo "  dir: $(grep -m 1 '^ferry ship:' "$work/ship-dir.err")"
echo "  s3:  $(grep -m 1 '^ferry ship:' "$work/ship-s3.err")"
echo "  receive from S3:  $(grep -m 1 '^ferry receive:' "$work/receive-best.err")"
echo "  receive from dir: $(grep -m 1 '^ferry receive:' "$work/receive-dir-best.err")"
echo
reproduce "MAX_BYTES=$MAX_BYTES PREFETCH=$PREFETCH BENCH_DIR=$BENCH_DIR"

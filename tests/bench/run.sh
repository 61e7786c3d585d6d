#!/usr/bin/env bash
# Throughput benchmark: ferry ship vs. zstd -1 on the same log-like input.
#
#   tests/bench/run.sh                     # 1 GiB input, best of 3
#   SIZE=256MiB QUICK=1 tests/bench/run.sh # quick look, no correctness check
#
# Environment:
#   SIZE       input size (default 1GiB; B, KiB, MiB, GiB, kB, MB, GB)
#   SEED       loggen seed (default 1)
#   RUNS       timed runs per row; the best is reported (default 3)
#   BENCH_DIR  work dir: cached input, binaries, stores (default /tmp/ferry-bench)
#   QUICK=1    skip the receive + cmp correctness check
#
# It is a measurement: it exits 0 when a target is missed, non-zero only
# when something could not be measured (missing tool, failed build or run).
set -euo pipefail

SIZE=${SIZE:-1GiB}
SEED=${SEED:-1}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}
QUICK=${QUICK:-0}

# Targets for ferry ship --fsync batch.
TARGET_SPEED=0.8  # ferry MB/s divided by zstd -1 -T1 MB/s, at least
TARGET_RSS_MIB=100 # peak RSS, at most

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# sum_file_sizes DIR prints the total size of the regular files under DIR.
sum_file_sizes() {
	find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}'
}

bench_init
need zstd "install it, e.g. apt-get install -y zstd"
# Peak RSS comes from GNU time's %M; the bash keyword 'time' cannot report it.
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
	die "/usr/bin/time (GNU time) not found or not GNU: it measures peak RSS (%M). Install the Debian package 'time': apt-get install -y time"
fi

build_bins ferry loggen
make_input
warm_input # zstd and ferry alike read the input from memory
mem_avail=$(($(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) * 1024)) # mawk's %d stops at 2^31
if ((mem_avail < 2 * size_bytes)); then
	echo "   warning: MemAvailable $((mem_avail >> 20)) MiB is under twice the input; runs may read from disk"
fi

runs_dir="$BENCH_DIR/runs"
rm -rf "$runs_dir"
mkdir -p "$runs_dir"

# Rows: the reference and ferry at two fsync settings. Runs are interleaved
# (round 1 of every row, then round 2, ...) so that a change in machine load
# during the benchmark hits every row alike; each row reports its best run.
rows=(zstd batch off)
# best and all (lib.sh) hold the wall times; these the rest.
declare -A best_cpu peak_rss stored summary

# GNU time writes "peak-RSS-KiB user-s sys-s" to $runs_dir/usage.
usage_fmt='%M %U %S'

# record_run ROW T0 T1 folds one run (wall clock from T0 to T1, resources
# from $runs_dir/usage) into the row's figures and returns 0 when it is the
# row's best so far.
record_run() {
	local row=$1 wall rss user sys
	wall=$(elapsed "$2" "$3")
	read -r rss user sys < <(tail -n 1 "$runs_dir/usage")
	if ((rss > ${peak_rss[$row]:-0})); then
		peak_rss[$row]=$rss
	fi
	keep "$row" "$wall" || return 1
	best_cpu[$row]=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}')
}

run_zstd() {
	local t0 t1
	t0=$(now)
	/usr/bin/time -o "$runs_dir/usage" -f "$usage_fmt" zstd -q -1 -T1 -c "$input" >/dev/null ||
		die "zstd -1 -T1 -c $input failed"
	t1=$(now)
	record_run zstd "$t0" "$t1" || true
}

# run_ferry FSYNC ROUND ships into a fresh store and spool. The best run's
# store, spool and stderr are kept as store-FSYNC, spool-FSYNC, ship-FSYNC.err.
run_ferry() {
	local fsync=$1 round=$2 t0 t1
	local store="$runs_dir/store-$fsync-$round" spool="$runs_dir/spool-$fsync-$round" err="$runs_dir/ship-$fsync-$round.err"
	rm -rf "$store" "$spool"
	t0=$(now)
	if ! /usr/bin/time -o "$runs_dir/usage" -f "$usage_fmt" "$ferry" ship --store "$store" --stream bench \
		--spool "$spool" --max-bytes 16MiB --fsync "$fsync" <"$input" >/dev/null 2>"$err"; then
		cat "$err" >&2
		die "ferry ship --fsync $fsync failed (round $round; stderr above, kept in $err)"
	fi
	t1=$(now)
	if record_run "$fsync" "$t0" "$t1"; then
		rm -rf "$runs_dir/store-$fsync" "$runs_dir/spool-$fsync"
		mv "$store" "$runs_dir/store-$fsync"
		mv "$spool" "$runs_dir/spool-$fsync"
		mv "$err" "$runs_dir/ship-$fsync.err"
	else
		rm -rf "$store" "$spool" "$err"
	fi
}

for ((round = 1; round <= RUNS; round++)); do
	echo "== round $round/$RUNS: zstd -1 -T1, ferry ship --fsync batch, ferry ship --fsync off"
	run_zstd
	run_ferry batch "$round"
	run_ferry off "$round"
done

echo "== zstd -1 -T1 compressed size (untimed)"
stored[zstd]=$(zstd -q -1 -T1 -c "$input" | wc -c)
for fsync in batch off; do
	stored[$fsync]=$(sum_file_sizes "$runs_dir/store-$fsync")
	summary[$fsync]=$(grep -m 1 '^ferry ship:' "$runs_dir/ship-$fsync.err" || echo "(no summary line on stderr)")
	shipped=$(sed -n 's/^ferry ship: \([0-9]*\) records.*/\1/p' "$runs_dir/ship-$fsync.err")
	if [[ -n $shipped && $shipped != "$lines" ]]; then
		echo "   warning: ferry (fsync=$fsync) reports $shipped records, the input has $lines lines"
	fi
done

verify="skipped (QUICK=1)"
if [[ $QUICK != 1 ]]; then
	echo "== correctness: ferry receive --once from the fsync=batch store, then cmp"
	out="$runs_dir/received.log"
	rm -rf "$runs_dir/state" "$out"
	if ! "$ferry" receive --store "$runs_dir/store-batch" --stream bench --state "$runs_dir/state" \
		--apply "file:$out" --once 2>"$runs_dir/receive.err"; then
		cat "$runs_dir/receive.err" >&2
		die "ferry receive --once failed (stderr above)"
	fi
	if cmp "$input" "$out"; then
		verify="OK: received file is byte-identical to the input ($size_bytes bytes)"
	else
		verify="FAILED: received file differs from the input (kept: $out)"
	fi
	[[ $verify == OK* ]] && rm -f "$out"
fi

# ---- report -----------------------------------------------------------------
row() { # row NAME WALL CPU BYTES_STORED RSS_KIB WALLS
	awk -v name="$1" -v wall="$2" -v cpu="$3" -v in_b="$size_bytes" -v lines="$lines" -v out_b="$4" -v rss="$5" -v walls="$6" \
		'BEGIN {printf "%-26s %8.3f %7.2f %9.1f %9.2f %7.2fx %9.1f   %s\n",
			name, wall, cpu, in_b / 1e6 / wall, lines / 1e6 / wall, in_b / out_b, rss / 1024, walls}'
}

report_header "throughput benchmark" "" "$(zstd -V | sed 's/^\*\*\* //; s/ \*\*\*$//; s/, by .*//')" "BENCH_DIR $BENCH_DIR"
echo "  page cache not dropped (needs root): the input was read once beforehand, so every run reads it from memory"
if awk -v l="${load%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > n)}'; then
	echo "  warning: load average above the CPU count; other work competes for the CPUs and the figures are noisy"
fi
echo
printf "%-26s %8s %7s %9s %9s %8s %9s   %s\n" "" "wall s" "CPU s" "MB/s" "Mrec/s" "ratio" "RSS MiB" "all runs, wall s"
for r in "${rows[@]}"; do
	name="ferry ship --fsync $r"
	[[ $r == zstd ]] && name="zstd -1 -T1"
	row "$name" "${best[$r]}" "${best_cpu[$r]}" "${stored[$r]}" "${peak_rss[$r]}" "${all[$r]}"
done
echo "  wall and CPU (user + sys) of the best run; MB = 10^6 bytes of input per second of wall time;"
echo "  Mrec/s = million lines per second;"
echo "  ratio = input bytes / bytes written (zstd: compressed stream; ferry: every file in the store dir);"
echo "  RSS = largest peak RSS over the runs (GNU time %M)"
echo
awk -v f="${best[batch]}" -v z="${best[zstd]}" -v fc="${best_cpu[batch]}" -v zc="${best_cpu[zstd]}" \
	-v t="$TARGET_SPEED" -v rss="${peak_rss[batch]}" -v trss="$TARGET_RSS_MIB" "$awk_target"' BEGIN {
	# same input, so the MB/s ratio is the inverse wall-time ratio
	target("ferry MB/s / zstd MB/s (fsync=batch)", z / f, ">=", t)
	if (fc > 0)
		printf "        (by CPU time instead of wall time: %.2f; less sensitive to other load)\n", zc / fc
	target("ferry peak RSS (fsync=batch)", rss / 1024, "<=", trss, "%.1f", "%d", " MiB")
}'
echo "check   $verify"
echo
echo "ferry's own summary (best run, stderr):"
for fsync in batch off; do
	echo "  fsync=$fsync: ${summary[$fsync]}"
done
echo
quick=""
[[ $QUICK == 1 ]] && quick=" QUICK=1"
reproduce "BENCH_DIR=$BENCH_DIR$quick"
echo "  one ferry run: $ferry ship --store DIR --stream bench --spool SPOOL --max-bytes 16MiB --fsync batch < $input"
echo "  reference:     zstd -1 -T1 -c $input > /dev/null"

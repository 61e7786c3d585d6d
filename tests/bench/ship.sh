#!/usr/bin/env bash
# Cost-on-the-primary benchmark (issue 22): ferry ship from stdin and from
# tail:FILE into a dir store (16 MiB segments, fsync "batch") against
# zstd -1 -T1 on the same input, in interleaved rounds (zstd, zstdgo,
# stdin, tail, zstd, ...), reporting medians and the median of the
# per-round ratios. The zstdgo row is the encoder ferry must use
# (klauspost/compress, with the options of ferry's segment Builder) alone
# on the same input, one goroutine, nothing else (tests/bench/zstdgo): the
# floor that library sets, printed with its ratios to zstd.
#
#   tests/bench/ship.sh                       # 1 GiB input, 5 rounds
#   SIZE=256MiB RUNS=3 tests/bench/ship.sh    # quick look
#
# Environment:
#   SIZE       input size (default 1GiB; B, KiB, MiB, GiB, kB, MB, GB)
#   SEED       loggen seed (default 1)
#   RUNS       rounds (default 5); every row runs once per round
#   BENCH_DIR  work dir: cached input, binaries, stores (default /tmp/ferry-bench)
#   OLD_BIN    an older ferry binary: adds its stdin and tail rows, run in
#              the same rounds, for a before/after at the same load
#
# The tail row starts `ferry ship --source tail:INPUT`, waits until the
# process has read the whole input (rchar in /proc/PID/io; the wait forks
# nothing), then sends SIGTERM: ferry seals and ships what is left and
# exits. Its wall time runs from start to exit. Wall, user and sys times
# and peak RSS come from GNU time. It is a measurement: it exits 0 when a
# target is missed, non-zero only when something could not be measured.
set -euo pipefail

SIZE=${SIZE:-1GiB}
SEED=${SEED:-1}
RUNS=${RUNS:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}

# Targets (issue 22), against zstd -1 -T1.
TARGET_WALL=1.0   # ferry wall / zstd wall, at most
TARGET_CPU=1.5    # ferry CPU / zstd CPU, at most
TARGET_RSS_MIB=64 # peak RSS, at most

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
need zstd "install it, e.g. apt-get install -y zstd"
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time -f %M -o /dev/null true 2>/dev/null; then
	die "/usr/bin/time (GNU time) not found or not GNU: it measures peak RSS (%M). Install the Debian package 'time': apt-get install -y time"
fi
[[ -r /proc/self/io ]] || die "/proc/PID/io is not readable here: the tail row needs it"
build_bins ferry loggen zstdgo
make_input
warm_input

runs_dir="$BENCH_DIR/ship-runs"
rm -rf "$runs_dir"
mkdir -p "$runs_dir"
rows=(zstd zstdgo stdin tail)
if [[ -n ${OLD_BIN:-} ]]; then
	[[ -x $OLD_BIN ]] || die "OLD_BIN=$OLD_BIN is not an executable"
	rows+=(old-stdin old-tail)
fi
declare -A walls cpus rsss # space-separated per-round figures

# measure ROW CMD...: runs CMD under GNU time and records its figures.
measure() {
	local row=$1 wall user sys rss
	shift
	/usr/bin/time -o "$runs_dir/usage" -f '%e %U %S %M' "$@" || die "$row run failed (see above)"
	read -r wall user sys rss < <(tail -n 1 "$runs_dir/usage")
	walls[$row]+="$wall "
	cpus[$row]+="$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}') "
	rsss[$row]+="$rss "
}

ship_args() { # ship_args DIR
	echo --store "$1/store" --stream bench --spool "$1/spool" --max-bytes 16MiB --fsync batch
}

# run_stdin BIN ROW: BIN ship < INPUT.
run_stdin() {
	local d="$runs_dir/$2"
	rm -rf "$d" && mkdir -p "$d"
	# shellcheck disable=SC2046
	"$1" ship $(ship_args "$d") <"$input" >/dev/null 2>"$d/err" || {
		cat "$d/err" >&2
		return 1
	}
	check_shipped "$d"
}

# run_tail BIN ROW: BIN ship --source tail:INPUT until it has read the
# input, then SIGTERM.
run_tail() {
	local d="$runs_dir/$2" p r k v nap rc=0
	rm -rf "$d" && mkdir -p "$d"
	# shellcheck disable=SC2046
	"$1" ship $(ship_args "$d") --source "tail:$input" >/dev/null 2>"$d/err" &
	p=$!
	exec {nap}<> <(:)
	while kill -0 "$p" 2>/dev/null; do
		r=0
		while read -r k v; do [[ $k == rchar: ]] && r=$v; done <"/proc/$p/io" 2>/dev/null || true
		((r >= size_bytes)) && break
		read -r -t 0.01 -u "$nap" || true
	done
	read -r -t 0.05 -u "$nap" || true
	exec {nap}>&-
	kill -TERM "$p" 2>/dev/null || true
	wait "$p" || rc=$?
	if ((rc != 0)); then
		cat "$d/err" >&2
		return 1
	fi
	check_shipped "$d"
}

# check_shipped DIR: ferry's summary must count every line of the input.
check_shipped() {
	local n
	n=$(sed -n 's/^ferry ship: \([0-9]*\) records.*/\1/p' "$1/err")
	[[ $n == "$lines" ]] || {
		echo "ferry shipped ${n:-?} records, the input has $lines lines" >&2
		return 1
	}
}

run_zstdgo() { "$zstdgo" <"$input" >/dev/null; }

export -f run_stdin run_tail run_zstdgo check_shipped ship_args
export ferry zstdgo input runs_dir size_bytes lines OLD_BIN
for ((round = 1; round <= RUNS; round++)); do
	echo "== round $round/$RUNS: ${rows[*]}"
	measure zstd zstd -q -1 -T1 -c "$input" >/dev/null
	measure zstdgo bash -c run_zstdgo
	measure stdin bash -c 'run_stdin "$ferry" stdin'
	measure tail bash -c 'run_tail "$ferry" tail'
	if [[ -n ${OLD_BIN:-} ]]; then
		measure old-stdin bash -c 'run_stdin "$OLD_BIN" old-stdin'
		measure old-tail bash -c 'run_tail "$OLD_BIN" old-tail'
	fi
done

# ---- report -----------------------------------------------------------------
median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# ratios A B: the per-round ratios of the figures in A over those in B.
ratios() { paste <(tr ' ' '\n' <<<"$1" | awk 'NF') <(tr ' ' '\n' <<<"$2" | awk 'NF') | awk '{printf "%.3f ", $1 / $2}'; }

runs_note="median of $RUNS interleaved rounds"
report_header "ship cost benchmark" ", 16 MiB segments, fsync batch" "$(zstd -V | sed 's/^\*\*\* //; s/ \*\*\*$//; s/, by .*//')" "BENCH_DIR $BENCH_DIR"
echo "  medians of $RUNS interleaved rounds; ratios are the median of the per-round ratios to zstd"
echo
printf "%-28s %8s %8s %9s %10s %10s   %s\n" "" "wall s" "CPU s" "RSS MiB" "wall/zstd" "CPU/zstd" "all walls | all CPUs"
for r in "${rows[@]}"; do
	name="ferry ship < input"
	[[ $r == zstd ]] && name="zstd -1 -T1"
	[[ $r == zstdgo ]] && name="zstdgo (ferry's encoder)"
	[[ $r == tail ]] && name="ferry ship --source tail:"
	[[ $r == old-stdin ]] && name="OLD_BIN ship < input"
	[[ $r == old-tail ]] && name="OLD_BIN ship --source tail:"
	w=$(median <<<"${walls[$r]}")
	c=$(median <<<"${cpus[$r]}")
	m=$(median <<<"${rsss[$r]}")
	wr=$(ratios "${walls[$r]}" "${walls[zstd]}" | median)
	cr=$(ratios "${cpus[$r]}" "${cpus[zstd]}" | median)
	printf "%-28s %8.2f %8.2f %9.1f %10.2f %10.2f   %s\n" "$name" "$w" "$c" "$(awk -v k="$m" 'BEGIN {print k / 1024}')" "$wr" "$cr" "${walls[$r]}| ${cpus[$r]}"
	if [[ $r == stdin || $r == tail ]]; then
		awk -v w="$wr" -v c="$cr" -v rss="$m" -v tw="$TARGET_WALL" -v tc="$TARGET_CPU" -v trss="$TARGET_RSS_MIB" -v n="$r" "$awk_target"' BEGIN {
			target(n ": wall / zstd wall", w, "<=", tw)
			target(n ": CPU / zstd CPU", c, "<=", tc)
			target(n ": peak RSS", rss / 1024, "<=", trss, "%.1f", "%d", " MiB")
		}' | sed 's/^/    /'
	fi
done
echo "  CPU = user + sys; RSS = peak resident set (GNU time %M), median over the rounds"
echo "  zstdgo: klauspost/compress alone with ferry's encoder options, one goroutine: the floor ferry's CPU/zstd cannot go under"
echo
reproduce "BENCH_DIR=$BENCH_DIR"
echo "  stdin row: $ferry ship --store DIR/store --stream bench --spool DIR/spool --max-bytes 16MiB --fsync batch < $input"
echo "  tail row:  the same with --source tail:$input, SIGTERM once it has read the input"
[[ -n ${OLD_BIN:-} ]] && echo "  old rows:  the same with OLD_BIN=$OLD_BIN"
echo "  reference: zstd -q -1 -T1 -c $input > /dev/null"
echo "  floor:     $zstdgo < $input > /dev/null"

#!/usr/bin/env bash
# Many-streams benchmark (issue 23): one ferry ship following STREAMS files
# (a [[streams]] glob table: one stream per file, docs/STREAMS.md), each
# written at RATE lines/s, against one ferry ship following one file written
# at STREAMS x RATE lines/s: the same total rate in one stream.
#
# Each row writes its files with streamlines for DURATION while the shipper
# runs, then reads the shipper's CPU time (utime+stime over the run, from
# /proc), its peak RSS (VmHWM), the most fds it held (sampled every second),
# and, with S3=1, its S3 requests (ferry_s3_requests_total) per minute; then
# stops it (SIGTERM: it drains) and checks every line reached the store
# (ferry ls). It prints each figure and the ratios of the many-streams row
# to the one-stream row.
#
#   tests/bench/streams.sh                          # 100 x 100 lines/s for 60 s
#   STREAMS=20 DURATION=15 tests/bench/streams.sh   # quick look
#   S3=1 tests/bench/streams.sh                     # into versitygw instead of a dir store
#   SCALE=1 DURATION=20 tests/bench/streams.sh      # scaling: 10/100/1,000 streams at one total rate,
#                                                   # then STREAMS streams at each of RATES
#
# With SCALE=1 it prints, per row, CPU (s per million lines), peak RSS,
# most fds, segments stored (a dir store's PUTs: one per segment) and,
# with S3=1, S3 requests per minute; and the ratios of each row's CPU per
# line to the first row's (linear in lines: 1.0).
#
# Environment:
#   STREAMS    files (streams) of the many-streams row (default 100)
#   RATE       lines per second to each file (default 100)
#   DURATION   seconds the files are written (default 60)
#   MAX_AGE    ship.max_age: how long a record may wait for its segment (default 2s, ferry's)
#   S3         1 ships into a versitygw bucket (needs versitygw, curl) and counts requests (default 0: a dir store)
#   SCALE      1: the scaling rows instead of many vs one (default 0)
#   TOTAL      SCALE=1: the total lines/s of the stream-count rows (default 10000)
#   COUNTS     SCALE=1: the stream counts at TOTAL (default "10 100 1000")
#   RATES      SCALE=1: lines/s per stream of the rate rows, at STREAMS streams (default "10 100 200")
#   FERRY      a ferry binary to run instead of building ./cmd/ferry (old/new comparisons)
#   PROFILE    1 writes each row's CPU profile to $BENCH_DIR/streams-ROW.pprof
#   BENCH_DIR  work dir (default /tmp/ferry-bench); the run's files go in a temp
#              dir streams-XXXXXX under it, removed at exit
#   KEEP       1 keeps that dir (logs, configs, stores)
#   VERSITYGW  versitygw binary (default: $PATH, then $(go env GOPATH)/bin)
#
# It is a measurement: it exits 0 when a target is missed, non-zero only
# when something could not be measured.
set -euo pipefail

STREAMS=${STREAMS:-100}
RATE=${RATE:-100}
DURATION=${DURATION:-60}
MAX_AGE=${MAX_AGE:-2s}
S3=${S3:-0}
SCALE=${SCALE:-0}
TOTAL=${TOTAL:-10000}
COUNTS=${COUNTS:-10 100 1000}
RATES=${RATES:-10 100 200}
FERRY=${FERRY:-}
PROFILE=${PROFILE:-}
KEEP=${KEEP:-}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}
SIZE=1 RUNS=1 SEED=1 # lib.sh checks these; this script has no input file

# Targets (issue 23).
TARGET_CPU_RATIO=1.3 # many-streams CPU / one-stream CPU, at most
TARGET_RSS_MIB=200   # many-streams peak RSS, at most

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
for v in STREAMS RATE DURATION; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive whole number"
done
[[ $S3 == 0 || $S3 == 1 ]] || die "S3=$S3: want 0 or 1"
[[ $SCALE == 0 || $SCALE == 1 ]] || die "SCALE=$SCALE: want 0 or 1"
for v in $COUNTS $RATES $TOTAL; do
	[[ $v =~ ^[1-9][0-9]*$ ]] || die "COUNTS, RATES, TOTAL: $v is not a positive whole number"
done
need curl "install curl (it reads the shipper's metrics)"
((S3 == 0)) || need_versitygw
if [[ -n $FERRY ]]; then
	[[ -x $FERRY ]] || die "FERRY=$FERRY: not an executable"
	build_bins streamlines
	ferry=$FERRY
else
	build_bins ferry streamlines
fi
clk_tck=$(getconf CLK_TCK)

work=$(mktemp -d "$BENCH_DIR/streams-XXXXXX")
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	((S3 == 0)) || s3_stop
	if [[ -n $KEEP ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
s3env=(env)
if ((S3 == 1)); then
	s3_start "$work"
fi

# s3_requests ADDR prints the shipper's S3 requests so far, every kind.
s3_requests() { curl -sf "http://$1/metrics" | awk '/^ferry_s3_requests_total/ {n += $NF} END {printf "%.0f", n}'; }

# cpu_ticks PID prints the process's utime+stime in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_row ROW FILES RATE: the shipper follows FILES files written at RATE
# lines/s each; sets cpu[ROW] (s), rss[ROW] (MiB), fds[ROW], reqs[ROW]
# (S3 requests per minute), lines[ROW] written and stored[ROW].
declare -A cpu cpm rss fds reqs lines stored segs
run_row() {
	local row=$1 files=$2 rate=$3 dir="$work/$1" store maddr gen ship t0 t1 c0 c1 q0 nfd maxfd=0 i
	mkdir -p "$dir/logs"
	store="$dir/store"
	((S3 == 0)) || store="s3://$bucket/$row"
	pick_port
	maddr="127.0.0.1:$port"
	for ((i = 0; i < files; i++)); do : >"$dir/logs/$(printf 's%03d.log' "$i")"; done
	{
		echo "store = \"$store\""
		echo "metrics_addr = \"$maddr\""
		echo "[ship]"
		echo "spool = \"$dir/spool\""
		echo "max_age = \"$MAX_AGE\""
		if ((S3 == 1)); then echo "[s3]"; echo "region = \"us-east-1\""; fi
		echo "[[streams]]"
		if ((files == 1)); then
			echo "name = \"one\""
			echo "source = \"tail:$dir/logs/s000.log\""
		else
			echo "name = \"s-{base}\""
			echo "source = \"tail:$dir/logs/*.log\""
		fi
	} >"$dir/ship.toml"
	echo "== $row: $files stream(s) x $rate lines/s for ${DURATION}s"
	local prof=()
	[[ -z $PROFILE ]] || prof=(FERRY_CPUPROFILE="$BENCH_DIR/streams-$row.pprof")
	"${s3env[@]}" "${prof[@]}" "$ferry" ship --config "$dir/ship.toml" 2>"$dir/ship.err" &
	ship=$!
	pids+=("$ship")
	for _ in $(seq 100); do
		curl -sf "http://$maddr/metrics" >/dev/null && break
		kill -0 "$ship" 2>/dev/null || { cat "$dir/ship.err" >&2; die "$row: ferry ship exited"; }
		sleep 0.1
	done
	# Every stream started (its series in /metrics) before the clock starts.
	for _ in $(seq 600); do
		(($(curl -sf "http://$maddr/metrics" | grep -c '^ferry_ship_last_seq{') >= files)) && break
		sleep 0.1
	done
	c0=$(cpu_ticks "$ship")
	q0=$(s3_requests "$maddr")
	t0=$(now)
	"$streamlines" -dir "$dir/logs" -files "$files" -rate "$rate" >"$dir/lines.out" &
	gen=$!
	pids+=("$gen")
	local end=$((SECONDS + DURATION))
	while ((SECONDS < end)); do
		sleep 1
		nfd=$(find "/proc/$ship/fd" -mindepth 1 -maxdepth 1 | wc -l)
		((nfd > maxfd)) && maxfd=$nfd
	done
	kill -TERM "$gen"
	wait "$gen" || true
	sleep 3 # the last lines read and sealed (max_age)
	c1=$(cpu_ticks "$ship")
	t1=$(now)
	cpu[$row]=$(awk -v a="$c0" -v b="$c1" -v t="$clk_tck" 'BEGIN {printf "%.2f", (b - a) / t}')
	rss[$row]=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$ship/status")
	fds[$row]=$maxfd
	reqs[$row]=$(awk -v a="$q0" -v b="$(s3_requests "$maddr")" -v secs="$(elapsed "$t0" "$t1")" 'BEGIN {printf "%.0f", (b - a) * 60 / secs}')
	((S3 == 0)) || curl -sf "http://$maddr/metrics" | awk '/^ferry_s3_requests_total/ {print "   since start: " $0}' >"$dir/s3-kinds.txt"
	lines[$row]=$(cat "$dir/lines.out")
	kill -TERM "$ship"
	wait "$ship" || { cat "$dir/ship.err" >&2; die "$row: ferry ship did not stop cleanly"; }
	# Every stream's records in the store (ferry ls: "N segments, M records, ...").
	local s n
	stored[$row]=0
	segs[$row]=0
	for s in $(cd "$dir/spool" && ls); do
		n=$("${s3env[@]}" "$ferry" ls --store "$store" --stream "$s" 2>/dev/null | awk '/ records, / {print $1, $3; exit}' || true)
		n=${n:-0 0}
		segs[$row]=$((segs[$row] + ${n% *}))
		stored[$row]=$((stored[$row] + ${n#* }))
	done
	cpm[$row]=$(awk -v c="${cpu[$row]}" -v n="${lines[$row]}" 'BEGIN {printf "%.1f", (n > 0 ? c * 1e6 / n : 0)}')
	echo "   cpu ${cpu[$row]}s (${cpm[$row]}s per million lines), peak rss ${rss[$row]} MiB, max fds ${fds[$row]}, s3 requests/min ${reqs[$row]}, lines ${lines[$row]} written, ${stored[$row]} stored in ${segs[$row]} segments"
	((S3 == 0)) || cat "$dir/s3-kinds.txt"
}

if ((SCALE == 1)); then
	rows=()
	for n in $COUNTS; do
		((TOTAL % n == 0)) || die "TOTAL=$TOTAL is not a multiple of $n streams"
		run_row "n$n" "$n" $((TOTAL / n))
		rows+=("n$n")
	done
	for r in $RATES; do
		run_row "r$r" "$STREAMS" "$r"
		rows+=("r$r")
	done
	echo
	echo "== streams scaling: ${DURATION}s per row, max_age $MAX_AGE, $( ((S3 == 1)) && echo "versitygw" || echo "dir store"), load $(cut -d' ' -f1-3 /proc/loadavg)"
	printf '%-7s %8s %8s %12s %10s %6s %9s %12s %12s %12s %9s\n' row streams lines/s cpu_s/Mline rss_MiB fds segments s3_req/min written stored cpu/line
	for row in "${rows[@]}"; do
		case $row in
		n*) ns=${row#n} rate=$((TOTAL / ns)) ;;
		r*) ns=$STREAMS rate=${row#r} ;;
		esac
		printf '%-7s %8s %8s %12s %10s %6s %9s %12s %12s %12s %9s\n' "$row" "$ns" $((ns * rate)) "${cpm[$row]}" "${rss[$row]}" "${fds[$row]}" "${segs[$row]}" "${reqs[$row]}" "${lines[$row]}" "${stored[$row]}" \
			"$(awk -v a="${cpm[$row]}" -v b="${cpm[${rows[0]}]}" 'BEGIN {printf "%.2fx", (b > 0 ? a / b : 0)}')"
		[[ ${stored[$row]} == "${lines[$row]}" ]] || echo "WARNING: $row stored ${stored[$row]} of ${lines[$row]} lines"
	done
	echo "reproduce: cd $root && SCALE=1 STREAMS=$STREAMS TOTAL=$TOTAL COUNTS='$COUNTS' RATES='$RATES' DURATION=$DURATION MAX_AGE=$MAX_AGE S3=$S3 tests/bench/streams.sh"
	exit 0
fi
run_row many "$STREAMS" "$RATE"
run_row one 1 $((STREAMS * RATE))

echo
echo "== streams benchmark: $STREAMS x $RATE lines/s vs 1 x $((STREAMS * RATE)) lines/s, ${DURATION}s, max_age $MAX_AGE, $( ((S3 == 1)) && echo "versitygw" || echo "dir store")"
printf '%-6s %8s %12s %10s %8s %9s %12s %12s %12s\n' row cpu_s cpu_s/Mline rss_MiB fds segments s3_req/min written stored
for row in many one; do
	printf '%-6s %8s %12s %10s %8s %9s %12s %12s %12s\n' "$row" "${cpu[$row]}" "${cpm[$row]}" "${rss[$row]}" "${fds[$row]}" "${segs[$row]}" "${reqs[$row]}" "${lines[$row]}" "${stored[$row]}"
done
# CPU is compared per line written: the rows' writers may not keep the
# same pace on a loaded machine.
awk -v cm="${cpm[many]}" -v co="${cpm[one]}" -v rm="${rss[many]}" -v ro="${rss[one]}" -v fm="${fds[many]}" -v fo="${fds[one]}" \
	-v qm="${reqs[many]}" -v qo="${reqs[one]}" -v tc="$TARGET_CPU_RATIO" -v tr="$TARGET_RSS_MIB" 'BEGIN {
	r = co > 0 ? cm / co : 0
	printf "ratios many/one: cpu %.2fx, rss %.2fx, fds %.2fx", r, (ro > 0 ? rm / ro : 0), (fo > 0 ? fm / fo : 0)
	if (qo > 0) printf ", s3 requests %.2fx", qm / qo
	printf "\n"
	printf "target cpu per line <= %.1fx the one stream: %s (%.2fx)\n", tc, (r <= tc ? "OK" : "MISSED"), r
	printf "target rss <= %d MiB: %s (%.1f MiB)\n", tr, (rm <= tr ? "OK" : "MISSED"), rm
}'
for row in many one; do
	[[ ${stored[$row]} == "${lines[$row]}" ]] || echo "WARNING: $row stored ${stored[$row]} of ${lines[$row]} lines"
done
echo "reproduce: cd $root && STREAMS=$STREAMS RATE=$RATE DURATION=$DURATION MAX_AGE=$MAX_AGE S3=$S3 tests/bench/streams.sh (load $(cut -d' ' -f1-3 /proc/loadavg))"

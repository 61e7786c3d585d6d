#!/usr/bin/env bash
# Many-streams benchmark (issue 23): one ferry ship following STREAMS files
# (a [[streams]] glob table: one stream per file, docs/STREAMS.md), each
# written at RATE lines/s, and one ferry receive applying every stream
# from the store (a many-stream receiver, --stream 's-*'), against one
# ferry ship following one file written at STREAMS x RATE lines/s and one
# ferry receive of that one stream: the same total rate in one stream.
#
# Each row writes its files with streamlines for DURATION while both run,
# waits until every line written is applied (at most 120 s more), then
# reads each process's CPU time (utime+stime from just before the writing
# starts to that moment, from /proc), peak RSS (VmHWM), the most fds it
# held (sampled every second) and, with S3=1, its S3 requests
# (ferry_s3_requests_total) per minute over the same span. applylat
# follows the applied files (inotify, and a read every 100 ms) and times
# every line: from the write time streamlines puts in the line to the
# moment applylat read the line from the applied file (p50, p99, max); it
# checks each file's line numbers run 1, 2, 3, ...: every line applied
# once, in order. Then it stops them (SIGTERM: the shipper drains) and
# checks every line reached the store (ferry ls). It prints each figure
# per process and summed, and the ratios of the many-streams row to the
# one-stream row against the issue's targets.
#
#   tests/bench/streams.sh                          # 100 x 100 lines/s for 60 s
#   STREAMS=20 DURATION=15 tests/bench/streams.sh   # quick look
#   S3=1 tests/bench/streams.sh                     # into versitygw instead of a dir store
#   RECEIVE=0 tests/bench/streams.sh                # the shipper alone (as before session 12)
#   SCALE=1 DURATION=20 tests/bench/streams.sh      # scaling: 10/100/1,000 streams at one total rate,
#                                                   # then STREAMS streams at each of RATES
#
# With SCALE=1 it prints, per row, CPU (s per million lines), peak RSS,
# most fds, segments stored (a dir store's PUTs: one per segment) and,
# with S3=1, S3 requests per minute; and the ratios of each row's CPU per
# line to the first row's (linear in lines: 1.0). With RECEIVE=1 these
# are the shipper's and the receiver's summed.
#
# Environment:
#   STREAMS    files (streams) of the many-streams row (default 100)
#   RATE       lines per second to each file (default 100)
#   DURATION   seconds the files are written (default 60)
#   MAX_AGE    ship.max_age: how long a record may wait for its segment (default 2s, ferry's)
#   S3         1 ships into a versitygw bucket (needs versitygw, curl) and counts requests (default 0: a dir store)
#   RECEIVE    1 runs a ferry receive beside each shipper (default); 0 the shipper alone
#   SCALE      1: the scaling rows instead of many vs one (default 0)
#   TOTAL      SCALE=1: the total lines/s of the stream-count rows (default 10000)
#   COUNTS     SCALE=1: the stream counts at TOTAL (default "10 100 1000")
#   RATES      SCALE=1: lines/s per stream of the rate rows, at STREAMS streams (default "10 100 200"; "" for none)
#   BUNDLE_INTERVAL  ship.bundle_interval of the many-streams rows (e.g. 2s: bundles on; default
#              "": off); the one-stream row seals its own segments either way. This ferry's ls
#              does not count parts in bundles: the "stored" figure of a bundled row is short
#   FERRY      a ferry binary to run instead of building ./cmd/ferry (old/new comparisons)
#   PROFILE    1 writes each row's CPU profiles to $BENCH_DIR/streams-ROW.pprof (and -recv.pprof)
#   BENCH_DIR  work dir (default /tmp/ferry-bench); the run's files go in a temp
#              dir streams-XXXXXX under it, removed at exit
#   KEEP       1 keeps that dir (logs, configs, stores, applied files)
#   VERSITYGW  versitygw binary (default: $PATH, then $(go env GOPATH)/bin)
#
# The receivers run with ferry's defaults (poll_min 200ms, poll_max 5s):
# the latency is max_age, the tail's read, the upload, the receiver's
# next listing and the apply.
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
RECEIVE=${RECEIVE:-1}
TOTAL=${TOTAL:-10000}
COUNTS=${COUNTS-10 100 1000}
RATES=${RATES-10 100 200}
FERRY=${FERRY:-}
BUNDLE_INTERVAL=${BUNDLE_INTERVAL:-}
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
[[ $RECEIVE == 0 || $RECEIVE == 1 ]] || die "RECEIVE=$RECEIVE: want 0 or 1"
for v in $COUNTS $RATES $TOTAL; do
	[[ $v =~ ^[1-9][0-9]*$ ]] || die "COUNTS, RATES, TOTAL: $v is not a positive whole number"
done
need curl "install curl (it reads the shipper's metrics)"
((S3 == 0)) || need_versitygw
if [[ -n $FERRY ]]; then
	[[ -x $FERRY ]] || die "FERRY=$FERRY: not an executable"
	build_bins streamlines applylat
	ferry=$FERRY
else
	build_bins ferry streamlines applylat
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
# No silent exit under set -e: name the line that failed.
trap 'echo "$bench_name: line $LINENO: a command failed (status $?)" >&2' ERR
s3env=(env)
if ((S3 == 1)); then
	s3_start "$work"
fi

# s3_requests ADDR prints the process's S3 requests so far, every kind.
s3_requests() { curl -sf "http://$1/metrics" | awk '/^ferry_s3_requests_total/ {n += $NF} END {printf "%.0f", n}'; }

# s3_kinds ADDR prints the process's S3 requests so far by kind, "kind=n ...".
s3_kinds() {
	curl -sf "http://$1/metrics" | awk '/^ferry_s3_requests_total/ {
		k = $0; sub(/.*kind="/, "", k); sub(/".*/, "", k); n[k] += $NF
	} END {for (k in n) printf "%s=%.0f ", k, n[k]}'
}

# cpu_ticks PID prints the process's utime+stime in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# nfds PID prints how many fds the process holds.
nfds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# bound_metrics PID LOG NAME prints the address the process's metrics
# server bound (metrics_addr 127.0.0.1:0: the kernel picks a free port, so
# no other process can take it between a pick and the bind, which lost 3
# of ~20 runs under load), from its "serving metrics" log line.
bound_metrics() {
	local a
	for _ in $(seq 300); do
		a=$(grep -o 'msg="serving metrics" addr=[0-9.:]*' "$2" 2>/dev/null | head -1 | sed 's/.*addr=//')
		[[ -n $a ]] && { echo "$a"; return 0; }
		kill -0 "$1" 2>/dev/null || { cat "$2" >&2; die "$3 exited"; }
		sleep 0.1
	done
	cat "$2" >&2
	die "$3 logged no metrics address"
}

# wait_metrics ADDR PID LOG NAME waits for ADDR to serve /metrics.
wait_metrics() {
	for _ in $(seq 100); do
		curl -sf "http://$1/metrics" >/dev/null && return 0
		kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "$4 exited"; }
		sleep 0.1
	done
	cat "$3" >&2
	die "$4 serves no /metrics at $1"
}

# run_row ROW FILES RATE: the shipper follows FILES files written at RATE
# lines/s each and (RECEIVE=1) one ferry receive applies every stream to
# a file; sets, per process P (ship, recv), cpu[ROW.P] (s), rss[ROW.P]
# (MiB), fds[ROW.P], reqs[ROW.P] (S3 requests per minute); lines[ROW]
# written, stored[ROW], segs[ROW], applied[ROW], bad[ROW], p50[ROW],
# p99[ROW] (ms, append -> applied).
declare -A cpu cpm rss fds reqs kinds lines stored segs applied bad p50 p99 pmax win nstreams
run_row() {
	local row=$1 files=$2 rate=$3 dir="$work/$1" store maddr raddr gen ship recv lat t0 t1 nfd i p
	local -A c0 q0 maxfd=([ship]=0 [recv]=0)
	mkdir -p "$dir/logs" "$dir/applied"
	store="$dir/store"
	((S3 == 0)) || store="s3://$bucket/$row"
	maddr="127.0.0.1:0" # the bound ports are read from the logs
	raddr="127.0.0.1:0"
	for ((i = 0; i < files; i++)); do : >"$dir/logs/$(printf 's%03d.log' "$i")"; done
	{
		echo "store = \"$store\""
		echo "metrics_addr = \"$maddr\""
		echo "[ship]"
		echo "spool = \"$dir/spool\""
		echo "max_age = \"$MAX_AGE\""
		if ((files > 1)) && [[ -n $BUNDLE_INTERVAL ]]; then echo "bundle_interval = \"$BUNDLE_INTERVAL\""; fi
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
	{
		echo "store = \"$store\""
		echo "metrics_addr = \"$raddr\""
		if ((S3 == 1)); then echo "[s3]"; echo "region = \"us-east-1\""; fi
	} >"$dir/recv.toml"
	echo "== $row: $files stream(s) x $rate lines/s for ${DURATION}s$( ((RECEIVE == 1)) && echo ", one ferry receive")"
	local prof=()
	[[ -z $PROFILE ]] || prof=(FERRY_CPUPROFILE="$BENCH_DIR/streams-$row.pprof")
	"${s3env[@]}" "${prof[@]}" "$ferry" ship --config "$dir/ship.toml" 2>"$dir/ship.err" &
	ship=$!
	pids+=("$ship")
	maddr=$(bound_metrics "$ship" "$dir/ship.err" "$row: ferry ship")
	wait_metrics "$maddr" "$ship" "$dir/ship.err" "$row: ferry ship"
	# Every stream started (its series in /metrics) before the clock starts.
	for _ in $(seq 600); do
		(($(curl -sf "http://$maddr/metrics" | grep -c '^ferry_ship_last_seq{') >= files)) && break
		sleep 0.1
	done
	if ((RECEIVE == 1)); then
		# The receiver starts with the shipper's streams not in the store
		# yet: it opens each when the shared listing first shows it.
		local pattern='s-*'
		((files > 1)) || pattern=one
		[[ -z $PROFILE ]] || prof=(FERRY_CPUPROFILE="$BENCH_DIR/streams-$row-recv.pprof")
		"${s3env[@]}" "${prof[@]}" "$ferry" receive --config "$dir/recv.toml" --stream "$pattern" --state "$dir/rstate" \
			--apply "file:$dir/applied/{stream}.log" 2>"$dir/recv.err" &
		recv=$!
		pids+=("$recv")
		raddr=$(bound_metrics "$recv" "$dir/recv.err" "$row: ferry receive")
		wait_metrics "$raddr" "$recv" "$dir/recv.err" "$row: ferry receive"
		"$applylat" -dir "$dir/applied" -count "$dir/applied.count" >"$dir/lat.out" 2>"$dir/lat.err" &
		lat=$!
		pids+=("$lat")
	fi
	local procs=(ship)
	((RECEIVE == 0)) || procs+=(recv)
	declare -A pid=([ship]=$ship [recv]=${recv:-} [lat]=${lat:-})
	for p in "${procs[@]}"; do
		c0[$p]=$(cpu_ticks "${pid[$p]}")
		q0[$p]=$(s3_requests "$( [[ $p == ship ]] && echo "$maddr" || echo "$raddr")")
	done
	t0=$(now)
	"$streamlines" -dir "$dir/logs" -files "$files" -rate "$rate" >"$dir/lines.out" &
	gen=$!
	pids+=("$gen")
	local end=$((SECONDS + DURATION))
	while ((SECONDS < end)); do
		sleep 1
		for p in "${procs[@]}"; do
			kill -0 "${pid[$p]}" 2>/dev/null || { tail -20 "$dir/$p.err" >&2; die "$row: ferry $p exited while the lines were written (its log above)"; }
			nfd=$(nfds "${pid[$p]}")
			((nfd > maxfd[$p])) && maxfd[$p]=$nfd
		done
	done
	kill -TERM "$gen"
	wait "$gen" || true
	lines[$row]=$(cat "$dir/lines.out")
	if ((RECEIVE == 1)); then
		# Until every line written is applied (or 120 s more): the CPU and
		# requests below count the whole trip.
		for _ in $(seq 1200); do
			(($(cat "$dir/applied.count" 2>/dev/null || echo 0) >= lines[$row])) && break
			sleep 0.1
		done
	else
		sleep 3 # the last lines read and sealed (max_age)
	fi
	t1=$(now)
	for p in "${procs[@]}"; do
		local a=$maddr
		[[ $p == ship ]] || a=$raddr
		cpu[$row.$p]=$(awk -v a="${c0[$p]}" -v b="$(cpu_ticks "${pid[$p]}")" -v t="$clk_tck" 'BEGIN {printf "%.2f", (b - a) / t}')
		rss[$row.$p]=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/${pid[$p]}/status")
		fds[$row.$p]=${maxfd[$p]}
		reqs[$row.$p]=$(awk -v a="${q0[$p]}" -v b="$(s3_requests "$a")" -v secs="$(elapsed "$t0" "$t1")" 'BEGIN {printf "%.0f", (b - a) * 60 / secs}')
		((S3 == 0)) || kinds[$row.$p]=$(s3_kinds "$a")
	done
	kill -TERM "$ship"
	wait "$ship" || { cat "$dir/ship.err" >&2; die "$row: ferry ship did not stop cleanly"; }
	if ((RECEIVE == 1)); then
		kill -TERM "$lat"
		wait "$lat" || { cat "$dir/lat.err" >&2; die "$row: applylat failed"; }
		kill -TERM "$recv"
		wait "$recv" || { cat "$dir/recv.err" >&2; die "$row: ferry receive did not stop cleanly"; }
		read -r _ applied[$row] _ _ _ p50[$row] _ p99[$row] _ pmax[$row] _ bad[$row] <"$dir/lat.out"
		[[ ${bad[$row]} == 0 ]] || head -5 "$dir/lat.err" >&2
	fi
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
	cpu[$row]=${cpu[$row.ship]}
	rss[$row]=${rss[$row.ship]}
	fds[$row]=${fds[$row.ship]}
	reqs[$row]=${reqs[$row.ship]}
	if ((RECEIVE == 1)); then
		cpu[$row]=$(awk -v a="${cpu[$row.ship]}" -v b="${cpu[$row.recv]}" 'BEGIN {printf "%.2f", a + b}')
		rss[$row]=$(awk -v a="${rss[$row.ship]}" -v b="${rss[$row.recv]}" 'BEGIN {printf "%.1f", a + b}')
		fds[$row]=$((fds[$row.ship] + fds[$row.recv]))
		reqs[$row]=$((reqs[$row.ship] + reqs[$row.recv]))
	fi
	cpm[$row]=$(awk -v c="${cpu[$row]}" -v n="${lines[$row]}" 'BEGIN {printf "%.1f", (n > 0 ? c * 1e6 / n : 0)}')
	for p in "${procs[@]}"; do
		cpm[$row.$p]=$(awk -v c="${cpu[$row.$p]}" -v n="${lines[$row]}" 'BEGIN {printf "%.1f", (n > 0 ? c * 1e6 / n : 0)}')
		echo "   $p: cpu ${cpu[$row.$p]}s (${cpm[$row.$p]}s per million lines), peak rss ${rss[$row.$p]} MiB, max fds ${fds[$row.$p]}, s3 requests/min ${reqs[$row.$p]}${kinds[$row.$p]:+ (since start: ${kinds[$row.$p]})}"
	done
	win[$row]=$(elapsed "$t0" "$t1")
	nstreams[$row]=$files
	echo "   lines ${lines[$row]} written, ${stored[$row]} stored in ${segs[$row]} segments, over ${win[$row]} s"
	((RECEIVE == 0)) || echo "   applied ${applied[$row]} (bad ${bad[$row]}), append->applied p50 ${p50[$row]} ms, p99 ${p99[$row]} ms, max ${pmax[$row]} ms"
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

procs=(ship)
((RECEIVE == 0)) || procs+=(recv)
echo
echo "== streams benchmark: $STREAMS x $RATE lines/s vs 1 x $((STREAMS * RATE)) lines/s, ${DURATION}s, max_age $MAX_AGE, $( ((S3 == 1)) && echo "versitygw" || echo "dir store")$( ((RECEIVE == 1)) && echo ", one shipper and one receiver")"
printf '%-11s %8s %12s %10s %8s %12s\n' row.process cpu_s cpu_s/Mline rss_MiB fds s3_req/min
for row in many one; do
	for p in "${procs[@]}" all; do
		k=$row.$p
		[[ $p != all ]] || k=$row
		((RECEIVE == 1)) || [[ $p != all ]] || continue
		printf '%-11s %8s %12s %10s %8s %12s\n' "$row.$p" "${cpu[$k]}" "${cpm[$k]}" "${rss[$k]}" "${fds[$k]}" "${reqs[$k]}"
	done
done
printf '%-6s %9s %12s %12s %12s %6s %10s %10s %10s\n' row segments written stored applied bad p50_ms p99_ms max_ms
for row in many one; do
	printf '%-6s %9s %12s %12s %12s %6s %10s %10s %10s\n' "$row" "${segs[$row]}" "${lines[$row]}" "${stored[$row]}" "${applied[$row]:--}" "${bad[$row]:--}" "${p50[$row]:--}" "${p99[$row]:--}" "${pmax[$row]:--}"
done
# CPU is compared per line written: the rows' writers may not keep the
# same pace on a loaded machine.
for p in "${procs[@]}" all; do
	k=$p
	[[ $p != all ]] || { ((RECEIVE == 1)) || continue; k=""; }
	awk -v p="$p" -v cm="${cpm[many${k:+.$k}]}" -v co="${cpm[one${k:+.$k}]}" -v rm="${rss[many${k:+.$k}]}" -v ro="${rss[one${k:+.$k}]}" \
		-v fm="${fds[many${k:+.$k}]}" -v fo="${fds[one${k:+.$k}]}" -v qm="${reqs[many${k:+.$k}]}" -v qo="${reqs[one${k:+.$k}]}" 'BEGIN {
		printf "ratios many/one, %s: cpu per line %.2fx, rss %.2fx, fds %.2fx", p, (co > 0 ? cm / co : 0), (ro > 0 ? rm / ro : 0), (fo > 0 ? fm / fo : 0)
		if (qo > 0) printf ", s3 requests %.2fx", qm / qo
		printf "\n"
	}'
done
# The targets are the issue's: the CPU of the shipper and the receiver
# together (just the shipper with RECEIVE=0), and each process's RSS.
awk -v cm="${cpm[many]}" -v co="${cpm[one]}" -v rs="${rss[many.ship]}" -v rr="${rss[many.recv]:-0}" -v tc="$TARGET_CPU_RATIO" -v tr="$TARGET_RSS_MIB" \
	-v what="$( ((RECEIVE == 1)) && echo "shipper + receiver" || echo "shipper")" 'BEGIN {
	r = co > 0 ? cm / co : 0
	printf "target cpu per line (%s) <= %.1fx the one stream: %s (%.2fx)\n", what, tc, (r <= tc ? "OK" : "MISSED"), r
	printf "target rss <= %d MiB per process: shipper %s (%.1f MiB)", tr, (rs <= tr ? "OK" : "MISSED"), rs
	if (rr > 0) printf ", receiver %s (%.1f MiB)", (rr <= tr ? "OK" : "MISSED"), rr
	printf "\n"
}'
if ((RECEIVE == 1)); then
	echo "latency append->applied (every line: its write time to the moment applylat read it from the applied file): many p99 ${p99[many]} ms, one p99 ${p99[one]} ms"
fi
if ((S3 == 1)); then
	# The documented models, over each row's span W seconds with S streams
	# and G segments: docs/STREAMS.md for the shipper (per segment its PUT,
	# the LIST of its neighbours and the LIST of generations/ before the
	# send; per stream a lease renewal every lease_ttl/3 = 10 s), and
	# docs/FLEET.md for a receiver outside a fleet (the shared listing, one
	# page per 1,000 keys, every poll_min 0.2 s to poll_max 5 s; per
	# segment a GET and at most one LIST of generations/; per stream a
	# LIST when it opens, a PUT registering its watermark, and a watermark
	# PUT + DELETE at most every 10 s, and a LIST of its watermark dir at
	# its first publish). The receiver's span starts
	# with its streams not open yet: their opens are in it.
	for row in many one; do
		echo "s3 requests since start, $row: ship ${kinds[$row.ship]}; recv ${kinds[$row.recv]:-}"
		awk -v row="$row" -v w="${win[$row]}" -v n="${nstreams[$row]}" -v g="${segs[$row]}" -v qs="${reqs[$row.ship]}" -v qr="${reqs[$row.recv]:-}" 'BEGIN {
			ceil10 = int(w / 10) + 1
			ship = (3 * g + n * ceil10) * 60 / w
			pages = int((g + 3 * n) / 1000) + 1
			lo = (2 * g + (w / 5) * 1) * 60 / w
			hi = (2 * g + 3 * n + 2 * n * ceil10 + (w / 0.2) * pages) * 60 / w
			printf "requests vs the model, %s: shipper %d/min, model %.0f/min: %s", row, qs, ship, (qs <= ship * 1.1 ? "OK" : "MISSED (over the model)")
			if (qr != "") printf "; receiver %d/min, model %.0f-%.0f/min: %s", qr, lo, hi, (qr <= hi ? "OK" : "MISSED (over the model)")
			printf "\n"
		}'
	done
fi
for row in many one; do
	[[ ${stored[$row]} == "${lines[$row]}" ]] || echo "WARNING: $row stored ${stored[$row]} of ${lines[$row]} lines"
	((RECEIVE == 0)) || [[ ${applied[$row]} == "${lines[$row]}" && ${bad[$row]} == 0 ]] ||
		echo "WARNING: $row applied ${applied[$row]} of ${lines[$row]} lines, ${bad[$row]} out of order or repeated"
done
echo "reproduce: cd $root && STREAMS=$STREAMS RATE=$RATE DURATION=$DURATION MAX_AGE=$MAX_AGE S3=$S3 RECEIVE=$RECEIVE BUNDLE_INTERVAL=$BUNDLE_INTERVAL tests/bench/streams.sh (load $(cut -d' ' -f1-3 /proc/loadavg))"

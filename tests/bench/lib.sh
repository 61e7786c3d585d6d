# shellcheck shell=bash
# Shared parts of the benchmark scripts (run.sh, s3.sh, link.sh,
# restore.sh, dirtree.sh); sourced, not run.
#
# A script sets its defaults (SIZE, SEED, RUNS, BENCH_DIR) and
# `set -euo pipefail`, sources this file, then calls, in order:
#
#   bench_init             shared checks; cd to the repo; sets root, size_bytes
#   build_bins ferry [loggen]   go build into $BENCH_DIR/bin; sets $ferry ($loggen)
#   need_versitygw, s3_start DIR, s3_stop   a versitygw with a fresh bucket (s3.sh, restore.sh)
#   make_input             generates or reuses the input; sets input
#   warm_input             reads the input once; sets lines
#
# and, for the timed runs and the report: now, elapsed, keep (best of N into
# best[ROW] and all[ROW]), report_header, $awk_target (the OK/MISSED lines)
# and reproduce.

bench_name=${0##*/}

die() {
	echo "$bench_name: $*" >&2
	exit 1
}

need() {
	command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"
}

# to_bytes 256MiB -> 268435456 (the units loggen accepts).
to_bytes() {
	local s=$1 n unit
	[[ $s =~ ^([0-9]+)[[:space:]]*([A-Za-z]*)$ ]] || die "SIZE=$s: want a whole number and a unit, e.g. 256MiB"
	n=${BASH_REMATCH[1]}
	unit=${BASH_REMATCH[2],,}
	case $unit in
	"" | b) echo "$n" ;;
	kib) echo $((n << 10)) ;;
	mib) echo $((n << 20)) ;;
	gib) echo $((n << 30)) ;;
	kb) echo $((n * 1000)) ;;
	mb) echo $((n * 1000000)) ;;
	gb) echo $((n * 1000000000)) ;;
	*) die "SIZE=$s: unknown unit $unit (use B, KiB, MiB, GiB, kB, MB, GB)" ;;
	esac
}

# now prints the wall clock in seconds with microseconds.
now() { echo "$EPOCHREALTIME"; }

# elapsed T0 T1 prints T1 - T0 in seconds with milliseconds.
elapsed() {
	awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'
}

# bench_init checks the settings and the tools both scripts need, moves to the
# repository root and sets root and size_bytes. A script checks its own extra
# tools after it.
bench_init() {
	[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS=$RUNS: want a positive whole number"
	((BASH_VERSINFO[0] >= 5)) || die "bash 5 or later needed (EPOCHREALTIME), found $BASH_VERSION"
	need go "install Go (see go.mod for the version)"
	need awk "install awk, e.g. apt-get install -y gawk"
	need cmp "install diffutils"

	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
	cd "$root" || die "cannot cd to $root"
	[[ -f go.mod && -d cmd/ferry ]] || die "$root does not look like the ferry repository"

	size_bytes=$(to_bytes "$SIZE")
	((size_bytes > 0)) || die "SIZE=$SIZE: must be more than 0 bytes"
	mkdir -p "$BENCH_DIR/bin" || die "cannot create BENCH_DIR=$BENCH_DIR"
}

# build_bins NAME... builds each of ferry (./cmd/ferry), loggen
# (./tests/bench/loggen), appender (./tests/bench/appender), treegen
# (./tests/bench/treegen), streamlines, applylat, zstdgo and latproxy
# (./tests/bench/NAME) to
# $BENCH_DIR/bin/NAME and sets the variable NAME to that path.
build_bins() {
	local names=$* name
	echo "== building ${names// / and } (go build)"
	for name in "$@"; do
		case $name in
		ferry)
			ferry="$BENCH_DIR/bin/ferry"
			go build -o "$ferry" ./cmd/ferry || die "go build ./cmd/ferry failed (see above)"
			;;
		loggen)
			loggen="$BENCH_DIR/bin/loggen"
			go build -o "$loggen" ./tests/bench/loggen || die "go build ./tests/bench/loggen failed (see above)"
			;;
		appender)
			appender="$BENCH_DIR/bin/appender"
			go build -o "$appender" ./tests/bench/appender || die "go build ./tests/bench/appender failed (see above)"
			;;
		treegen)
			treegen="$BENCH_DIR/bin/treegen"
			go build -o "$treegen" ./tests/bench/treegen || die "go build ./tests/bench/treegen failed (see above)"
			;;
		streamlines)
			streamlines="$BENCH_DIR/bin/streamlines"
			go build -o "$streamlines" ./tests/bench/streamlines || die "go build ./tests/bench/streamlines failed (see above)"
			;;
		applylat)
			applylat="$BENCH_DIR/bin/applylat"
			go build -o "$applylat" ./tests/bench/applylat || die "go build ./tests/bench/applylat failed (see above)"
			;;
		zstdgo)
			zstdgo="$BENCH_DIR/bin/zstdgo"
			go build -o "$zstdgo" ./tests/bench/zstdgo || die "go build ./tests/bench/zstdgo failed (see above)"
			;;
		latproxy)
			latproxy="$BENCH_DIR/bin/latproxy"
			go build -o "$latproxy" ./tests/bench/latproxy || die "go build ./tests/bench/latproxy failed (see above)"
			;;
		*) die "build_bins: unknown binary $name" ;;
		esac
	done
}

# make_input sets input to the cached input file for SIZE and SEED under
# BENCH_DIR, and generates it unless a file of the right size is there. With
# a built loggen (build_bins ... loggen) it also times the generation;
# without, it uses go run.
make_input() {
	local t0 t1 gen=(go run ./tests/bench/loggen)
	input="$BENCH_DIR/input-$SIZE.log"
	[[ $SEED == 1 ]] || input="$BENCH_DIR/input-$SIZE-seed$SEED.log"
	if [[ -f $input && $(stat -L -c %s "$input") == "$size_bytes" ]]; then
		echo "== input: reusing $input"
		return 0
	fi
	echo "== input: generating $input ($SIZE, seed $SEED)"
	[[ -z ${loggen:-} ]] || gen=("$loggen")
	t0=$(now)
	"${gen[@]}" -size "$SIZE" -seed "$SEED" -o "$input" || die "loggen failed"
	sync "$input" # so its writeback does not overlap the timed runs
	t1=$(now)
	# Only a built loggen is timed: go run's time would include the compile.
	if [[ -n ${loggen:-} ]]; then
		awk -v b="$size_bytes" -v t0="$t0" -v t1="$t1" 'BEGIN {printf "   %.1fs, %.0f MB/s\n", t1-t0, b/1e6/(t1-t0)}'
	fi
}

# warm_input reads the input once and sets lines to its line count.
# Dropping the page cache needs root and disturbs everyone else on the
# machine, so instead the input is read once here: every timed run then
# reads it from memory.
warm_input() {
	echo "== warming the page cache: cat input > /dev/null (caches are not dropped)"
	cat "$input" >/dev/null
	lines=$(wc -l <"$input")
}

# Best of N: keep ROW SECONDS appends SECONDS to all[ROW] (every run, in
# order) and, when it is the smallest so far, sets best[ROW] to it and
# returns 0; otherwise it returns 1.
declare -A best all
keep() {
	all[$1]+="${all[$1]:+ }$2"
	if [[ -z ${best[$1]:-} ]] || awk -v a="$2" -v b="${best[$1]}" 'BEGIN {exit !(a < b)}'; then
		best[$1]=$2
		return 0
	fi
	return 1
}

# report_header TITLE SETTINGS VERSIONS WHERE prints the report's first lines:
#   ferry TITLE: SIZE input (...)SETTINGS, best of RUNS (or $runs_note)
#     ferry COMMIT; VERSIONS
#     N CPUs (...), load average ...; WHERE on <file system of BENCH_DIR>
# and sets load to the load averages it printed.
report_header() {
	local cpu commit
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	load=$(cut -d ' ' -f 1-3 /proc/loadavg)
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	[[ -n $(git status --porcelain 2>/dev/null | head -n 1) ]] && commit+=" + uncommitted changes"
	echo
	echo "ferry $1: $SIZE input ($size_bytes bytes, $lines lines, seed $SEED)$2, ${runs_note:-best of $RUNS}"
	echo "  ferry $commit; $3"
	echo "  $(nproc) CPUs ($cpu), load average $load; $4 on $(stat -f -c %T "$BENCH_DIR")"
}

# awk_target defines target(LABEL, VALUE, OP, WANT[, VFMT, WFMT, UNIT]) for
# an awk program (awk "$awk_target"' BEGIN {...}'). It prints
#   target  LABEL = VALUE[UNIT]   want OP WANT[UNIT]   OK|MISSED
# with OP ">=" or "<=", VALUE in VFMT (default %.2f) and WANT in WFMT
# (default %.1f).
# shellcheck disable=SC2034 # used by the scripts that source this file
awk_target='
function target(label, v, op, want, vfmt, wfmt, unit,   ok, fmt) {
	ok = (op == ">=") ? (v >= want) : (v <= want)
	fmt = "target  %s = " (vfmt == "" ? "%.2f" : vfmt) "%s   want %s " (wfmt == "" ? "%.1f" : wfmt) "%s   %s\n"
	printf fmt, label, v, unit, op, want, unit, (ok ? "OK" : "MISSED")
}'

# reproduce SETTINGS prints the command line that repeats this run.
reproduce() {
	echo "reproduce: cd $root && SIZE=$SIZE SEED=$SEED RUNS=$RUNS $* tests/bench/$bench_name"
}

# port_free PORT succeeds when nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port sets port to a random loopback port nothing listens on (a
# server started on it may still lose a race for it: callers retry).
pick_port() {
	for _ in $(seq 20); do
		port=$((20000 + RANDOM % 40000))
		port_free "$port" && return 0
	done
	die "no free loopback port found in 20 tries"
}

# need_versitygw checks what s3_start needs (curl with --aws-sigv4, the
# versitygw binary: $VERSITYGW, $PATH, then $(go env GOPATH)/bin) and sets gw.
need_versitygw() {
	need curl "install curl (7.75 or later: it creates the bucket with --aws-sigv4)"
	curl --help all 2>/dev/null | grep -q -- --aws-sigv4 ||
		die "curl $(curl --version | awk 'NR==1 {print $2}') has no --aws-sigv4 (needs 7.75 or later): it creates the bucket"
	gw=${VERSITYGW:-}
	if [[ -z $gw ]]; then
		gw=$(command -v versitygw || true)
		[[ -n $gw ]] || gw="$(go env GOPATH | cut -d: -f1)/bin/versitygw"
	fi
	[[ -x $gw ]] || die "versitygw not found at $gw: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0, or set VERSITYGW"
}

# s3_start DIR starts versitygw with a posix backend in DIR/gw on a free
# loopback port with fresh random credentials, creates bucket ferry-bench and
# sets gw_pid, endpoint, bucket and s3env (the env command line ferry runs
# under). Call s3_stop from the script's EXIT trap.
gw_pid=""
s3_start() {
	local dir=$1 port code empty_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
	local access_key secret_key
	access_key="bench$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
	secret_key=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
	bucket="ferry-bench"
	mkdir -p "$dir/gw"
	echo "== starting versitygw ($gw) with a posix backend in $dir/gw"
	endpoint=""
	for _ in 1 2 3; do
		pick_port
		ROOT_ACCESS_KEY=$access_key ROOT_SECRET_KEY=$secret_key \
			"$gw" --port "127.0.0.1:$port" --quiet posix "$dir/gw" >"$dir/gw.log" 2>&1 &
		gw_pid=$!
		# Any HTTP status will do: an unsigned request gets 403.
		for _ in $(seq 100); do
			code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
			if [[ $code != 000 ]]; then
				endpoint="http://127.0.0.1:$port"
				break 2
			fi
			kill -0 "$gw_pid" 2>/dev/null || break
			sleep 0.1
		done
		s3_stop
	done
	if [[ -z $endpoint ]]; then
		cat "$dir/gw.log" >&2
		die "versitygw did not come up on a loopback port (log above)"
	fi
	# ferry has no bucket verb; S3 wants the payload hash header on every request.
	code=$(curl -s -o "$dir/mkbucket.out" -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
		--user "$access_key:$secret_key" -H "x-amz-content-sha256: $empty_sha256" "$endpoint/$bucket")
	[[ $code == 200 ]] || die "create bucket $bucket at $endpoint: HTTP $code: $(cat "$dir/mkbucket.out")"
	echo "   $endpoint, bucket $bucket"
	s3env=(env AWS_ENDPOINT_URL_S3="$endpoint" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID="$access_key"
		AWS_SECRET_ACCESS_KEY="$secret_key" AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null)
}

# s3_stop stops the versitygw s3_start started, if any.
s3_stop() {
	if [[ -n $gw_pid ]]; then
		kill "$gw_pid" 2>/dev/null || true
		wait "$gw_pid" 2>/dev/null || true
		gw_pid=""
	fi
}

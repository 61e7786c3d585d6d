#!/usr/bin/env bash
# Directory-tree benchmark: lsyncd + rsync and plain rsync -az against
# ferry's dir: source and applier, side by side in one run, on the same
# workload (issues 5 and 24):
#
#   phase 1  FILES files (default 10,000) created in nested directories of a
#            mail store: messages, logs, binary attachments, 1-64 KiB, and
#            per user an mbox and an index file;
#   phase 2  once the replica matches (the churn): appends to logs and
#            mboxes, rewrites, in-place patches, index records rewritten in
#            place and appended, deletes, Maildir flag renames, moves, new
#            messages and a directory rename.
#
# The rsync-z row is plain `rsync -az --delete SRC/ rsync://REPLICA/`, run
# once per phase as soon as the phase's writes are done (treegen run
# -after-writes), not in a loop: each phase then costs rsync one file list
# and one delta transfer against what the replica holds, the fewest bytes
# rsync -z can move it in, so the churn-phase bytes target of issue 24 is
# measured against rsync at its best. Its time to match (the writes plus
# one rsync run) is printed, but it replicates nothing while the writes go
# on, so the time target stays against lsyncd, which watches.
#
# Each tool replicates a fresh, empty source tree to a fresh replica while
# the workload runs (tests/bench/treegen plays it and compares the replica
# every 100 ms). Measured per tool: time from a phase's first write until
# the replica matches, the bytes on the wire (a counting TCP proxy in front
# of the receiving side), and the CPU time of all the tool's processes.
#
#   tests/bench/dirtree.sh                      # 10,000 files, best of 2
#   FILES=2000 RUNS=1 tests/bench/dirtree.sh    # quick look
#
# Environment:
#   FILES        files created in phase 1 (default 10000)
#   SEED         workload seed (default 1)
#   RUNS         rounds; each runs every row once; the best is reported (default 2)
#   ROWS         rows to run, from: lsyncd lsyncd-z rsync-z ferry (default all four)
#   RSYNC_EXTRA  more rsync options for the lsyncd and rsync-z rows, e.g. --fsync
#   TIMEOUT      give up on a phase after this long (default 10m)
#   BENCH_DIR    work dir (default /tmp/ferry-bench); the run's files go in a
#                temp dir dirtree-XXXXXX under it, removed at exit
#   KEEP         1 keeps that dir's logs and configs (the trees are removed)
#
# It needs lsyncd and rsync (Debian packages lsyncd, rsync; installed with
# apt-get when missing and run as root). It is a measurement: it exits 0
# when a target is missed, non-zero only when something could not be
# measured.
set -euo pipefail

FILES=${FILES:-10000}
SEED=${SEED:-1}
RUNS=${RUNS:-2}
ROWS=${ROWS:-lsyncd lsyncd-z rsync-z ferry}
RSYNC_EXTRA=${RSYNC_EXTRA:-}
TIMEOUT=${TIMEOUT:-10m}
KEEP=${KEEP:-}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}
SIZE=$FILES # lib.sh checks a SIZE; here it is the file count, not bytes

# Targets (issue 5): ferry against lsyncd + rsync with delay = 1.
TARGET_TIME_RATIO=0.5  # ferry time to match / lsyncd's, at most
TARGET_BYTES_RATIO=0.5 # ferry wire bytes / lsyncd's, at most
# Target (issue 24): ferry's churn-phase (phase 2) wire bytes / rsync -az's.
TARGET_CHURN_BYTES_RATIO=0.5

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $FILES =~ ^[1-9][0-9]*$ ]] || die "FILES=$FILES: want a positive whole number"
for row in $ROWS; do
	[[ $row == lsyncd || $row == lsyncd-z || $row == rsync-z || $row == ferry ]] || die "ROWS: unknown row $row (want lsyncd, lsyncd-z, rsync-z, ferry)"
done
bench_init
if [[ " $ROWS " == *" lsyncd"* || " $ROWS " == *" rsync-z "* ]]; then
	if ! command -v lsyncd >/dev/null || ! command -v rsync >/dev/null; then
		if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
			echo "== installing lsyncd and rsync (apt-get install -y lsyncd rsync)"
			apt-get install -y lsyncd rsync >/dev/null || die "apt-get install -y lsyncd rsync failed"
		fi
	fi
	need lsyncd "install it: apt-get install -y lsyncd (Debian package lsyncd)"
	need rsync "install it: apt-get install -y rsync (Debian package rsync)"
fi
build_bins ferry treegen

work=$(mktemp -d "$BENCH_DIR/dirtree-XXXXXX")
declare -A started # wrapper pid -> name, for the cleanup
cleanup() {
	local pid
	for pid in "${!started[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${!started[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ $KEEP == 1 ]]; then
		echo "logs kept in $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# start NAME DIR CMD...: runs CMD in the background under treegen cpu,
# which records its CPU time (and that of every process it waited for) in
# DIR/NAME.cpu when it exits; output to DIR/NAME.log. Sets pid.
start() {
	local name=$1 dir=$2
	shift 2
	"$treegen" cpu -o "$dir/$name.cpu" -- "$@" >"$dir/$name.log" 2>&1 &
	pid=$!
	started[$pid]=$name
}

# stop PID: SIGTERM, then again after 30 s; the third (after 10 s more)
# makes treegen cpu kill the command.
stop() {
	local pid=$1 i
	for i in 300 100 50; do
		kill "$pid" 2>/dev/null || true
		while ((i-- > 0)) && kill -0 "$pid" 2>/dev/null; do
			sleep 0.1
		done
		kill -0 "$pid" 2>/dev/null || break
	done
	wait "$pid" 2>/dev/null || true
	unset "started[$pid]"
}

# wait_for FILE PATTERN PID WHAT: waits until FILE has a line matching
# PATTERN (up to 30 s), while PID lives.
wait_for() {
	local i
	for ((i = 0; i < 300; i++)); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		kill -0 "$3" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$1" >&2 || true
	die "$4 did not come up (log above, from $1)"
}

# proxy DIR TO: a counting proxy in front of TO; sets proxy_pid, proxy_addr.
proxy() {
	local i
	"$treegen" proxy -listen 127.0.0.1:0 -to "$2" -stats "$1/proxy.stats" -live "$1/proxy.live" \
		-addr-file "$1/proxy.addr" 2>"$1/proxy.log" &
	proxy_pid=$!
	started[$proxy_pid]=proxy
	for ((i = 0; i < 100; i++)); do
		[[ -s $1/proxy.addr ]] && break
		sleep 0.05
	done
	proxy_addr=$(cat "$1/proxy.addr") || die "the counting proxy did not start ($1/proxy.log)"
}

cpu_of() { # cpu_of FILE: user + sys seconds
	[[ -s $1 ]] || die "no CPU times in $1"
	awk '$1 == "user" || $1 == "sys" {s += $2} END {printf "%.2f", s}' "$1"
}
own_of() { # own_of FILE: the command's own CPU seconds, without its children
	awk '$1 == "own" {printf "%.2f", $2; found = 1} END {if (!found) printf "?"}' "$1"
}

# A real rsync daemon on loopback, module "replica" on DIR/dst, behind the
# proxy; sets dst_pid and proxy_addr.
start_rsyncd() { # start_rsyncd DIR
	local d=$1 rport
	rport=$("$treegen" freeport)
	cat >"$d/rsyncd.conf" <<-EOF
		use chroot = no
		reverse lookup = no
		log file = $d/rsyncd.log
		[replica]
		    path = $d/dst
		    read only = no
		    uid = root
		    gid = root
	EOF
	start rsyncd "$d" rsync --daemon --no-detach --config="$d/rsyncd.conf" --address=127.0.0.1 --port="$rport"
	dst_pid=$pid
	wait_for "$d/rsyncd.log" "listening on port $rport" "$dst_pid" "rsync --daemon"
	proxy "$d" "127.0.0.1:$rport"
}

# The lsyncd rows: lsyncd (default.rsync, delay = 1) runs rsync against the
# rsync daemon, through the proxy.
start_lsyncd() { # start_lsyncd DIR COMPRESS
	local d=$1 compress=$2 extra="" o
	start_rsyncd "$d"
	for o in $RSYNC_EXTRA; do
		extra+="\"$o\", "
	done
	cat >"$d/lsyncd.conf" <<-EOF
		settings {
		    nodaemon = true,
		}
		sync {
		    default.rsync,
		    source = "$d/src",
		    target = "rsync://$proxy_addr/replica/",
		    delay = 1,
		    rsync = { compress = $compress, _extra = { $extra} },
		}
	EOF
	start lsyncd "$d" lsyncd "$d/lsyncd.conf"
	src_pid=$pid
	"$treegen" watching -pid "$src_pid" -path "$d/src" || die "lsyncd is not watching $d/src ($d/lsyncd.log)"
	wait_for "$d/lsyncd.log" "Startup of .* finished" "$src_pid" "lsyncd"
}

# The ferry row: ferry ship --source dir: over the direct link, through the
# proxy, to ferry receive --listen applying to a dir: replica.
start_ferry() { # start_ferry DIR
	local d=$1 rport
	rport=$("$treegen" freeport)
	start receive "$d" "$ferry" receive --listen "127.0.0.1:$rport" --insecure --token "$token" --stream tree \
		--state "$d/state" --apply "dir:$d/dst"
	dst_pid=$pid
	wait_for "$d/receive.log" "tcp listener ready" "$dst_pid" "ferry receive --listen"
	proxy "$d" "127.0.0.1:$rport"
	start ship "$d" "$ferry" ship --source "dir:$d/src" --store "tcp://$proxy_addr" --insecure --token "$token" \
		--stream tree --spool "$d/spool" --max-age 1s
	src_pid=$pid
	"$treegen" watching -pid "$src_pid" -path "$d/src" || die "ferry ship is not watching $d/src ($d/ship.log)"
	wait_for "$d/ship.log" "link established" "$src_pid" "ferry ship"
}

declare -A r_p1 r_p2 r_after r_b1 r_b2 r_up r_down r_cpu_src r_cpu_dst r_cmp r_notes
label() {
	case $1 in
	lsyncd) echo "lsyncd + rsync" ;;
	lsyncd-z) echo "lsyncd + rsync -z" ;;
	rsync-z) echo "rsync -az, once/phase" ;;
	ferry) echo "ferry ship + receive" ;;
	esac
}

run_row() { # run_row ROW ROUND
	local row=$1 round=$2 d="$work/$1-$2" total out notes="" after=()
	mkdir -p "$d/src" "$d/dst"
	sync # the last row's writeback must not land in this one
	case $row in
	lsyncd) start_lsyncd "$d" false ;;
	lsyncd-z) start_lsyncd "$d" true ;;
	rsync-z)
		start_rsyncd "$d"
		src_pid=""
		# treegen runs it (sh -c) after each phase's writes; its CPU time
		# goes to DIR/rsync-PHASE.cpu.
		after=(-after-writes "\"$treegen\" cpu -o \"$d/rsync-\$TREEGEN_PHASE.cpu\" -- rsync -az --delete $RSYNC_EXTRA \"$d/src/\" \"rsync://$proxy_addr/replica/\"")
		;;
	ferry) start_ferry "$d" ;;
	esac
	sleep 1
	echo "== round $round/$RUNS: $(label "$row")"
	if ! "$treegen" run -src "$d/src" -dst "$d/dst" -seed "$SEED" -files "$FILES" -timeout "$TIMEOUT" \
		-bytes "$d/proxy.live" "${after[@]}" >"$d/run.out" 2>"$d/run.err"; then
		cat "$d/run.err" >&2
		tail -n 20 "$d"/*.log >&2 || true
		die "$(label "$row"): the replica did not match (logs above, in $d)"
	fi
	sed 's/^/   /' "$d/run.err"
	[[ -z $src_pid ]] || stop "$src_pid"
	stop "$dst_pid"
	stop "$proxy_pid"
	out=$("$treegen" cmp "$d/src" "$d/dst") || {
		echo "$out" >&2
		die "$(label "$row"): the replica differs from the source after the tools stopped ($d)"
	}
	echo "   check after stopping: $out"

	# run.out: "phaseN key=value ..." per phase.
	field() { awk -v p="$1" -v k="$2" '$1 == p {for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2)}' "$d/run.out"; }
	total=$(awk -v a="$(field phase1 match_s)" -v b="$(field phase2 match_s)" 'BEGIN {printf "%.3f", a + b}')
	if keep "$row" "$total"; then
		r_p1[$row]=$(field phase1 match_s)
		r_p2[$row]=$(field phase2 match_s)
		r_after[$row]=$(awk -v a="$total" -v w1="$(field phase1 write_s)" -v w2="$(field phase2 write_s)" 'BEGIN {printf "%.3f", a - w1 - w2}')
		r_b1[$row]=$(($(field phase1 up_bytes) + $(field phase1 down_bytes)))
		r_b2[$row]=$(($(field phase2 up_bytes) + $(field phase2 down_bytes)))
		r_up[$row]=$(awk '$1 == "up" {print $2}' "$d/proxy.stats")
		r_down[$row]=$(awk '$1 == "down" {print $2}' "$d/proxy.stats")
		case $row in
		lsyncd*)
			r_cpu_src[$row]=$(cpu_of "$d/lsyncd.cpu")
			r_cpu_dst[$row]=$(cpu_of "$d/rsyncd.cpu")
			notes="lsyncd's own CPU $(own_of "$d/lsyncd.cpu") s (the rest of the source side is its rsync clients)"
			notes+=", $(grep -c 'Finished a list' "$d/lsyncd.log" || true) rsync runs"
			notes+=" ($(grep 'Finished a list after exitcode' "$d/lsyncd.log" | grep -vc 'exitcode: 0$' || true) with a non-zero exit)"
			notes+=", $(grep -c 'OVERFLOW' "$d/lsyncd.log" || true) inotify queue overflows"
			;;
		rsync-z)
			r_cpu_src[$row]=$(awk -v a="$(cpu_of "$d/rsync-phase1.cpu")" -v b="$(cpu_of "$d/rsync-phase2.cpu")" 'BEGIN {printf "%.2f", a + b}')
			r_cpu_dst[$row]=$(cpu_of "$d/rsyncd.cpu")
			notes="2 rsync -az --delete runs, one after each phase's writes (nothing replicates while they go on)"
			;;
		ferry)
			r_cpu_src[$row]=$(cpu_of "$d/ship.cpu")
			r_cpu_dst[$row]=$(cpu_of "$d/receive.cpu")
			notes="$(grep -o '[0-9]* records ([^)]*) in [0-9]* segments' "$d/ship.log" || echo '? segments')"
			notes+=", $(grep -c 'queue overflow' "$d/ship.log" || true) inotify queue overflows"
			;;
		esac
		notes+=", treegen's writes and comparisons $(awk -v a="$(field phase1 cpu_s)" -v b="$(field phase2 cpu_s)" 'BEGIN {printf "%.1f", a + b}') CPU s (not counted)"
		r_cmp[$row]=$out
		r_notes[$row]=$notes
	fi
	rm -rf "$d/src" "$d/dst" "$d/spool" "$d/state"
}

# Rounds alternate the order of the rows, so a change in the machine's load
# does not always hit the same one.
read -r -a rows <<<"$ROWS"
for ((round = 1; round <= RUNS; round++)); do
	if ((round % 2 == 1)); then
		for row in "${rows[@]}"; do run_row "$row" "$round"; done
	else
		for ((i = ${#rows[@]} - 1; i >= 0; i--)); do run_row "${rows[i]}" "$round"; done
	fi
done

versions="$(go version | cut -d' ' -f3)"
if [[ " $ROWS " == *" lsyncd"* ]]; then
	versions+=", lsyncd $(lsyncd --version | awk 'NR == 1 {print $2}'), rsync $(rsync --version | awk 'NR == 1 {print $3}')"
fi
paths=$(awk '$1 == "phase1" {for (i = 2; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}; print v["files"] + v["dirs"]; exit}' "$work"/*/run.out)
lines=$paths
size_bytes=$(awk '$1 == "phase1" {for (i = 2; i <= NF; i++) if ($i ~ /^tree_bytes=/) {print substr($i, 12); exit}}' "$work"/*/run.out | head -n 1)
SIZE="$FILES-file tree"
report_header "directory tree vs lsyncd + rsync" ", lsyncd delay = 1, ferry --max-age 1s${RSYNC_EXTRA:+, rsync $RSYNC_EXTRA}" \
	"$versions" "trees, spool and inbox" | sed '2s/ input (/ (/; 2s/ lines,/ paths,/'
echo
printf '%-21s %-22s %7s  %-24s %8s  %-18s  %s\n' "" "to match s" "after" "wire MB" "of which" "CPU s" "all runs,"
printf '%-21s %-22s %7s  %-24s %8s  %-18s  %s\n' "" "= phase 1 + phase 2" "writes" "= phase 1 + phase 2" "down MB" "= src + dst" "to match s"
for row in "${rows[@]}"; do
	awk -v l="$(label "$row")" -v p1="${r_p1[$row]}" -v p2="${r_p2[$row]}" -v t="${best[$row]}" -v a="${r_after[$row]}" \
		-v b1="${r_b1[$row]}" -v b2="${r_b2[$row]}" -v up="${r_up[$row]}" -v down="${r_down[$row]}" \
		-v cs="${r_cpu_src[$row]}" -v cd="${r_cpu_dst[$row]}" -v all="${all[$row]}" 'BEGIN {
		printf "%-21s %-22s %7.2f  %-24s %8.2f  %-18s  %s\n", l, sprintf("%.2f = %.2f + %.2f", t, p1, p2), a,
			sprintf("%.1f = %.1f + %.1f", (up + down) / 1e6, b1 / 1e6, b2 / 1e6), down / 1e6,
			sprintf("%.1f = %.1f + %.1f", cs + cd, cs, cd), all
	}'
done
echo
for row in "${rows[@]}"; do
	echo "  $(label "$row"): ${r_notes[$row]}; replica ${r_cmp[$row]/#equal: /equal, }"
done
if [[ -n ${best[ferry]:-} ]]; then
	for row in lsyncd lsyncd-z; do
		[[ -n ${best[$row]:-} ]] || continue
		awk -v l="$(label "$row")" -v ft="${best[ferry]}" -v lt="${best[$row]}" \
			-v fb="$((r_up[ferry] + r_down[ferry]))" -v lb="$((r_up[$row] + r_down[$row]))" \
			-v fc="${r_cpu_src[ferry]}+${r_cpu_dst[ferry]}" -v lc="${r_cpu_src[$row]}+${r_cpu_dst[$row]}" \
			-v tt="$TARGET_TIME_RATIO" -v tb="$TARGET_BYTES_RATIO" "$awk_target"'
		function sum(s,   p) { split(s, p, "+"); return p[1] + p[2] }
		BEGIN {
			target("time to match, ferry / " l, ft / lt, "<=", tt, "%.3f", "%.2f")
			target("wire bytes, ferry / " l, fb / lb, "<=", tb, "%.3f", "%.2f")
			printf "info    CPU s, ferry / %s = %.2f\n", l, sum(fc) / sum(lc)
		}'
	done
	if [[ -n ${best[rsync-z]:-} ]]; then
		awk -v f2="${r_b2[ferry]}" -v r2="${r_b2[rsync-z]}" -v ft="${best[ferry]}" -v rt="${best[rsync-z]}" \
			-v tb="$TARGET_CHURN_BYTES_RATIO" "$awk_target"'
		BEGIN {
			target("churn-phase wire bytes, ferry / rsync -az once/phase", f2 / r2, "<=", tb, "%.3f", "%.2f")
			printf "info    time to match, ferry / rsync -az once/phase = %.2f (rsync copies after the writes; the time target is against lsyncd)\n", ft / rt
		}'
	fi
fi
echo "reproduce: cd $root && FILES=$FILES SEED=$SEED RUNS=$RUNS ROWS=\"$ROWS\"${RSYNC_EXTRA:+ RSYNC_EXTRA=\"$RSYNC_EXTRA\"} tests/bench/$bench_name"

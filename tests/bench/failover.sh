#!/usr/bin/env bash
# Failover benchmark over a direct link on loopback, real processes:
#
#   1. promote: `ferry promote` on a caught-up secondary (RECORDS records
#      applied from a directory store), wall time; the median of RUNS runs.
#   2. switchover under load: an application (tests/bench/ratelines) writes
#      RATE lines/s into the primary's log, which `ferry ship --source tail:`
#      sends over tcp:// to `ferry receive --listen` on the secondary. Then
#      the planned switchover, step by step as docs/FAILOVER.md's runbook
#      has it: stop the application, SIGTERM the shipper (it drains), wait
#      until the secondary applied its last seq, stop the receiver, `ferry
#      promote --spool --source tail:REPLICA` there, `ferry rejoin` on the
#      old primary (its report must be empty), start `ferry receive
#      --listen` on the old primary and `ferry ship` on the new one, and
#      restart the application on the new primary's log (the replica).
#      Write unavailability is the time from the application's last line
#      on the old primary to the first record the new primary's spool
#      accepted (the application's own restart, a process start, is in it
#      too: it is milliseconds). Records lost or duplicated are counted by
#      comparing both sites' logs with what the application wrote.
#
#   tests/bench/failover.sh              # 3 runs of each
#   RUNS=5 RATE=10000 tests/bench/failover.sh
#
# It is a measurement: it exits 0 when a target is missed, non-zero only
# when something could not be measured.
set -euo pipefail

RUNS=${RUNS:-3}
RATE=${RATE:-10000}
RECORDS=${RECORDS:-100000}
LOAD_SECONDS=${LOAD_SECONDS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}
SIZE=1B # lib.sh wants one; this script makes its own input

# Targets (issue: failover and failback).
TARGET_PROMOTE_S=1   # promote wall time, at most
TARGET_UNAVAIL_S=2   # write unavailability, at most
TARGET_LOST=0        # records lost or duplicated

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_init
build_bins ferry
ratelines="$BENCH_DIR/bin/ratelines"
go build -o "$ratelines" ./tests/bench/ratelines || die "go build ./tests/bench/ratelines failed"

work=$(mktemp -d "$BENCH_DIR/failover-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

median() { tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# json_field FILE-OR-STDIN KEY prints a top-level number of a JSON object.
json_num() { sed -n "s/.*\"$1\": *\([0-9.]*\).*/\1/p" | head -n 1; }

wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.01
	done
}

applied() { "$ferry" status --state "$1" --json 2>/dev/null | json_num applied_seq; }
spool_seq() { "$ferry" status --spool "$1" --json 2>/dev/null | json_num last_seq; }
at_least() { local v; v=$($1 "$2"); [[ -n $v ]] && ((v >= $3)); }
listening() { ! port_free "$1"; }

echo "== promote on a caught-up secondary ($RECORDS records, dir store), $RUNS runs"
promote_s=()
for run in $(seq "$RUNS"); do
	d="$work/promote-$run"
	mkdir -p "$d"
	seq 1 "$RECORDS" | "$ferry" ship --store "$d/store" --stream app --spool "$d/spool" --max-records 1000 --log-level warn >/dev/null 2>&1
	"$ferry" receive --store "$d/store" --stream app --state "$d/state" --apply "file:$d/replica" --once --log-level warn >/dev/null 2>&1
	t0=$(now)
	"$ferry" promote --store "$d/store" --stream app --state "$d/state" --site dr >/dev/null
	t1=$(now)
	promote_s+=("$(elapsed "$t0" "$t1")")
	echo "run $run: promote ${promote_s[-1]} s"
done

echo "== switchover under $RATE lines/s over tcp:// ($LOAD_SECONDS s of load on each side), $RUNS runs"
unavail_s=()
switch_promote_s=()
lost_all=()
for run in $(seq "$RUNS"); do
	d="$work/switch-$run"
	mkdir -p "$d/a" "$d/b"
	pick_port
	pb=$port
	pick_port
	pa=$port
	link=(--insecure --token bench-link-token-0123 --stream app --log-level warn)
	"$ferry" receive --listen "127.0.0.1:$pb" --state "$d/b/state" --apply "file:$d/b/app.log" "${link[@]}" 2>"$d/b/recv.err" &
	recv_b=$!
	pids+=("$recv_b")
	wait_for 10 listening "$pb" || die "run $run: the secondary does not listen on $pb: $(tail -n 3 "$d/b/recv.err")"
	touch "$d/a/app.log"
	"$ferry" ship --store "tcp://127.0.0.1:$pb" --spool "$d/a/spool" --source "tail:$d/a/app.log" --max-age 10ms "${link[@]}" 2>"$d/a/ship.err" &
	ship_a=$!
	pids+=("$ship_a")
	"$ratelines" -o "$d/a/app.log" -rate "$RATE" -prefix a >"$d/a/app.out" &
	app=$!
	pids+=("$app")
	sleep "$LOAD_SECONDS"

	# The switchover.
	kill -TERM "$app"
	wait "$app" || true
	read -r wrote_a t_last <"$d/a/app.out"
	wait_for 30 at_least spool_seq "$d/a/spool" "$wrote_a" || die "run $run: the primary did not take all $wrote_a lines"
	kill -TERM "$ship_a"
	wait "$ship_a" || die "run $run: the old primary's shipper failed: $(tail -n 3 "$d/a/ship.err")"
	last=$(spool_seq "$d/a/spool")
	wait_for 30 at_least applied "$d/b/state" "$last" || die "run $run: the secondary did not apply seq $last"
	kill -TERM "$recv_b"
	wait "$recv_b" || true
	t0=$(now)
	"$ferry" promote --store "tcp://127.0.0.1:$pb" --stream app --state "$d/b/state" --site b \
		--spool "$d/b/spool" --source "tail:$d/b/app.log" >/dev/null
	t1=$(now)
	switch_promote_s+=("$(elapsed "$t0" "$t1")")
	"$ferry" rejoin --store "$d/b/spool/history" --stream app --spool "$d/a/spool" --state "$d/a/state" \
		--apply "file:$d/a/app.log" --report "$d/a/report.ndjson" >/dev/null 2>&1
	report_records=$(head -n 1 "$d/a/report.ndjson" | json_num records)
	"$ferry" receive --listen "127.0.0.1:$pa" --state "$d/a/state" --apply "file:$d/a/app.log" "${link[@]}" 2>"$d/a/recv.err" &
	recv_a=$!
	pids+=("$recv_a")
	"$ferry" ship --store "tcp://127.0.0.1:$pa" --spool "$d/b/spool" --source "tail:$d/b/app.log" --max-age 10ms "${link[@]}" 2>"$d/b/ship.err" &
	ship_b=$!
	pids+=("$ship_b")
	"$ratelines" -o "$d/b/app.log" -rate "$RATE" -prefix b >"$d/b/app.out" &
	app=$!
	pids+=("$app")
	wait_for 30 at_least spool_seq "$d/b/spool" "$((last + 1))" || die "run $run: the new primary accepted nothing"
	t_first=$(now)
	unavail_s+=("$(elapsed "$t_last" "$t_first")")
	sleep "$LOAD_SECONDS"
	kill -TERM "$app"
	wait "$app" || true
	read -r wrote_b _ <"$d/b/app.out"
	total=$((wrote_a + wrote_b))
	wait_for 60 at_least applied "$d/a/state" "$total" || die "run $run: the old primary did not apply seq $total"
	kill -TERM "$ship_b" "$recv_a"
	wait "$ship_b" "$recv_a" || true
	# Every line the application wrote, once, in order, on both sites.
	want="$d/want"
	{
		seq 1 "$wrote_a" | awk '{printf "a%09d the quick brown fox jumps over the lazy dog\n", $1}'
		seq 1 "$wrote_b" | awk '{printf "b%09d the quick brown fox jumps over the lazy dog\n", $1}'
	} >"$want"
	lost=0
	for f in "$d/a/app.log" "$d/b/app.log"; do
		cmp -s "$want" "$f" || lost=$((lost + $(diff "$want" "$f" | grep -c '^[<>]' || true)))
	done
	lost_all+=("$lost")
	echo "run $run: wrote $wrote_a + $wrote_b lines; unavailable ${unavail_s[-1]} s; promote ${switch_promote_s[-1]} s; report $report_records records; lines lost or duplicated: $lost"
done

echo
echo "ferry failover benchmark: $RUNS runs, $(nproc) CPUs, load average $(cut -d ' ' -f 1-3 /proc/loadavg); ferry $(git rev-parse --short HEAD)"
p_med=$(echo "${promote_s[*]}" | median)
u_med=$(echo "${unavail_s[*]}" | median)
sp_med=$(echo "${switch_promote_s[*]}" | median)
lost_max=$(printf '%s\n' "${lost_all[@]}" | sort -n | tail -n 1)
echo "promote, caught-up secondary: runs ${promote_s[*]} s, median $p_med s"
echo "switchover: write unavailability runs ${unavail_s[*]} s, median $u_med s; promote within it median $sp_med s"
awk "$awk_target"' BEGIN {
	target("promote wall time (median)", '"$p_med"', "<=", '"$TARGET_PROMOTE_S"', "%.3f", "%.0f", " s")
	target("write unavailability (median)", '"$u_med"', "<=", '"$TARGET_UNAVAIL_S"', "%.3f", "%.0f", " s")
	target("records lost or duplicated (worst run)", '"$lost_max"', "<=", '"$TARGET_LOST"', "%d", "%d", "")
}'

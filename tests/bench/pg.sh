#!/usr/bin/env bash
# PostgreSQL archiving benchmark (issue 22): pgbench TPS on a primary whose
# archive_command is cp, ferry push or pgBackRest's async archive-push, rows
# interleaved in one run, with the archive lag (pg_switch_wal -> a standby
# fed only by restore_command has replayed that LSN) and, at the end, a
# check that every standby holds exactly its primary's tables.
#
#   tests/bench/pg.sh                          # 3 rounds of pgbench -c4 -T20
#   RUNS=1 PG_SECONDS=8 tests/bench/pg.sh      # quick look
#   ROWS="cp ferry-ship" tests/bench/pg.sh     # some rows only
#
# Rows (each has its own primary, standby and archive):
#   cp          archive_command = cp to a directory, then sync of the file
#               and the directory (CP_SYNC=0: plain cp). Every other row
#               makes the file durable before archive_command returns, so
#               the baseline does too; plain cp would compare durability,
#               not the archivers. restore_command = cp.
#   ferry-own   ferry push with no shipper running: each push runs its own
#               shipper on the spool (etc/ferry-pg.toml settings: ack
#               "received", dir store). restore_command = ferry fetch.
#   ferry-ship  ferry push handing the file to a running ferry ship
#               (SPOOL/push.sock), same config.
#   ferry-ahead as ferry-ship, the shipper started with --pg-data PRIMARY:
#               it ships WAL files as soon as PostgreSQL marks them .ready,
#               before archive_command asks (docs/DIRTREE.md).
#   pgbackrest  pgbackrest archive-push, archive-async=y, zst level 1,
#               process-max=2, its own repo and stanza in the work dir;
#               restore_command = pgbackrest archive-get.
#   old-ferry-own, old-ferry-ship, old-ferry-ahead
#               the ferry rows with the binary OLD_BIN (an older build, to
#               compare old and new in one interleaved run); their
#               restore_command uses --wait as the new rows do if OLD_BIN's
#               fetch has it (older builds lack it: then none), and their
#               ferry.toml leaves out max_bytes (older samples had none).
#
# Environment:
#   RUNS        rounds (default 3); every row runs once per round, the
#               order rotating each round
#   PG_CLIENTS  pgbench -c (default 4); PG_JOBS pgbench -j (default 2)
#   PG_SECONDS  pgbench -T (default 20)
#   PG_SCALE    pgbench -i -s (default 10)
#   ROWS        the rows to run (default all, in the order above)
#   CP_SYNC     1 (default): the cp row syncs the file and directory
#   LAG_TIMEOUT give up waiting for a standby after this many seconds (120)
#   FETCH_WAIT  the ferry rows' restore_command runs ferry fetch --wait
#               FETCH_WAIT (default 5s; 0s: without --wait)
#   OLD_BIN     the ferry binary of the old-ferry-* rows
#   BENCH_DIR   work dir (default /tmp/ferry-bench); the run's clusters go
#               to BENCH_DIR/pg-run, removed at the start of the next run
#
# Every standby (all rows alike) runs with wal_retrieve_retry_interval =
# 100ms and recovery_prefetch = off: with the read-ahead of recovery
# prefetch, the startup process asks restore_command for the next segment
# before it replays the records it has read, so a restore_command that
# waits (ferry fetch --wait) holds back the replay of the segment before it
# (measured: lag 11.6-12.7 s with prefetch, 1.2-2.7 s without,
# FETCH_WAIT=10s, load 17-22).
#
# CPU per WAL file (as root, with cgroup v2 at /sys/fs/cgroup or
# /sys/fs/cgroup/unified): each row's clusters run in cgroup ROW/pg, and
# every archive_command (and the row's running ferry ship) moves itself
# into ROW/archive, every restore_command into ROW/restore, before it runs;
# children stay in their parent's cgroup, so pgBackRest's detached async
# processes are counted where they were started. Per round, the CPU used
# in each (cpu.stat usage_usec, from pgbench's start until the standby has
# replayed the switched WAL) is divided by the WAL files the primary
# archived (pg_stat_archiver); the report gives the medians ("arch ms/f",
# "rest ms/f"). Without root or cgroup v2 those columns print "-".
#
# As root, PostgreSQL and every archive command run as the postgres user
# (runuser). Each pgbench run starts right after a CHECKPOINT, so every row
# starts with the same full-page-write load. TPS is pgbench's "without
# initial connection time"; the figure per row is the median over rounds,
# and the ratios are medians of the per-round ratios. It is a measurement:
# it exits 0 when a target is missed, non-zero only when something could
# not be measured or a standby differs from its primary.
set -euo pipefail

RUNS=${RUNS:-3}
PG_CLIENTS=${PG_CLIENTS:-4}
PG_JOBS=${PG_JOBS:-2}
PG_SECONDS=${PG_SECONDS:-20}
PG_SCALE=${PG_SCALE:-10}
ROWS=${ROWS:-cp ferry-own ferry-ship ferry-ahead pgbackrest}
CP_SYNC=${CP_SYNC:-1}
LAG_TIMEOUT=${LAG_TIMEOUT:-120}
FETCH_WAIT=${FETCH_WAIT:-5s}
OLD_BIN=${OLD_BIN:-}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}

# Targets (issue 22).
TARGET_CP=0.95  # ferry TPS / cp TPS, at least
TARGET_PGBR=1.0 # ferry TPS / pgBackRest TPS, at least
TARGET_LAG=1.0  # archive lag in seconds, at most

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for v in RUNS PG_CLIENTS PG_JOBS PG_SECONDS PG_SCALE LAG_TIMEOUT; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive whole number"
done
read -r -a rows <<<"$ROWS"
for r in "${rows[@]}"; do
	case $r in
	cp | ferry-own | ferry-ship | ferry-ahead | pgbackrest) ;;
	old-ferry-own | old-ferry-ship | old-ferry-ahead) [[ -x $OLD_BIN ]] || die "row $r needs OLD_BIN, an older ferry binary (OLD_BIN=${OLD_BIN:-unset})" ;;
	*) die "ROWS: unknown row $r (cp ferry-own ferry-ship ferry-ahead pgbackrest old-ferry-own old-ferry-ship old-ferry-ahead)" ;;
	esac
done
[[ $FETCH_WAIT =~ ^[0-9]+(ms|s)$ ]] || die "FETCH_WAIT=$FETCH_WAIT: want a duration such as 2s, 500ms or 0s"
((BASH_VERSINFO[0] >= 5)) || die "bash 5 or later needed (EPOCHREALTIME), found $BASH_VERSION"
need go "install Go (see go.mod for the version)"
need awk "install awk"
pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
[[ -n $pgbin && -x $pgbin/pg_ctl ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install -y postgresql"
[[ " ${rows[*]} " != *" pgbackrest "* ]] || need pgbackrest "apt-get install -y pgbackrest (or leave the row out: ROWS=...)"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
mkdir -p "$BENCH_DIR/bin"
build_bins ferry
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain 2>/dev/null | head -n 1) ]] && commit+=" + uncommitted changes"

run_as=()
owner=$(id -un)
if ((EUID == 0)); then
	id postgres >/dev/null 2>&1 || die "as root PostgreSQL runs as the postgres user, which does not exist (Debian's postgresql package makes it)"
	run_as=(runuser -u postgres --)
	owner=postgres
fi
as_pg() { "${run_as[@]}" "$@"; }

# cg: this run's cgroup v2 directory (empty: CPU per WAL file not measured).
cg=
if ((EUID == 0)); then
	for base in /sys/fs/cgroup /sys/fs/cgroup/unified; do
		[[ -f $base/cgroup.controllers && -w $base ]] || continue
		# a killed run's cgroups: remove the empty ones
		for old in "$base"/ferry-bench.*/; do
			[[ -d $old ]] && find "$old" -depth -type d -exec rmdir {} + 2>/dev/null || true
		done
		cg=$base/ferry-bench.$$
		mkdir "$cg" 2>/dev/null || cg=
		break
	done
fi
[[ -n $cg ]] || echo "== CPU per WAL file not measured: needs root and cgroup v2 (/sys/fs/cgroup or /sys/fs/cgroup/unified)"
# cg_usage ROW PART prints the CPU microseconds used in the row's cgroup
# PART (archive or restore), or - when not measured.
cg_usage() {
	if [[ -n $cg ]]; then awk '$1 == "usage_usec" {print $2}' "$cg/$1/$2/cpu.stat"; else echo -; fi
}
# cg_join ROW PART: the shell text that moves the command's shell into the
# row's cgroup PART (nothing when not measured).
cg_join() { [[ -z $cg ]] || printf '%s' "echo \$\$ >$cg/$1/$2/cgroup.procs && "; }

work="$BENCH_DIR/pg-run"
if [[ -d $work ]]; then
	for d in "$work"/*/primary "$work"/*/standby; do
		[[ -f $d/postmaster.pid ]] && as_pg "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
	done
	rm -rf "$work"
fi
mkdir -p "$work"
chown "$owner" "$work"
cp "$ferry" "$work/ferry" # root's build directory may be private
chmod 755 "$work/ferry"
if [[ -n $OLD_BIN ]]; then
	cp "$OLD_BIN" "$work/ferry-old"
	chmod 755 "$work/ferry-old"
	old_wait=0
	"$work/ferry-old" fetch --help 2>&1 | grep -q -- --wait && old_wait=1
fi
# bin ROW is the ferry binary of a ferry row.
bin() { if [[ $1 == old-* ]]; then echo "$work/ferry-old"; else echo "$work/ferry"; fi; }

declare -A port sport ship_pid
cleanup() {
	local r
	# Under runuser the ferry process is runuser's child: stop it by the
	# pid in its spool's LOCK (if that pid is still a ferry: the LOCK
	# outlives the process), then runuser. A failed kill must not end
	# the trap under set -e before PostgreSQL is stopped.
	for r in "${!ship_pid[@]}"; do
		lock_pid=$(cat "$work/$r/spool/LOCK" 2>/dev/null || true)
		if [[ $lock_pid =~ ^[0-9]+$ && $(cat "/proc/$lock_pid/comm" 2>/dev/null) == ferry* ]]; then
			kill "$lock_pid" 2>/dev/null || true
		fi
		kill "${ship_pid[$r]}" 2>/dev/null || true
	done
	for r in "${rows[@]}"; do
		for d in "$work/$r/primary" "$work/$r/standby"; do
			[[ -f $d/postmaster.pid ]] && as_pg "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
		done
	done
	if [[ -n $cg && -d $cg ]]; then
		# processes just stopped (pgBackRest's async ones) may take a moment
		for _ in 1 2 3 4 5; do
			find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null && break
			sleep 1
		done
	fi
}
trap cleanup EXIT

psql_p() { as_pg "$pgbin/psql" -X -q -At -h "$work/$1/sock" -p "${port[$1]}" -d postgres -v ON_ERROR_STOP=1 -c "$2"; }
psql_s() { as_pg "$pgbin/psql" -X -q -At -h "$work/$1/sock" -p "${sport[$1]}" -d postgres -v ON_ERROR_STOP=1 -c "$2"; }

# The archive and restore commands of each row.
archive_cmd() {
	local r=$1 d=$work/$1
	cg_join "$r" archive
	case $r in
	cp)
		if ((CP_SYNC)); then
			echo "test ! -f $d/arch/%f && cp %p $d/arch/%f && sync $d/arch/%f $d/arch"
		else
			echo "test ! -f $d/arch/%f && cp %p $d/arch/%f"
		fi
		;;
	ferry-* | old-ferry-*) echo "$(bin "$r") push --quiet --config $d/ferry.toml %p %f" ;;
	pgbackrest) echo "pgbackrest --config=$d/pgbackrest.conf --stanza=bench archive-push %p" ;;
	esac
}
restore_cmd() {
	local r=$1 d=$work/$1
	cg_join "$r" restore
	case $r in
	cp) echo "cp $d/arch/%f %p" ;;
	ferry-* | old-ferry-*)
		if [[ $FETCH_WAIT =~ ^0+(ms|s)$ || ($r == old-* && $old_wait == 0) ]]; then
			echo "$(bin "$r") fetch --config $d/ferry.toml %f %p"
		else
			echo "$(bin "$r") fetch --wait $FETCH_WAIT --config $d/ferry.toml %f %p"
		fi
		;;
	pgbackrest) echo "pgbackrest --config=$d/pgbackrest-standby.conf --stanza=bench archive-get %f \"%p\"" ;;
	esac
}

pg_conf() { # pg_conf DATA PORT SOCK LINES...
	local data=$1 p=$2 s=$3
	shift 3
	{
		echo "port = $p"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$s'"
		printf '%s\n' "$@"
	} >>"$data/postgresql.conf"
}

# pg_start DATA ROW starts a cluster in the row's cgroup pg.
pg_start() {
	(
		[[ -z $cg ]] || echo "$BASHPID" >"$cg/$2/pg/cgroup.procs"
		as_pg "$pgbin/pg_ctl" -D "$1" -l "$1.log" -w -t 120 start >/dev/null
	) || die "pg_ctl start $1 failed: $(tail -n 20 "$1.log")"
}

# setup ROW makes the row's primary (pgbench tables), archive and standby.
setup() {
	local r=$1 d=$work/$1
	mkdir -p "$d"/{arch,spool,sock}
	chown -R "$owner" "$d"
	if [[ -n $cg ]]; then
		# the commands move themselves from pg to archive or restore, as
		# the postgres user: cgroup v2 wants the common parent's
		# cgroup.procs writable too
		mkdir -p "$cg/$r"/{pg,archive,restore}
		chown "$owner" "$cg/$r/cgroup.procs" "$cg/$r"/{pg,archive,restore}/cgroup.procs
	fi
	pick_port
	port[$r]=$port
	pick_port
	sport[$r]=$port
	case $r in
	ferry-* | old-ferry-*)
		cat >"$d/ferry.toml" <<-EOF
			# etc/ferry-pg.toml with a directory store
			stream = "pg-wal"
			store = "$d/arch"
			[ship]
			spool = "$d/spool"
			source = "none"
			ack = "received"
			max_age = "1s"
		EOF
		# etc/ferry-pg.toml's max_bytes since it was added; the old-ferry
		# rows keep the setting older samples had (the 4MiB default)
		[[ $r == old-* ]] || echo 'max_bytes = "16MiB"' >>"$d/ferry.toml"
		;;
	pgbackrest)
		local side conf
		for side in primary standby; do
			conf=$d/pgbackrest.conf
			[[ $side == primary ]] || conf=$d/pgbackrest-standby.conf
			cat >"$conf" <<-EOF
				[global]
				repo1-path=$d/pgbr-repo
				spool-path=$d/pgbr-spool-$side
				lock-path=$d/pgbr-lock-$side
				log-path=$d/pgbr-log
				log-level-console=warn
				log-level-file=off
				archive-async=y
				process-max=2
				compress-type=zst
				compress-level=1
				[bench]
				pg1-path=$d/$side
				pg1-port=$([[ $side == primary ]] && echo "${port[$r]}" || echo "${sport[$r]}")
				pg1-socket-path=$d/sock
			EOF
		done
		mkdir -p "$d/pgbr-repo" "$d/pgbr-log"
		chown -R "$owner" "$d"
		;;
	esac
	as_pg "$pgbin/initdb" -D "$d/primary" -A trust -U postgres --no-sync >/dev/null
	pg_conf "$d/primary" "${port[$r]}" "$d/sock" "wal_level = replica" "archive_mode = on" \
		"archive_command = '$(archive_cmd "$r")'" "max_wal_size = 1GB"
	pg_start "$d/primary" "$r"
	if [[ $r == pgbackrest ]]; then
		as_pg pgbackrest --config="$d/pgbackrest.conf" --stanza=bench stanza-create >/dev/null ||
			die "pgbackrest stanza-create failed"
	fi
	as_pg "$pgbin/pgbench" -h "$d/sock" -p "${port[$r]}" -i -q -s "$PG_SCALE" postgres >/dev/null 2>&1 || die "pgbench -i failed for $r"
	as_pg "$pgbin/pg_basebackup" -h "$d/sock" -p "${port[$r]}" -D "$d/standby" -X stream -c fast >/dev/null || die "pg_basebackup failed for $r"
	sed -i '/^port = /d; /^unix_socket_directories = /d; /^archive_command = /d; /^archive_mode = /d' "$d/standby/postgresql.conf"
	pg_conf "$d/standby" "${sport[$r]}" "$d/sock" "archive_mode = off" "hot_standby = on" \
		"restore_command = '$(restore_cmd "$r")'" "wal_retrieve_retry_interval = 100ms" "recovery_prefetch = off"
	as_pg touch "$d/standby/standby.signal"
	pg_start "$d/standby" "$r"
	case $r in
	ferry-ship | old-ferry-ship) start_ship "$r" ;;
	ferry-ahead | old-ferry-ahead) start_ship "$r" --pg-data "$d/primary" ;;
	esac
}

start_ship() {
	local r=$1 d=$work/$1 try
	shift
	# archive_command's ferry push may hold the spool (its own shipper)
	# while the primary archives the base backup's WAL: try again.
	for try in 1 2 3 4 5; do
		(
			[[ -z $cg ]] || echo "$BASHPID" >"$cg/$r/archive/cgroup.procs"
			exec "${run_as[@]}" "$(bin "$r")" ship --config "$d/ferry.toml" "$@"
		) >"$d/ship.log" 2>&1 &
		ship_pid[$r]=$!
		for _ in $(seq 200); do
			[[ -S $d/spool/push.sock ]] && return 0
			kill -0 "${ship_pid[$r]}" 2>/dev/null || break
			sleep 0.05
		done
		kill -0 "${ship_pid[$r]}" 2>/dev/null && die "ferry ship for $r does not serve $d/spool/push.sock: $(tail -n 20 "$d/ship.log")"
		grep -q "is in use by another ferry process" "$d/ship.log" || break
		sleep 1
	done
	die "ferry ship for $r exited (try $try): $(tail -n 20 "$d/ship.log")"
}

# wait_replayed ROW LSN waits until the row's standby has replayed LSN and
# prints the seconds since T0 (the global t0), or "timeout".
wait_replayed() {
	local r=$1 lsn=$2 deadline
	deadline=$(awk -v t="$(now)" -v s="$LAG_TIMEOUT" 'BEGIN {printf "%.0f", t + s}')
	while :; do
		if [[ $(psql_s "$r" "select pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn") == t ]]; then
			elapsed "$t0" "$(now)"
			return 0
		fi
		if awk -v t="$(now)" -v d="$deadline" 'BEGIN {exit !(t > d)}'; then
			echo timeout
			return 0
		fi
		sleep 0.02
	done
}

checksum_sql="select (select count(*) || ':' || md5(string_agg(aid || ':' || abalance, ',' order by aid)) from pgbench_accounts)
 || ' ' || (select md5(string_agg(bid || ':' || bbalance, ',' order by bid)) from pgbench_branches)
 || ' ' || (select md5(string_agg(tid || ':' || tbalance, ',' order by tid)) from pgbench_tellers)
 || ' ' || (select count(*) || ':' || coalesce(sum(delta), 0) from pgbench_history)"

echo "== setting up ${rows[*]} in $work (pgbench -i -s $PG_SCALE, base backup, standby each)"
for r in "${rows[@]}"; do
	t0=$(now)
	setup "$r"
	echo "   $r: primary port ${port[$r]}, standby port ${sport[$r]} ($(elapsed "$t0" "$(now)")s)"
done

declare -A tps lag acpu rcpu
for ((round = 1; round <= RUNS; round++)); do
	n=${#rows[@]}
	order=()
	for ((i = 0; i < n; i++)); do order+=("${rows[$(((i + round - 1) % n))]}"); done
	echo "== round $round/$RUNS: ${order[*]}"
	for r in "${order[@]}"; do
		psql_p "$r" "checkpoint" >/dev/null
		a0=$(cg_usage "$r" archive)
		r0=$(cg_usage "$r" restore)
		f0=$(psql_p "$r" "select archived_count from pg_stat_archiver")
		out=$(as_pg "$pgbin/pgbench" -h "$work/$r/sock" -p "${port[$r]}" -n -c "$PG_CLIENTS" -j "$PG_JOBS" -T "$PG_SECONDS" postgres 2>&1) ||
			die "pgbench failed for $r: $out"
		t=$(awk '/^tps = .*without initial connection time/ {print $3}' <<<"$out")
		[[ -n $t ]] || die "no tps line in pgbench's output for $r: $out"
		lsn=$(psql_p "$r" "select pg_switch_wal()")
		t0=$(now)
		l=$(wait_replayed "$r" "$lsn")
		a1=$(cg_usage "$r" archive)
		r1=$(cg_usage "$r" restore)
		f1=$(psql_p "$r" "select archived_count from pg_stat_archiver")
		files=$((f1 - f0))
		tps[$r]+="$t "
		lag[$r]+="$l "
		if [[ -n $cg ]] && ((files > 0)); then
			am=$(awk -v a="$a0" -v b="$a1" -v n="$files" 'BEGIN {printf "%.1f", (b - a) / 1000 / n}')
			rm=$(awk -v a="$r0" -v b="$r1" -v n="$files" 'BEGIN {printf "%.1f", (b - a) / 1000 / n}')
		else
			am=-
			rm=-
		fi
		acpu[$r]+="$am "
		rcpu[$r]+="$rm "
		printf '   %-11s %8.1f TPS   archive lag %ss   %3d WAL files, CPU ms per file: archive %s, restore %s\n' "$r" "$t" "$l" "$files" "$am" "$rm"
	done
done

echo "== checking every standby against its primary"
declare -A same
bad=0
for r in "${rows[@]}"; do
	want=$(psql_p "$r" "$checksum_sql")
	lsn=$(psql_p "$r" "select pg_switch_wal()")
	t0=$(now)
	l=$(wait_replayed "$r" "$lsn")
	got=$(psql_s "$r" "$checksum_sql")
	if [[ $l != timeout && $got == "$want" ]]; then
		same[$r]=identical
	else
		same[$r]="DIFFERS (standby replay ${l}s; primary $want, standby $got)"
		bad=1
	fi
	echo "   $r: ${same[$r]}"
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# ratio_median A B: the median of the per-round ratios of the rows' TPS.
ratio_median() {
	paste -d ' ' <(tr ' ' '\n' <<<"${tps[$1]}" | grep .) <(tr ' ' '\n' <<<"${tps[$2]}" | grep .) |
		awk '{print $1 / $2}' | tr '\n' ' ' | median
}
lag_median() { tr ' ' '\n' <<<"${lag[$1]}" | grep . | sed 's/timeout/999999/' | median | sed 's/^999999$/timeout/'; }

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "ferry pg: pgbench -c $PG_CLIENTS -j $PG_JOBS -T $PG_SECONDS -s $PG_SCALE, archive_command per row, median of $RUNS interleaved rounds"
echo "  ferry $commit; PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')$([[ " ${rows[*]} " == *" pgbackrest "* ]] && echo "; $(pgbackrest version)")"
echo "  $(nproc) CPUs ($cpu), load average $(cut -d ' ' -f 1-3 /proc/loadavg); $work on $(stat -f -c %T "$work"); cp row: $( ((CP_SYNC)) && echo "cp + sync FILE DIR" || echo "plain cp")"
printf '%-11s %9s %9s %9s %9s %10s %10s  %s\n' row TPS "x cp" "x pgbr" "lag s" "arch ms/f" "rest ms/f" "runs (TPS / lag s / arch ms/f / rest ms/f)"
for r in "${rows[@]}"; do
	m=$(median <<<"${tps[$r]}")
	rc=-
	rp=-
	[[ -n ${tps[cp]:-} ]] && rc=$(printf '%.2f' "$(ratio_median "$r" cp)")
	[[ -n ${tps[pgbackrest]:-} ]] && rp=$(printf '%.2f' "$(ratio_median "$r" pgbackrest)")
	ac=-
	rs=-
	if [[ -n $cg ]]; then
		ac=$(tr ' ' '\n' <<<"${acpu[$r]}" | { grep -vx -- - || true; } | median)
		rs=$(tr ' ' '\n' <<<"${rcpu[$r]}" | { grep -vx -- - || true; } | median)
	fi
	printf '%-11s %9.1f %9s %9s %9s %10s %10s  %s/ %s/ %s/ %s\n' "$r" "$m" "$rc" "$rp" "$(lag_median "$r")" "$ac" "$rs" "${tps[$r]}" "${lag[$r]}" "${acpu[$r]}" "${rcpu[$r]}"
done
for r in "${rows[@]}"; do
	[[ $r == ferry-* || $r == old-ferry-* ]] || continue
	[[ -n ${tps[cp]:-} ]] && awk -v r="$r" -v v="$(ratio_median "$r" cp)" -v w="$TARGET_CP" "$awk_target"' BEGIN {target(r " TPS / cp", v, ">=", w, "%.2f", "%.2f")}'
	[[ -n ${tps[pgbackrest]:-} ]] && awk -v r="$r" -v v="$(ratio_median "$r" pgbackrest)" -v w="$TARGET_PGBR" "$awk_target"' BEGIN {target(r " TPS / pgBackRest", v, ">=", w, "%.2f", "%.2f")}'
	l=$(lag_median "$r")
	[[ $l == timeout ]] && l=999999
	awk -v r="$r" -v v="$l" -v w="$TARGET_LAG" "$awk_target"' BEGIN {target(r " archive lag", v, "<=", w, "%.2f", "%.1f", "s")}'
done
echo "reproduce: cd $root && RUNS=$RUNS PG_CLIENTS=$PG_CLIENTS PG_JOBS=$PG_JOBS PG_SECONDS=$PG_SECONDS PG_SCALE=$PG_SCALE CP_SYNC=$CP_SYNC FETCH_WAIT=$FETCH_WAIT${OLD_BIN:+ OLD_BIN=$OLD_BIN} ROWS=\"${rows[*]}\" tests/bench/pg.sh"
exit "$bad"

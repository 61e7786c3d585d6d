#!/usr/bin/env bash
# Two-way sync benchmark (issue 19): ferry sync against unison and syncthing
# on the same two-sided churn of a Maildir-like tree of FILES messages
# (default 10,000), two sites on this machine (two local directories).
#
# Each row copies the same base tree to sites A and B, starts the tool on
# the pair, waits until it is idle, then `treegen twoway` changes both trees
# during the same WINDOW (deliveries, reads, flag renames, moves between
# folders, deletes, rewrites and a few true conflicts: the same message
# changed on both sides at the same moment), and compares the two trees
# every 250 ms until they are identical. Measured per row: the time from the
# end of the churn until both trees are identical, the bytes moved, the CPU
# time of the tool's processes from the start of the churn until then, and
# the updates lost. README.md says how each is measured.
#
#   tests/bench/sync.sh                        # 10,000 messages, median of 3
#   FILES=2000 RUNS=1 tests/bench/sync.sh      # quick look
#   ROWS="unison syncthing" tests/bench/sync.sh
#
# Environment:
#   FILES           messages in the base tree (default 10000)
#   SEED            tree and churn seed (default 1)
#   RUNS            rounds; each runs every row once; medians are reported (default 3)
#   ROWS            rows to run, from: unison syncthing ferry (default all three)
#   WINDOW          the churn's length on both trees (default 10s)
#   TIMEOUT         give up when the trees are not identical this long after the churn (default 5m)
#   SETTLE          identical trees that lack updates count as converged once unchanged this long (default 75s: longer than
#                   syncthing's 1-minute retry of an item it could not sync)
#   UNISON_SLEEP    seconds between two unison runs (default 1)
#   ST_RESCAN       syncthing's rescanIntervalS (default 10)
#   ST_WATCH_DELAY  syncthing's fsWatcherDelayS (default 1; syncthing's own default is 10)
#   BENCH_DIR       work dir (default /tmp/ferry-bench); the run's files go in a
#                   temp dir sync-XXXXXX under it, removed at exit
#   KEEP            1 keeps that dir's logs, configs and reports (the trees are removed)
#
# It needs unison and syncthing (Debian packages unison, syncthing; installed
# with apt-get when missing and run as root). ferry's row needs a ferry with
# the sync verb; without it the row prints "ferry sync: not available in
# this build" and the other two are still measured. It is a measurement: it
# exits 0 when a target is missed, non-zero only when something could not be
# measured.
set -euo pipefail

FILES=${FILES:-10000}
SEED=${SEED:-1}
RUNS=${RUNS:-3}
ROWS=${ROWS:-unison syncthing ferry}
WINDOW=${WINDOW:-10s}
TIMEOUT=${TIMEOUT:-5m}
SETTLE=${SETTLE:-75s}
UNISON_SLEEP=${UNISON_SLEEP:-1}
ST_RESCAN=${ST_RESCAN:-10}
ST_WATCH_DELAY=${ST_WATCH_DELAY:-1}
KEEP=${KEEP:-}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}
SIZE=$FILES # lib.sh checks a SIZE; here it is the message count, not bytes

# Targets (issue 19): ferry against the better of unison and syncthing.
TARGET_TIME_RATIO=0.5  # ferry converge time / the better one's, at most
TARGET_BYTES_RATIO=1.0 # ferry bytes moved / the better one's, at most

# ferry_site_config SITE PEER TREE STORE DIR prints site SITE's config for
# `ferry sync --config`: its tree, the store both sites share, and its
# spool and state under DIR. The one place to change when the config shape
# of `ferry sync` changes.
ferry_site_config() {
	local site=$1 peer=$2 tree=$3 store=$4 dir=$5
	cat <<-EOF
		store = "$store"

		[site]
		id = "$site"

		[sync]
		data = "dir:$tree"
		stream = "mail"
		spool = "$dir/spool"
		state = "$dir/state"

		[[sync.peers]]
		id = "$peer"

		# As etc/ferry-sync-a.toml: seal and poll often, as a live sync pair should.
		[ship]
		max_age = "200ms"

		[receive]
		poll_min = "100ms"
		poll_max = "300ms"
	EOF
}

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $FILES =~ ^[1-9][0-9]*$ ]] || die "FILES=$FILES: want a positive whole number"
[[ $UNISON_SLEEP =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "UNISON_SLEEP=$UNISON_SLEEP: want seconds, e.g. 1 or 0.5"
[[ $ST_RESCAN =~ ^[1-9][0-9]*$ ]] || die "ST_RESCAN=$ST_RESCAN: want whole seconds"
[[ $ST_WATCH_DELAY =~ ^[1-9][0-9]*$ ]] || die "ST_WATCH_DELAY=$ST_WATCH_DELAY: want whole seconds"
for row in $ROWS; do
	[[ $row == unison || $row == syncthing || $row == ferry ]] || die "ROWS: unknown row $row (want unison, syncthing, ferry)"
done
bench_init
need curl "install curl (syncthing's REST API)"
need jq "install jq (syncthing's REST API answers)"
for tool in unison syncthing; do
	[[ " $ROWS " == *" $tool "* ]] || continue
	if ! command -v "$tool" >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "== installing $tool (apt-get install -y $tool)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y "$tool" >/dev/null || die "apt-get install -y $tool failed"
	fi
	need "$tool" "install it: apt-get install -y $tool (Debian package $tool)"
done
build_bins ferry treegen

# Is there a ferry sync in this build? An unknown verb says so.
ferry_sync=1
if [[ $("$ferry" sync --help 2>&1 || true) == *'unknown command "sync"'* ]]; then
	ferry_sync=""
fi

work=$(mktemp -d "$BENCH_DIR/sync-XXXXXX")
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
		rm -rf "$work"/base "$work"/*/A "$work"/*/B
		echo "logs kept in $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

# start NAME DIR CMD...: runs CMD in the background under treegen cpu (its
# CPU time and that of every process it waited for, at exit, in
# DIR/NAME.cpu); output to DIR/NAME.log. Sets pid.
start() {
	local name=$1 dir=$2
	shift 2
	"$treegen" cpu -o "$dir/$name.cpu" -- "$@" >"$dir/$name.log" 2>&1 &
	pid=$!
	started[$pid]=$name
}

# stop PID...: SIGTERM, again after 30 s; the third (after 10 s more) makes
# treegen cpu kill the command.
stop() {
	local pid i
	for pid in "$@"; do
		for i in 300 100 50; do
			kill "$pid" 2>/dev/null || true
			while ((i-- > 0)) && kill -0 "$pid" 2>/dev/null; do
				sleep 0.1
			done
			kill -0 "$pid" 2>/dev/null || break
		done
		wait "$pid" 2>/dev/null || true
		unset "started[$pid]"
	done
}

# proxy DIR NAME TO: a counting proxy in front of TO, keeping its counts in
# DIR/NAME.live; sets proxy_pid, proxy_addr.
proxy() {
	local d=$1 name=$2 i
	"$treegen" proxy -listen 127.0.0.1:0 -to "$3" -stats "$d/$name.stats" -live "$d/$name.live" \
		-addr-file "$d/$name.addr" 2>"$d/$name.log" &
	proxy_pid=$!
	started[$proxy_pid]=$name
	for ((i = 0; i < 100; i++)); do
		[[ -s $d/$name.addr ]] && break
		sleep 0.05
	done
	proxy_addr=$(cat "$d/$name.addr") || die "the counting proxy did not start ($d/$name.log)"
}

# The unison row: site B runs `unison -socket` (its own archive dir), site
# A runs unison in batch mode in a loop against it, through the proxy, as
# users run it from cron or a loop: -batch -times -prefer newer
# -copyonconflict, a short sleep between runs. Debian's unison has no
# unison-fsmonitor, so -repeat watch is not an option.
unison_args=(-batch -times -prefer newer -copyonconflict -terse)
start_unison() { # start_unison DIR
	local d=$1 port i
	mkdir -p "$d/unison-a" "$d/unison-b"
	port=$("$treegen" freeport)
	start unison-server "$d" env UNISON="$d/unison-b" unison -socket "$port" -listen 127.0.0.1
	tool_pids=("$pid")
	for ((i = 0; i < 100; i++)); do
		grep -q 'server started' "$d/unison-server.log" 2>/dev/null && break
		sleep 0.1
	done
	grep -q 'server started' "$d/unison-server.log" || die "unison -socket did not start ($d/unison-server.log)"
	proxy "$d" proxy "127.0.0.1:$port"
	proxies=("$proxy_pid")
	lives=("$d/proxy.live")
	root_b="socket://$proxy_addr/$d/B"
	# The first run builds both archives (untimed; the trees are equal).
	UNISON="$d/unison-a" unison "$d/A" "$root_b" "${unison_args[@]}" -logfile "$d/unison.log" >"$d/unison-first.log" 2>&1 ||
		die "the first unison run failed ($d/unison-first.log)"
	cat >"$d/unison-loop.sh" <<-EOF
		trap 'kill \$c 2>/dev/null; wait \$c; exit 0' TERM INT
		export UNISON="$d/unison-a"
		while :; do
		    unison "$d/A" "$root_b" ${unison_args[*]} -logfile "$d/unison.log" & c=\$!
		    wait \$c && rc=0 || rc=\$?
		    echo "\$EPOCHREALTIME rc=\$rc" >>"$d/unison-runs.log"
		    sleep $UNISON_SLEEP & c=\$!
		    wait \$c
		done
	EOF
	start unison-loop "$d" bash "$d/unison-loop.sh"
	tool_pids+=("$pid")
	sleep 2
}

# The syncthing row: two instances with their own homes, each listening
# on a loopback port, each knowing the other at the address of a counting
# proxy in front of it; no discovery, relays, NAT or usage reports. The
# folder "mail" is shared with the fs watcher on (fsWatcherDelayS
# ST_WATCH_DELAY) and rescanIntervalS ST_RESCAN. setLowPriority is off, as
# the other tools run at normal priority.
st_api() { # st_api SITE PATH: GET the REST API of site a or b
	curl -fsS -H "X-API-Key: $st_key" "http://127.0.0.1:${st_gui[$1]}$2"
}
# st_config FILE TREE PEER-ID PEER-NAME PEER-ADDR LISTEN-PORT GUI-PORT edits
# the config.xml `syncthing generate` wrote: the folder "mail" and the peer
# device from the generated <defaults> (so every setting not named here is
# syncthing's default, maxConflicts 10 among them), the options above, the
# GUI's port and API key. It fails when an edit finds nothing to change.
st_config() {
	local f=$1 tree=$2 peer=$3 peer_name=$4 peer_addr=$5 listen=$6 gui=$7 e
	awk -v tree="$tree" -v peer="$peer" -v pname="$peer_name" -v paddr="$peer_addr" \
		-v rescan="$ST_RESCAN" -v delay="$ST_WATCH_DELAY" '
	NR == FNR {
		if ($0 ~ /<defaults>/) indef = 1
		if (indef && $0 ~ /^ *<folder id=""/) f = 1
		if (f) folder = folder $0 "\n"
		if (f && $0 ~ /<\/folder>/) f = 0
		if (indef && $0 ~ /^ *<device id=""/) dv = 1
		if (dv) device = device $0 "\n"
		if (dv && $0 ~ /<\/device>/) dv = 0
		next
	}
	{ print }
	FNR == 1 {
		n = sub(/id="" label="" path="~"/, "id=\"mail\" label=\"mail\" path=\"" tree "\"", folder)
		n += sub(/rescanIntervalS="[0-9]+"/, "rescanIntervalS=\"" rescan "\"", folder)
		n += sub(/fsWatcherEnabled="[a-z]+"/, "fsWatcherEnabled=\"true\"", folder)
		n += sub(/fsWatcherDelayS="[0-9]+"/, "fsWatcherDelayS=\"" delay "\"", folder)
		n += sub(/<minDiskFree/, "<device id=\"" peer "\" introducedBy=\"\"><encryptionPassword></encryptionPassword></device>\n            <minDiskFree", folder)
		n += sub(/id=""/, "id=\"" peer "\" name=\"" pname "\"", device)
		n += sub(/<address>dynamic<\/address>/, "<address>tcp://" paddr "</address>", device)
		if (n != 7) { print "st_config: the generated <defaults> are not as expected" > "/dev/stderr"; exit 1 }
		printf "%s%s", folder, device
	}' "$f" "$f" >"$f.new" || die "cannot edit $f"
	for e in "s|<listenAddress>default</listenAddress>|<listenAddress>tcp://127.0.0.1:$listen</listenAddress>|" \
		's|<globalAnnounceEnabled>true<|<globalAnnounceEnabled>false<|' \
		's|<localAnnounceEnabled>true<|<localAnnounceEnabled>false<|' \
		's|<relaysEnabled>true<|<relaysEnabled>false<|' \
		's|<natEnabled>true<|<natEnabled>false<|' \
		's|<urAccepted>0<|<urAccepted>-1<|' \
		's|<startBrowser>true<|<startBrowser>false<|' \
		's|<autoUpgradeIntervalH>[0-9]*<|<autoUpgradeIntervalH>0<|' \
		's|<crashReportingEnabled>true<|<crashReportingEnabled>false<|' \
		's|<setLowPriority>true<|<setLowPriority>false<|' \
		's|<reconnectionIntervalS>[0-9]*<|<reconnectionIntervalS>2<|' \
		"s|<address>[0-9.]*:[0-9]*</address>|<address>127.0.0.1:$gui</address>|" \
		"s|<apikey>[^<]*</apikey>|<apikey>$st_key</apikey>|"; do
		sed -i "$e" "$f.new"
		# Each edit must have changed something: its replacement is there now.
		e=${e#s|*|}
		grep -qF "${e%|}" "$f.new" || die "st_config: no effect in $f: $e"
	done
	mv "$f.new" "$f"
}

declare -A st_id st_gui st_listen st_proxy
start_syncthing() { # start_syncthing DIR
	local d=$1 s peer i ready
	st_key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	for s in a b; do
		syncthing generate --home "$d/st-$s" --no-default-folder --skip-port-probing >"$d/st-$s-generate.log" 2>&1 ||
			die "syncthing generate failed ($d/st-$s-generate.log)"
		st_id[$s]=$(syncthing serve --home "$d/st-$s" --device-id) || die "syncthing --device-id failed"
		st_gui[$s]=$("$treegen" freeport)
		st_listen[$s]=$("$treegen" freeport)
	done
	proxies=() lives=()
	for s in a b; do
		proxy "$d" "proxy-$s" "127.0.0.1:${st_listen[$s]}"
		st_proxy[$s]=$proxy_addr
		proxies+=("$proxy_pid")
		lives+=("$d/proxy-$s.live")
	done
	tool_pids=()
	for s in a b; do
		peer=b
		[[ $s == a ]] || peer=a
		mkdir -p "$d/${s^^}/.stfolder"
		st_config "$d/st-$s/config.xml" "$d/${s^^}" "${st_id[$peer]}" "site-$peer" "${st_proxy[$peer]}" \
			"${st_listen[$s]}" "${st_gui[$s]}"
		STNODEFAULTFOLDER=1 start "syncthing-$s" "$d" syncthing serve --home "$d/st-$s" --no-browser --no-restart \
			--no-upgrade --no-default-folder
		tool_pids+=("$pid")
	done
	# Ready: connected, both folders idle with nothing needed, each side
	# 100% complete for the other (the initial scans and index exchange
	# of the equal trees are done).
	for ((i = 0; i < 1200; i++)); do
		ready=1
		for s in a b; do
			peer=b
			[[ $s == a ]] || peer=a
			st_api "$s" /rest/system/connections 2>/dev/null | jq -e --arg p "${st_id[$peer]}" '.connections[$p].connected' >/dev/null 2>&1 || ready=""
			st_api "$s" '/rest/db/status?folder=mail' 2>/dev/null | jq -e '.state == "idle" and .needTotalItems == 0' >/dev/null 2>&1 || ready=""
			st_api "$s" "/rest/db/completion?folder=mail&device=${st_id[$peer]}" 2>/dev/null | jq -e '.completion == 100' >/dev/null 2>&1 || ready=""
			[[ -n $ready ]] || break
		done
		[[ -n $ready ]] && break
		kill -0 "${tool_pids[0]}" 2>/dev/null && kill -0 "${tool_pids[1]}" 2>/dev/null ||
			die "syncthing exited ($d/syncthing-a.log, $d/syncthing-b.log)"
		sleep 0.5
	done
	[[ -n $ready ]] || die "syncthing did not become idle and in sync within 10 minutes ($d/syncthing-*.log)"
	st_settings=$(st_api a /rest/config/folders/mail | jq -r '"folder: maxConflicts \(.maxConflicts), fsWatcherDelayS \(.fsWatcherDelayS), rescanIntervalS \(.rescanIntervalS)"') ||
		die "syncthing: cannot read the folder's config back"
	sleep 2
}

# The ferry row: two `ferry sync` processes, one per site, sharing a
# directory store.
start_ferry() { # start_ferry DIR
	local d=$1 s peer
	tool_pids=() proxies=() lives=()
	for s in a b; do
		peer=b
		[[ $s == a ]] || peer=a
		mkdir -p "$d/ferry-$s"
		ferry_site_config "$s" "$peer" "$d/${s^^}" "$d/store" "$d/ferry-$s" >"$d/ferry-$s.toml"
		start "ferry-$s" "$d" "$ferry" sync --config "$d/ferry-$s.toml"
		tool_pids+=("$pid")
	done
	"$treegen" watching -pid "${tool_pids[0]}" -path "$d/A" || die "ferry sync is not watching $d/A ($d/ferry-a.log)"
	"$treegen" watching -pid "${tool_pids[1]}" -path "$d/B" || die "ferry sync is not watching $d/B ($d/ferry-b.log)"
	# Untimed, as unison's first run and syncthing's initial scan are: each
	# site ships its first scan of the tree, and the churn starts once each
	# site has applied all of the other's and neither stream grows.
	local last_a last_b prev="" now i
	for ((i = 0; i < 1200; i++)); do
		last_a=$(ferry_last_seq "$d/store" mail@a) last_b=$(ferry_last_seq "$d/store" mail@b)
		now="$last_a/$last_b"
		if [[ $last_a -gt 0 && $last_b -gt 0 && $now == "$prev" ]] &&
			[[ $(ferry_applied "$d/ferry-b/state/peer-a") == "$last_a" && $(ferry_applied "$d/ferry-a/state/peer-b") == "$last_b" ]]; then
			break
		fi
		prev=$now
		sleep 0.5
	done
	((i < 1200)) || die "ferry sync: the sites did not apply each other's first scan within 10 minutes ($d/ferry-*.log)"
	sleep 1
}

# ferry_last_seq STORE STREAM prints the stream's newest seq in STORE (0 if none).
ferry_last_seq() { # ls fails loudly on a stream with no segment yet: that is 0
	{ "$ferry" ls --store "$1" --stream "$2" --json 2>/dev/null || true; } | jq -rs 'map(.last_seq) | max // 0'
}

# ferry_applied STATE prints the seq a receiver's state has applied (0 if none).
ferry_applied() { # a state not made yet is 0
	{ "$ferry" status --state "$1" --json 2>/dev/null || true; } | jq -rs '.[0].applied_seq // 0'
}

label() {
	case $1 in
	unison) echo "unison (batch loop)" ;;
	syncthing) echo "syncthing" ;;
	ferry) echo "ferry sync" ;;
	esac
}

# Per row, every run's figures, in round order.
declare -A v_conv v_bytes v_cpu v_lost v_extra v_notes
run_row() { # run_row ROW ROUND
	local row=$1 round=$2 d="$work/$1-$2" out storedirs=() field
	mkdir -p "$d"
	cp -a "$work/base" "$d/A"
	cp -a "$work/base" "$d/B"
	sync # the copies' writeback must not land in the timed part
	echo "== round $round/$RUNS: $(label "$row")"
	case $row in
	unison) start_unison "$d" ;;
	syncthing) start_syncthing "$d" ;;
	ferry) start_ferry "$d" ;;
	esac
	[[ $row != ferry ]] || storedirs=(-storedir "$d/store")
	local args=(-a "$d/A" -b "$d/B" -seed "$SEED" -window "$WINDOW" -timeout "$TIMEOUT" -settle "$SETTLE"
		-report "$d/report.txt" "${storedirs[@]}")
	local p
	for p in "${lives[@]}"; do args+=(-live "$p"); done
	for p in "${tool_pids[@]}"; do args+=(-pid "$p"); done
	if ! "$treegen" twoway "${args[@]}" >"$d/twoway.out" 2>"$d/twoway.err"; then
		cat "$d/twoway.err" >&2
		die "$(label "$row"): the churn or the comparison failed (above; logs in $d)"
	fi
	sed 's/^/   /' "$d/twoway.err"
	stop "${tool_pids[@]}"
	[[ ${#proxies[@]} == 0 ]] || stop "${proxies[@]}"

	field() { awk -v k="$1" '{for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2)}' "$d/twoway.out"; }
	if [[ $(field converged) == 1 ]]; then
		v_conv[$row]+=" $(field converge_s)"
	else
		v_conv[$row]+=" inf"
		echo "   $(label "$row"): the trees were not identical ${TIMEOUT} after the churn ($(grep -m1 'trees differ' "$d/report.txt" || true))"
	fi
	v_bytes[$row]+=" $(field bytes)"
	v_cpu[$row]+=" $(field cpu_s)"
	v_lost[$row]+=" $(field lost)"
	v_extra[$row]+=" $(field extra)"
	case $row in
	unison)
		out="$(wc -l <"$d/unison-runs.log") unison runs ($(grep -vc 'rc=0$' "$d/unison-runs.log" || true) with a non-zero exit)"
		out+=", $(grep -c 'extra in A: .* (conflict_on_' "$d/report.txt" || true) conflict copies (\" (conflict_on_\")"
		;;
	syncthing)
		out="$(grep -c 'extra in A: .*sync-conflict' "$d/report.txt" || true) conflict copies (.sync-conflict-); $st_settings"
		;;
	ferry)
		out="store $(find "$d/store" -type f 2>/dev/null | wc -l || true) files"
		;;
	esac
	v_notes[$row]+="    run $round: $(field lost) lost ($(field lost_conflicts) of them in conflicts), $(field extra) extra files, $out"$'\n'
	if [[ $KEEP == 1 ]]; then
		cp "$d/twoway.out" "$d/twoway.err" "$d/report.txt" "$d/.." 2>/dev/null || true
	fi
	rm -rf "$d/A" "$d/B"
}

median() { # median VALUES...: "inf" sorts last
	printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] == "inf" || a[NR / 2 + 1] == "inf") ? "inf" : (a[NR / 2] + a[NR / 2 + 1]) / 2
		print m
	}'
}

echo "== base tree: $FILES messages (treegen mailtree, seed $SEED)"
tree_line=$("$treegen" mailtree -dir "$work/base" -seed "$SEED" -files "$FILES") || die "treegen mailtree failed"
tree_bytes=$(awk '{for (i = 2; i <= NF; i++) if ($i ~ /^bytes=/) print substr($i, 7)}' <<<"$tree_line")

read -r -a rows <<<"$ROWS"
ran=()
for row in "${rows[@]}"; do
	if [[ $row == ferry && -z $ferry_sync ]]; then
		echo "ferry sync: not available in this build"
		continue
	fi
	ran+=("$row")
done
((${#ran[@]} > 0)) || die "no row to run"
for ((round = 1; round <= RUNS; round++)); do
	if ((round % 2 == 1)); then
		for row in "${ran[@]}"; do run_row "$row" "$round"; done
	else
		for ((i = ${#ran[@]} - 1; i >= 0; i--)); do run_row "${ran[i]}" "$round"; done
	fi
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git status --porcelain 2>/dev/null | head -n 1) ]] && commit+=" + uncommitted changes"
churn=$(awk '{for (i = 2; i <= NF; i++) if ($i ~ /^(changes_a|changes_b|updates|conflicts|written_bytes)=/) printf "%s ", $i}' "$(ls "$work"/*/twoway.out | head -n 1)")
echo
echo "ferry sync vs unison and syncthing: $FILES-message Maildir tree ($tree_bytes bytes), churn on both sites over $WINDOW, median of $RUNS"
echo "  churn: $churn(seed $SEED)"
echo "  ferry $commit; $(go version | cut -d' ' -f3), unison $(unison -version | awk '{print $3}'), syncthing $(syncthing --version | awk '{print $2}')"
[[ " ${ran[*]} " != *" unison "* ]] || echo "  unison: a batch run every ${UNISON_SLEEP}s after the last (${unison_args[*]}) over -socket"
[[ " ${ran[*]} " != *" syncthing "* ]] || echo "  syncthing: fsWatcherDelayS $ST_WATCH_DELAY, rescanIntervalS $ST_RESCAN, other folder settings syncthing's defaults"
echo "  $(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), load average $(cut -d ' ' -f 1-3 /proc/loadavg); trees on $(stat -f -c %T "$BENCH_DIR")"
echo
printf '%-20s %11s %10s %8s %6s   %-24s %s\n' "" "converge s" "MB moved" "CPU s" "lost" "all runs, converge s" "lost"
declare -A med_conv med_bytes med_cpu med_lost
for row in "${ran[@]}"; do
	# shellcheck disable=SC2086 # the lists are space-separated numbers
	{
		med_conv[$row]=$(median ${v_conv[$row]})
		med_bytes[$row]=$(median ${v_bytes[$row]})
		med_cpu[$row]=$(median ${v_cpu[$row]})
		med_lost[$row]=$(median ${v_lost[$row]})
	}
	awk -v l="$(label "$row")" -v c="${med_conv[$row]}" -v b="${med_bytes[$row]}" -v cpu="${med_cpu[$row]}" \
		-v lost="${med_lost[$row]}" -v all="${v_conv[$row]# }" -v alllost="${v_lost[$row]# }" 'BEGIN {
		printf "%-20s %11s %10.2f %8.2f %6s   %-24s %s\n", l, (c == "inf" ? "none" : sprintf("%.2f", c)), b / 1e6, cpu, lost, all, alllost
	}'
done
echo
for row in "${ran[@]}"; do
	echo "  $(label "$row"):"
	printf '%s' "${v_notes[$row]}"
done
if [[ " ${ran[*]} " == *" ferry "* ]]; then
	best_conv="" best_bytes="" best_cpu=""
	for row in unison syncthing; do
		[[ -n ${med_conv[$row]:-} ]] || continue
		best_conv=$(printf '%s\n' ${best_conv:+"$best_conv"} "${med_conv[$row]}" | sort -g | head -n 1)
		best_bytes=$(printf '%s\n' ${best_bytes:+"$best_bytes"} "${med_bytes[$row]}" | sort -g | head -n 1)
		best_cpu=$(printf '%s\n' ${best_cpu:+"$best_cpu"} "${med_cpu[$row]}" | sort -g | head -n 1)
	done
	if [[ -n $best_conv ]]; then
		awk -v fc="${med_conv[ferry]}" -v bc="$best_conv" -v fb="${med_bytes[ferry]}" -v bb="$best_bytes" \
			-v fcpu="${med_cpu[ferry]}" -v bcpu="$best_cpu" -v lost="${med_lost[ferry]}" \
			-v tt="$TARGET_TIME_RATIO" -v tb="$TARGET_BYTES_RATIO" "$awk_target"'
		BEGIN {
			if (fc == "inf" || bc == "inf") printf "target  converge time, ferry / better of the others: %s vs %s s   want <= %.1fx   %s\n", fc, bc, tt, (fc == "inf" ? "MISSED" : "OK")
			else target("converge time, ferry / better of the others", fc / bc, "<=", tt, "%.3f", "%.2f")
			target("bytes moved, ferry / better of the others", fb / bb, "<=", tb, "%.3f", "%.2f")
			target("updates lost by ferry (median)", lost, "<=", 0, "%d", "%d")
			printf "info    CPU s, ferry / better of the others = %.2f\n", fcpu / bcpu
		}'
	fi
fi
echo "reproduce: cd $root && FILES=$FILES SEED=$SEED RUNS=$RUNS ROWS=\"$ROWS\" WINDOW=$WINDOW tests/bench/$bench_name"

#!/usr/bin/env bash
# Real-world check (issue 24): a real Cyrus IMAP server whose mail store is
# replicated by ferry's dir: source and applier, then served from the
# replica by a second Cyrus; both must show an IMAP client the same mail.
#
#   1. ferry ship --source dir:PRIMARY (into a dir store) and ferry receive
#      --apply dir:REPLICA start on an empty tree;
#   2. Cyrus (Debian's cyrus-imapd, its own imapd.conf and cyrus.conf, IMAP
#      on a free 127.0.0.1 port) starts on PRIMARY: the config directory
#      (mailboxes.db, seen and subscription dbs, ...) in PRIMARY/conf, the
#      partition (cyrus.index, cyrus.cache, one file per message) in
#      PRIMARY/spool; its sockets, locks and proc files live outside it;
#   3. tests/mail/imapdriver delivers MESSAGES messages (APPEND) to two
#      users' folders, changes flags, expunges, moves messages, renames
#      folders (one with a child) and delivers again, then dumps what an
#      IMAP client sees: folders, UIDVALIDITY, UIDNEXT, counts, and per
#      message UID, flags, internal date, size and the body's SHA-256;
#   4. Cyrus stops; once the replica equals PRIMARY (treegen cmp), ferry
#      stops and a second Cyrus starts on REPLICA (own config, port and
#      runtime dir) and is dumped the same way. Any difference is printed
#      and the script exits 1.
# It prints the bytes ferry shipped (the dir store's size).
#
# Cyrus runs unprivileged: as root, every process of the check (Cyrus,
# ferry) runs as the cyrus user of Debian's package (setpriv); otherwise as
# the caller, with cyrus_user set to the caller. Nothing is left running:
# every process started is stopped on exit, and no system service is used.
#
#   tests/mail/run.sh                  # 3,000 messages, about a minute
#   MESSAGES=500 tests/mail/run.sh
#
# Environment: MESSAGES (default 3000), SEED (1), KEEP=1 keeps the work dir
# (logs, configs, dumps; a failed run keeps it anyway), MAIL_TMP (parent
# of the work dir, default /tmp), LAYOUT (uuid, Cyrus 3.6's default: a
# folder's directory is named by its UUID, so a folder rename only changes
# mailboxes.db; or legacy: mailbox_legacy_dirs, a directory per folder
# name, as stores created by older Cyrus versions keep, so a folder rename
# renames directories).
# It needs go, cyrus-imapd and sasl2-bin (installed with apt-get when
# missing and run as root).
set -euo pipefail

MESSAGES=${MESSAGES:-3000}
SEED=${SEED:-1}
KEEP=${KEEP:-}
LAYOUT=${LAYOUT:-uuid}
MAIL_TMP=${MAIL_TMP:-/tmp}
USERS=alice,bob
CYRUS_BIN=/usr/lib/cyrus/bin

die() {
	echo "tests/mail/run.sh: $*" >&2
	exit 1
}
[[ $MESSAGES =~ ^[1-9][0-9]*$ ]] || die "MESSAGES=$MESSAGES: want a positive whole number"
[[ $SEED =~ ^[0-9]+$ ]] || die "SEED=$SEED: want a whole number"
case $LAYOUT in
uuid) legacy_dirs=no ;;
legacy) legacy_dirs=yes ;;
*) die "LAYOUT=$LAYOUT: want uuid or legacy" ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if [[ ! -x $CYRUS_BIN/master ]] || ! command -v saslpasswd2 >/dev/null; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "== installing cyrus-imapd and sasl2-bin (apt-get)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cyrus-imapd sasl2-bin >/dev/null ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cyrus-imapd sasl2-bin >/dev/null; } ||
			die "apt-get install cyrus-imapd sasl2-bin failed"
	fi
fi
[[ -x $CYRUS_BIN/master ]] || die "no $CYRUS_BIN/master: install Debian's cyrus-imapd (apt-get install cyrus-imapd)"
command -v saslpasswd2 >/dev/null || die "no saslpasswd2: install Debian's sasl2-bin (apt-get install sasl2-bin)"

if [[ $(id -u) == 0 ]]; then
	runuser=cyrus
	id cyrus >/dev/null 2>&1 || die "no cyrus user: Debian's cyrus-common creates it; reinstall cyrus-imapd"
	as=(setpriv --reuid=cyrus --regid=mail --init-groups --)
else
	runuser=$(id -un)
	as=()
fi

work=$(mktemp -d "$MAIL_TMP/ferry-mail-XXXXXX")
chmod 755 "$work"
declare -A started # pid -> name
cleanup() {
	local rc=$? pid
	for pid in "${!started[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${!started[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ $KEEP == 1 || $rc != 0 ]]; then
		echo "work dir kept: $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

echo "== building ferry, imapdriver, treegen"
mkdir -p "$work/bin"
(cd "$root" && go build -o "$work/bin/" ./cmd/ferry ./tests/mail/imapdriver ./tests/bench/treegen) || die "go build failed"
ferry=$work/bin/ferry driver=$work/bin/imapdriver treegen=$work/bin/treegen
mkdir -p "$work/primary" "$work/replica" "$work/ferry" "$work/run-primary" "$work/run-replica"
[[ $(id -u) == 0 ]] && chown -R cyrus:mail "$work"
IMAPDRIVER_PASSWORD=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
export IMAPDRIVER_PASSWORD

# start NAME CMD...: runs CMD as the check's user in the background, output
# to $work/NAME.log; sets pid.
start() {
	local name=$1
	shift
	"${as[@]}" "$@" >"$work/$name.log" 2>&1 &
	pid=$!
	started[$pid]=$name
}
# stop PID: SIGTERM, and SIGKILL after 30 s.
stop() {
	local pid=$1 i=300
	kill "$pid" 2>/dev/null || true
	while ((i-- > 0)) && kill -0 "$pid" 2>/dev/null; do
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "started[$pid]"
}

# cyrus NAME TREE: writes NAME's imapd.conf and cyrus.conf (mail in TREE,
# runtime files in run-NAME), its users' sasldb, starts its master and
# waits for IMAP; sets cyrus_pid and cyrus_addr.
cyrus() {
	local name=$1 tree=$2 run=$work/run-$1 port u
	port=$("$driver" freeport)
	cat >"$run/imapd.conf" <<-EOF
		configdirectory: $tree/conf
		partition-default: $tree/spool
		proc_path: $run/proc
		mboxname_lockpath: $run/lock
		lmtpsocket: $run/socket/lmtp
		idlesocket: $run/socket/idle
		notifysocket: $run/socket/notify
		cyrus_user: $runuser
		syslog_prefix: ferry-mail-$name
		altnamespace: yes
		unixhierarchysep: yes
		autocreate_quota: 0
		allowplaintext: yes
		sasl_pwcheck_method: auxprop
		sasl_auxprop_plugin: sasldb
		sasl_sasldb_path: $run/sasldb2
		sasl_mech_list: PLAIN
		mailbox_legacy_dirs: $legacy_dirs
	EOF
	cat >"$run/cyrus.conf" <<-EOF
		START {
		  recover cmd="ctl_cyrusdb -C $run/imapd.conf -r"
		}
		SERVICES {
		  imap cmd="imapd -C $run/imapd.conf" listen="127.0.0.1:$port" prefork=1
		}
		EVENTS {
		  checkpoint cmd="ctl_cyrusdb -C $run/imapd.conf -c" period=30
		}
	EOF
	mkdir -p "$run/proc" "$run/lock" "$run/socket"
	[[ $(id -u) == 0 ]] && chown -R cyrus:mail "$run" "$tree"
	for u in ${USERS//,/ }; do
		printf '%s' "$IMAPDRIVER_PASSWORD" | "${as[@]}" saslpasswd2 -p -c -f "$run/sasldb2" "$u" ||
			die "saslpasswd2 for $u failed"
	done
	# In a session of its own: at shutdown, master signals its whole process
	# group (kill(0, SIGTERM)), which would stop ferry, run as the same user,
	# before it ships Cyrus's last writes.
	start "cyrus-$name" setsid "$CYRUS_BIN/master" -C "$run/imapd.conf" -M "$run/cyrus.conf" -p "$run/master.pid" -D
	cyrus_pid=$pid
	cyrus_addr=127.0.0.1:$port
	"$driver" wait -addr "$cyrus_addr" || {
		cat "$work/cyrus-$name.log" >&2
		die "Cyrus ($name) did not start (log above)"
	}
}

echo "== ferry: ship --source dir:$work/primary, receive --apply dir:$work/replica"
start receive "$ferry" receive --store "$work/ferry/store" --stream mail --state "$work/ferry/state" \
	--apply "dir:$work/replica" --poll-min 50ms --poll-max 200ms
recv_pid=$pid
start ship "$ferry" ship --source "dir:$work/primary" --store "$work/ferry/store" --stream mail \
	--spool "$work/ferry/spool" --max-age 500ms
ship_pid=$pid
"$treegen" watching -pid "$ship_pid" -path "$work/primary" || die "ferry ship is not watching $work/primary ($work/ship.log)"

echo "== Cyrus on the primary"
# The dirs Debian's postinst makes in /var/lib/cyrus; the replica gets them from ferry.
mkdir -p "$work/primary/conf/db" "$work/primary/conf/socket" "$work/primary/spool"
cyrus primary "$work/primary"
primary_pid=$cyrus_pid
echo "== imapdriver: $MESSAGES messages for $USERS, seed $SEED, $LAYOUT layout"
"$driver" load -addr "$cyrus_addr" -users "$USERS" -messages "$MESSAGES" -seed "$SEED" || die "the workload failed"
"$driver" dump -addr "$cyrus_addr" -users "$USERS" -o "$work/primary.dump" || die "dump of the primary failed"
stop "$primary_pid"

echo "== waiting for the replica to equal the primary's tree"
deadline=$((SECONDS + 120))
until out=$("$treegen" cmp "$work/primary" "$work/replica" 2>&1); do
	((SECONDS < deadline)) || {
		echo "$out" >&2
		tail -n 20 "$work/ship.log" "$work/receive.log" >&2
		die "the replica did not match the primary within 120 s"
	}
	sleep 0.5
done
echo "   $out"
stop "$ship_pid"
stop "$recv_pid"
shipped=$(du -sb "$work/ferry/store" | cut -f1)
echo "ferry shipped $shipped bytes (the dir store); ship: $(grep -o '[0-9]* records ([^)]*) in [0-9]* segments' "$work/ship.log" || echo '?')"

echo "== Cyrus on the replica"
cyrus replica "$work/replica"
"$driver" dump -addr "$cyrus_addr" -users "$USERS" -o "$work/replica.dump" || die "dump of the replica failed"
stop "$cyrus_pid"

if ! diff -u "$work/primary.dump" "$work/replica.dump" >"$work/dump.diff"; then
	echo "the replica's server shows other mail than the primary's (- primary, + replica):" >&2
	head -n 40 "$work/dump.diff" >&2
	die "replica differs: $(grep -c '^[-+][^-+]' "$work/dump.diff") lines"
fi
echo "OK: the replica's Cyrus shows the same $(grep -c 'uid=' "$work/primary.dump") messages in $(grep -vc 'uid=' "$work/primary.dump") folders (flags, UIDs, dates, bodies)"

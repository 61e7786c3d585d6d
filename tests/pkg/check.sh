#!/usr/bin/env bash
# The .deb as an operator gets it: built by packaging/build.sh, installed
# with dpkg -i, checked (binary, user, directories, conffiles, units
# verified and scored by systemd-analyze), removed and purged.
#
#   sudo tests/pkg/check.sh      # .ci/run runs it (as root, on Debian)
#
# It installs a package on this machine, so it runs only as root, and
# refuses to touch a ferry package it did not build. A missing tool fails
# it: nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.0.0~pkgcheck
MAX_EXPOSURE=2.5
UNITS=(ferry-ship.service ferry-receive.service ferry-ship@.service ferry-receive@.service ferry-sync.service ferry-sync@.service)

fail() {
	echo "tests/pkg/check.sh: FAIL: $*" >&2
	exit 1
}
pass() { echo "  ok: $*"; }

[ "$(id -u)" = 0 ] || fail "run as root: it installs and removes the package"
for tool in dpkg dpkg-deb dpkg-query systemd-analyze go git getent; do
	command -v "$tool" >/dev/null || fail "$tool is not installed (systemd-analyze: Debian package systemd)"
done

installed=$(dpkg-query -W -f='${Status} ${Version}' ferry 2>/dev/null || true)
case "$installed" in
"" | "unknown ok not-installed"* | *" not-installed "*) ;;
*" $VERSION") dpkg -P ferry >/dev/null ;; # left by an interrupted run of this script
*) fail "a ferry package is installed ($installed): this check would replace it" ;;
esac
had_user=no
getent passwd ferry >/dev/null && had_user=yes
# A /var/lib/ferry made before (by hand, or by a run of the samples) gets
# its owner and mode back afterwards, and is not expected to go on purge.
had_state=""
[ -d /var/lib/ferry ] && had_state=$(stat -c '%u:%g %a' /var/lib/ferry)
cleanup() {
	if [ -n "$had_state" ] && [ -d /var/lib/ferry ]; then
		chown "${had_state% *}" /var/lib/ferry && chmod "${had_state#* }" /var/lib/ferry
	fi
	dpkg-query -W ferry >/dev/null 2>&1 && { dpkg -P ferry >/dev/null 2>&1 || true; }
	if [ "$had_user" = no ] && getent passwd ferry >/dev/null; then
		userdel ferry 2>/dev/null || true
		getent group ferry >/dev/null && { groupdel ferry 2>/dev/null || true; }
	fi
	return 0
}
trap cleanup EXIT

echo "== build the .deb"
PKG_FORMATS=deb packaging/build.sh "$VERSION"
deb=$(ls dist/ferry_"${VERSION}"_*.deb)

echo "== dpkg -i $deb"
dpkg -i "$deb"
[ "$(command -v ferry)" = /usr/bin/ferry ] || fail "ferry on PATH is $(command -v ferry), want /usr/bin/ferry"
out=$(/usr/bin/ferry --version)
case "$out" in
"ferry $VERSION (commit "*) pass "ferry --version: $out" ;;
*) fail "ferry --version says \"$out\", want ferry $VERSION (commit ...)" ;;
esac
case "$out" in
*"commit unknown"* | *"built unknown"*) fail "ferry --version lacks the commit or build date: $out" ;;
esac

uid=$(getent passwd ferry | cut -d: -f3) || fail "no ferry user"
[ "$uid" -lt 1000 ] || fail "ferry user has uid $uid, want a system uid"
getent group ferry >/dev/null || fail "no ferry group"
pass "ferry system user (uid $uid) and group"
for d in /var/lib/ferry /var/spool/ferry; do
	[ "$(stat -c '%U:%G %a' "$d")" = "ferry:ferry 700" ] || fail "$d is $(stat -c '%U:%G %a' "$d"), want ferry:ferry 700"
done
pass "/var/lib/ferry and /var/spool/ferry: ferry:ferry 700"
n=0
for f in /etc/ferry/examples/*.toml; do
	[ "$(stat -c '%U:%G %a' "$f")" = "root:ferry 640" ] || fail "$f is $(stat -c '%U:%G %a' "$f"), want root:ferry 640"
	dpkg-query -W -f='${Conffiles}\n' ferry | grep -q " $f " || fail "$f is not a conffile"
	n=$((n + 1))
done
[ "$n" -ge 5 ] || fail "only $n sample configs in /etc/ferry/examples"
pass "$n sample configs in /etc/ferry/examples: conffiles, root:ferry 640"
[ -f /usr/share/doc/ferry/copyright ] || fail "no /usr/share/doc/ferry/copyright"
if /usr/bin/ferry completion bash >/dev/null 2>&1; then
	for f in /usr/share/bash-completion/completions/ferry /usr/share/zsh/vendor-completions/_ferry \
		/usr/share/fish/vendor_completions.d/ferry.fish; do
		[ -s "$f" ] || fail "ferry has 'completion' but $f is missing or empty"
	done
	pass "shell completions"
fi
for page in ferry ferry-ship ferry-receive ferry-sync; do
	[ -s "/usr/share/man/man1/$page.1.gz" ] || fail "man page $page.1 not installed"
done
zcat /usr/share/man/man1/ferry-ship.1.gz | grep -q 'spool' || fail "man page ferry-ship.1 does not show its flags"
pass "man pages"
[ -s /usr/share/doc/ferry/prometheus/ferry-rules.yml ] || fail "the alert rules are not installed"

echo "== systemd-analyze on the installed units"
for u in "${UNITS[@]}"; do
	path=/usr/lib/systemd/system/$u
	[ -f "$path" ] || fail "$path not installed"
	# verify exits 0 on an unknown key or a bad value, saying so: any
	# output is a failure.
	out=$(systemd-analyze verify --man=no "$path" 2>&1) || fail "systemd-analyze verify $path: $out"
	[ -z "$out" ] || fail "systemd-analyze verify $path: $out"
	# --offline: no systemd as PID 1 is needed (CI runs in a container).
	out=$(systemd-analyze security --offline=true --no-pager "$path" 2>&1) || fail "systemd-analyze security $path: $out"
	score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p')
	[ -n "$score" ] || fail "no exposure level in systemd-analyze security $path: $out"
	awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }' ||
		fail "$u: exposure $score, want at most $MAX_EXPOSURE"
	pass "$u: verified, exposure $score"
done

echo "== dpkg -r ferry"
dpkg -r ferry
[ ! -e /usr/bin/ferry ] || fail "/usr/bin/ferry still there after dpkg -r"
for u in "${UNITS[@]}"; do
	[ ! -e "/usr/lib/systemd/system/$u" ] || fail "$u still there after dpkg -r"
done
[ -f /etc/ferry/examples/ferry-ship.toml ] || fail "dpkg -r removed the conffiles (only purge should)"
getent passwd ferry >/dev/null || fail "dpkg -r removed the ferry user (Debian policy keeps it)"
pass "binary and units gone; conffiles and the ferry user kept"
echo "== dpkg -P ferry"
dpkg -P ferry
[ ! -e /etc/ferry/examples/ferry-ship.toml ] || fail "dpkg -P left the conffiles"
[ ! -e /var/spool/ferry ] || fail "dpkg -P left an empty /var/spool/ferry"
[ -n "$had_state" ] || [ ! -e /var/lib/ferry ] || fail "dpkg -P left an empty /var/lib/ferry"
pass "purged"
echo "== package check passed"

#!/bin/sh
# ferry package, after unpacking (deb postinst, rpm %post): the state and
# spool directories, owned by ferry and private to it, and a systemd
# reload so that it sees the units. Nothing is enabled or started: a
# service on a sample config would ship the wrong thing (docs/SYSTEMD.md).
set -e

case "$1" in
abort-upgrade | abort-remove | abort-deconfigure) exit 0 ;;
esac

# An admin's dpkg-statoverride wins; otherwise the directories are the
# service's (one made by hand before the package is taken over).
for d in /var/lib/ferry /var/spool/ferry; do
	if command -v dpkg-statoverride >/dev/null 2>&1 && dpkg-statoverride --list "$d" >/dev/null 2>&1; then
		continue
	fi
	install -d -m 0700 -o ferry -g ferry "$d"
done

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0

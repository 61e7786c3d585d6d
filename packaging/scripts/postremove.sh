#!/bin/sh
# ferry package, after removal (deb postrm, rpm %postun). The ferry user
# and group stay, as Debian policy asks of a system user (files it owns may
# remain). On purge the state and spool directories are removed only if
# empty: a spool holds records not yet delivered, a state dir a replica's
# checkpoint, and neither is the package's to throw away.
set -e

if [ "$1" = purge ]; then
	rmdir /var/spool/ferry /var/lib/ferry 2>/dev/null || true
	rmdir /etc/ferry/examples /etc/ferry 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0

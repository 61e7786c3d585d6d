#!/bin/sh
# ferry package, before unpacking (deb preinst, rpm %pre): the ferry system
# user and group, which the units run as and /etc/ferry is readable by,
# must exist before the files that name them are unpacked.
set -e

if ! getent group ferry >/dev/null; then
	groupadd --system ferry
fi
if ! getent passwd ferry >/dev/null; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid ferry --home-dir /var/lib/ferry --no-create-home \
		--shell "$nologin" --comment "ferry replication" ferry
fi
exit 0

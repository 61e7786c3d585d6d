#!/bin/sh
# ferry package, before removal (deb prerm, rpm %preun): stop the ferry
# services when the package goes away for good (not on an upgrade, after
# which they restart when told to: systemctl restart 'ferry-*'). A
# stopped shipper keeps what it has not sent in its spool.
set -e

case "$1" in
remove | 0) ;; # deb: remove; rpm: $1 is the number of versions left
*) exit 0 ;;
esac

if [ -d /run/systemd/system ]; then
	systemctl stop 'ferry-ship.service' 'ferry-receive.service' \
		'ferry-ship@*.service' 'ferry-receive@*.service' >/dev/null 2>&1 || true
fi
exit 0

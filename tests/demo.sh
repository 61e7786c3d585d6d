#!/usr/bin/env bash
# ferry's main job on the embedded default store (a local directory):
# ship 200,000 log lines through a durable spool into zstd segments, apply
# them on the "secondary" exactly once, and check the replica is identical.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO="${DEMO_DIR:-/tmp/ferry-demo}"
rm -rf "$DEMO" && mkdir -p "$DEMO"
go build -o "$DEMO/ferry" ./cmd/ferry
F="$DEMO/ferry"

awk 'BEGIN { for (i = 1; i <= 200000; i++)
	printf "2026-11-28T12:%02d:%02d.%03dZ INFO order=%d user=u%d action=checkout amount=%d.%02d\n",
		int(i / 60000) % 60, int(i / 1000) % 60, i % 1000, i, i % 977, i % 500, i % 100 }' >"$DEMO/input.log"

echo "== ship (primary): stdin -> spool -> segments -> directory store $DEMO/store"
"$F" ship --store "$DEMO/store" --stream demo --spool "$DEMO/spool" --max-bytes 1MiB <"$DEMO/input.log"
echo "== ls"
"$F" ls --store "$DEMO/store" --stream demo | tail -n 4
echo "== receive (secondary): apply in order, exactly once, durable checkpoint"
"$F" receive --store "$DEMO/store" --stream demo --state "$DEMO/state" --apply "file:$DEMO/replica.log" --once
echo "== verify"
"$F" verify --store "$DEMO/store" --stream demo
cmp "$DEMO/input.log" "$DEMO/replica.log"
echo "replica $DEMO/replica.log is byte-identical to the input ($(wc -l <"$DEMO/replica.log") lines)"

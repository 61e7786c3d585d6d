#!/usr/bin/env bash
# Encryption overhead: ferry ship and ferry receive --once (catch-up) on
# the same input into a directory store, plaintext vs [encryption]
# recipients (age), runs interleaved so both see the same machine load.
# Reports the median of each and the ratio encrypted / plaintext
# throughput (issue 21 targets: ship >= 0.9x, catch-up >= 0.9x).
#
#   tests/bench/encryption.sh                     # 256 MiB, 5 runs each
#   SIZE=64MiB RUNS=3 tests/bench/encryption.sh
#
# It is a measurement: it exits 0 when a target is missed.
set -euo pipefail

SIZE=${SIZE:-256MiB}
SEED=${SEED:-1}
RUNS=${RUNS:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/ferry-bench}

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
build_bins ferry loggen
make_input
warm_input

work="$BENCH_DIR/encryption"
rm -rf "$work"
mkdir -p "$work"
# A throwaway key pair, made with the age library ferry uses.
cat >"$work/keygen.go" <<'GO'
package main

import (
	"fmt"
	"os"

	"filippo.io/age"
)

func main() {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		panic(err)
	}
	os.WriteFile(os.Args[1], []byte(id.String()+"\n"), 0o600)
	fmt.Print(id.Recipient().String())
}
GO
pub=$(go run "$work/keygen.go" "$work/identity.txt")
printf '[encryption]\nrecipients = ["%s"]\n' "$pub" >"$work/enc.toml"
printf '# plaintext\n' >"$work/plain.toml"

declare -A ship recv
for ((i = 1; i <= RUNS; i++)); do
	for mode in plain enc; do
		d="$work/$mode-$i"
		mkdir -p "$d"
		t0=$(now)
		"$ferry" ship --config "$work/$mode.toml" --store "$d/store" --stream b --spool "$d/spool" --lease-ttl off \
			--max-bytes 16MiB --log-level error <"$input" || die "ship ($mode) failed"
		t1=$(now)
		FERRY_AGE_IDENTITY_FILE="$work/identity.txt" "$ferry" receive --once --store "$d/store" --stream b \
			--state "$d/state" --apply "file:$d/replica" --log-level error || die "receive ($mode) failed"
		t2=$(now)
		cmp -s "$input" "$d/replica" || die "replica ($mode, run $i) differs from the input"
		ship[$mode]+="$(elapsed "$t0" "$t1") "
		recv[$mode]+="$(elapsed "$t1" "$t2") "
		rm -rf "$d"
	done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "== $SIZE input, $RUNS interleaved runs each, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for what in ship recv; do
	declare -n t=$what
	p=$(median "${t[plain]}") e=$(median "${t[enc]}")
	awk -v w="$what" -v p="$p" -v e="$e" -v b="$size_bytes" -v tp="${t[plain]}" -v te="${t[enc]}" 'BEGIN {
		printf "%-5s plaintext median %.3fs (%.0f MB/s)  encrypted median %.3fs (%.0f MB/s)  ratio %.2fx %s\n",
			w, p, b/1e6/p, e, b/1e6/e, p/e, (p/e >= 0.9 ? "(target >= 0.9x met)" : "(target >= 0.9x MISSED)")
		printf "      runs: plaintext %s| encrypted %s\n", tp, te }'
done

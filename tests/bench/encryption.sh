#!/usr/bin/env bash
# Encryption and signing overhead: ferry ship and ferry receive --once
# (catch-up) on the same input into a directory store, plaintext vs
# [encryption] recipients (age) vs recipients plus signing_key_file
# (ed25519; the receiver with trusted_keys verifies every segment), runs
# interleaved so all see the same machine load. Reports the median of
# each and the ratio to plaintext throughput (issue 21 targets: ship >=
# 0.9x, catch-up >= 0.9x).
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
# Throwaway keys, made with ferry keygen.
"$ferry" keygen --age "$work/identity.txt" --signing "$work/signing.key" >"$work/keys.txt"
pub=$(grep '^age1' "$work/keys.txt")
spub=$(grep '^ferry-ed25519:' "$work/keys.txt")
printf '[encryption]\nrecipients = ["%s"]\nidentity_file = "%s"\n' "$pub" "$work/identity.txt" >"$work/enc.toml"
printf '[encryption]\nrecipients = ["%s"]\nidentity_file = "%s"\nsigning_key_file = "%s"\ntrusted_keys = ["%s"]\n' \
	"$pub" "$work/identity.txt" "$work/signing.key" "$spub" >"$work/signenc.toml"
printf '# plaintext\n' >"$work/plain.toml"

modes=(plain enc signenc)
declare -A ship recv
for ((i = 1; i <= RUNS; i++)); do
	for mode in "${modes[@]}"; do
		d="$work/$mode-$i"
		mkdir -p "$d"
		t0=$(now)
		"$ferry" ship --config "$work/$mode.toml" --store "$d/store" --stream b --spool "$d/spool" --lease-ttl off \
			--max-bytes 16MiB --log-level error <"$input" || die "ship ($mode) failed"
		t1=$(now)
		"$ferry" receive --config "$work/$mode.toml" --once --store "$d/store" --stream b \
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
	p=$(median "${t[plain]}")
	awk -v w="$what" -v p="$p" -v b="$size_bytes" -v tp="${t[plain]}" 'BEGIN {
		printf "%-5s plaintext        median %.3fs (%.0f MB/s)  runs: %s\n", w, p, b/1e6/p, tp }'
	for mode in enc signenc; do
		e=$(median "${t[$mode]}")
		label=$([[ $mode == enc ]] && echo "encrypted" || echo "signed+encrypted")
		awk -v w="$what" -v l="$label" -v p="$p" -v e="$e" -v b="$size_bytes" -v te="${t[$mode]}" 'BEGIN {
			printf "%-5s %-16s median %.3fs (%.0f MB/s)  ratio %.2fx %s  runs: %s\n",
				w, l, e, b/1e6/e, p/e, (p/e >= 0.9 ? "(target >= 0.9x met)" : "(target >= 0.9x MISSED)"), te }'
	done
done

#!/usr/bin/env bash
# Encryption and signing overhead: ferry ship and ferry receive --once
# (catch-up) on the same input into a directory store, plaintext vs
# [encryption] recipients (age) vs recipients plus signing_key_file
# (ed25519; the receiver with trusted_keys verifies every segment), runs
# interleaved so all see the same machine load. Reports the median of
# each and the ratio to plaintext throughput (issue 21 targets: ship >=
# 0.9x, catch-up >= 0.9x), by wall time and by the process's CPU time
# (user+sys), which other load on the machine disturbs less.
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
# timed CMD... runs CMD with its stderr to $d/err and appends its wall
# and CPU (user+sys) seconds to the arrays named by $1 and $2.
timed() {
	local -n wall=$1 cpu=$2
	local TIMEFORMAT='%3R %3U %3S' t
	shift 2
	t=$({ time "$@" 2>>"$d/err"; } 2>&1) || { cat "$d/err" >&2; return 1; }
	read -r r u s <<<"$t"
	wall[$mode]+="$r "
	cpu[$mode]+="$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.3f", u + s}') "
}
declare -A ship recv shipcpu recvcpu
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for ((i = 1; i <= RUNS; i++)); do
	# Each run starts with another mode, so none always runs first.
	for ((j = 0; j < ${#modes[@]}; j++)); do
		mode=${modes[(i + j) % ${#modes[@]}]}
		d="$work/$mode-$i"
		mkdir -p "$d"
		timed ship shipcpu "$ferry" ship --config "$work/$mode.toml" --store "$d/store" --stream b --spool "$d/spool" --lease-ttl off \
			--max-bytes 16MiB --log-level error <"$input" || die "ship ($mode) failed"
		timed recv recvcpu "$ferry" receive --config "$work/$mode.toml" --once --store "$d/store" --stream b \
			--state "$d/state" --apply "file:$d/replica" --log-level error || die "receive ($mode) failed"
		cmp -s "$input" "$d/replica" || die "replica ($mode, run $i) differs from the input"
		rm -rf "$d"
	done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "== $SIZE input, $RUNS interleaved runs each, $(nproc) CPUs, load average $load0 before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "   (throughput: wall time; cpu: user+sys seconds of the process, less sensitive to other load)"
for what in ship recv; do
	for kind in wall cpu; do
		if [[ $kind == wall ]]; then declare -n t=$what; else declare -n t=${what}cpu; fi
		p=$(median "${t[plain]}")
		awk -v w="$what" -v k="$kind" -v p="$p" -v b="$size_bytes" -v tp="${t[plain]}" 'BEGIN {
			printf "%-4s %-4s plaintext        median %.3fs (%.0f MB/s)  runs: %s\n", w, k, p, b/1e6/p, tp }'
		for mode in enc signenc; do
			e=$(median "${t[$mode]}")
			label=$([[ $mode == enc ]] && echo "encrypted" || echo "signed+encrypted")
			goal=""
			if [[ $kind == wall ]]; then
				goal="(target >= 0.9x $(awk -v p="$p" -v e="$e" 'BEGIN {print (p/e >= 0.9) ? "met" : "MISSED"}'))"
			fi
			awk -v w="$what" -v k="$kind" -v l="$label" -v p="$p" -v e="$e" -v b="$size_bytes" -v te="${t[$mode]}" -v g="$goal" 'BEGIN {
				printf "%-4s %-4s %-16s median %.3fs (%.0f MB/s)  ratio %.2fx %s  runs: %s\n", w, k, l, e, b/1e6/e, p/e, g, te }'
		done
		unset -n t
	done
done

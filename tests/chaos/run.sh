#!/usr/bin/env bash
# The published reliability run: the chaos scenarios of tests/chaos with
# many kills and faults, then every fuzz target for a while, and one table of
# figures (docs/RELIABILITY.md comes from it).
#
#   tests/chaos/run.sh                      # 510 kills, 100 faults, 1M inputs per fuzz target
#   KILLS=30 FAULTS=10 FUZZTIME=50000x tests/chaos/run.sh
#
# FUZZTIME is a -fuzztime: an execution count (NNNx) by default, since a
# duration can fail with a bare "context deadline exceeded" on a loaded
# machine (go.dev/issue/75804; see tests/run.sh).
#
# KILLS and FAULTS are per scenario (three scenarios; the tail-to-directory
# one has no faults to inject). Exit status is non-zero if an invariant broke
# or a fuzz target found a crash.
set -euo pipefail

KILLS=${KILLS:-170}
FAULTS=${FAULTS:-50}
FUZZTIME=${FUZZTIME:-1000000x}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
report="$work/chaos.jsonl"

echo "== chaos: $KILLS kills and $FAULTS faults per scenario"
status=0
FERRY_CHAOS_KILLS=$KILLS FERRY_CHAOS_FAULTS=$FAULTS FERRY_CHAOS_REPORT=$report \
	go test -count=1 -timeout 120m -v ./tests/chaos 2>&1 | tee "$work/chaos.log" | grep -E '^(--- |ok|FAIL|\s+chaos_test.go:[0-9]+: (CHAOS|.*seed))' || true
if ! grep -q '^ok' "$work/chaos.log"; then
	status=1
	cp "$work/chaos.log" "${TMPDIR:-/tmp}/ferry-chaos-failed.log"
	echo "chaos tests FAILED: full log in ${TMPDIR:-/tmp}/ferry-chaos-failed.log"
fi

echo "== fuzzing: each target for $FUZZTIME"
fuzz_total=0
fuzz_line=""
while read -r pkg name; do
	out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1) || {
		echo "$out" | tail -20
		echo "FUZZ FAILURE: $pkg $name"
		status=1
	}
	# "fuzz: elapsed: 1m0s, execs: 1234567 (20567/sec), ..." -- the last one counts.
	execs=$(echo "$out" | grep -o 'execs: [0-9]*' | tail -1 | awk '{print $2}')
	execs=${execs:-0}
	fuzz_total=$((fuzz_total + execs))
	fuzz_line+="$(printf '\n  %-40s %12d inputs' "$pkg $name" "$execs")"
done < <(grep -rn '^func Fuzz' --include='*_test.go' . | sed -E 's#^\./(.*)/[^/]*_test\.go:[0-9]+:func (Fuzz[A-Za-z0-9]*).*#./\1 \2#' | sort -u)

echo
echo "ferry reliability run, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
awk -F'[:,}]' '
	{ for (i = 1; i < NF; i++) { gsub(/[{" ]/, "", $i) } }
	{
		for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)
		printf "  %-10s kills %5d  faults %4d  records %10d  lost %d  duplicated %d  reordered %d  (%.0fs)\n", v["scenario"], v["kills"], v["faults"], v["records"], v["lost"], v["duplicated"], v["reordered"], v["seconds"]
		k += v["kills"]; f += v["faults"]; r += v["records"]; l += v["lost"]; d += v["duplicated"]; o += v["reordered"]
	}
	END { printf "  %-10s kills %5d  faults %4d  records %10d  lost %d  duplicated %d  reordered %d\n", "total", k, f, r, l, d, o }
' "$report"
echo "  fuzzing: $fuzz_total hostile inputs over $(grep -c . <<<"$fuzz_line") targets ($FUZZTIME each), no crash${fuzz_line}"
echo "reproduce: KILLS=$KILLS FAULTS=$FAULTS FUZZTIME=$FUZZTIME tests/chaos/run.sh"
exit $status

#!/usr/bin/env bash
# Runs every ferry test: vet, gofmt, unit tests, short fuzz runs, the S3
# tests against a real versitygw, and the end-to-end tests that start the
# built ferry binary as separate processes. Installs what the tests need
# when it is missing: the zstd CLI, PostgreSQL, groff and bash-completion
# (Debian packages; the archive_command/restore_command test in tests/pg
# runs a real server, tests/e2e renders the man pages and completes with
# the bash script), Prometheus (Debian package: promtool checks
# etc/prometheus, the server runs the dashboard's queries), versitygw and
# age (pinned, go install).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSITYGW_VERSION=v1.8.0
AGE_VERSION=v1.3.2
GOBIN_DIR="$(go env GOPATH)/bin"
export PATH="$GOBIN_DIR:$PATH"

need_apt=()
command -v zstd >/dev/null || need_apt+=(zstd)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || need_apt+=(postgresql)
command -v groff >/dev/null || need_apt+=(groff-base)                                  # the man pages render (tests/e2e)
[ -f /usr/share/bash-completion/bash_completion ] || need_apt+=(bash-completion) # the completion completes
command -v promtool >/dev/null && command -v prometheus >/dev/null || need_apt+=(prometheus)
if ((${#need_apt[@]})); then
	echo "== installing ${need_apt[*]} (apt)"
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v versitygw >/dev/null; then
	echo "== installing versitygw $VERSITYGW_VERSION (go install; takes a few minutes the first time)"
	go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
export FERRY_VERSITYGW="$(command -v versitygw)"
if ! command -v age >/dev/null; then
	echo "== installing age $AGE_VERSION (go install)"
	go install "filippo.io/age/cmd/...@$AGE_VERSION"
fi
# The stock-tool test (age -d | zstd -dc, docs/FORMAT.md) fails, never
# skips, without the age binary.
export FERRY_REQUIRE_AGE=1
# The S3 tests fail (never skip) when the server cannot start, and the
# tests that run promtool and prometheus when those are missing.
export FERRY_REQUIRE_S3=1
export FERRY_REQUIRE_TOOLS=1

echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed on: $unformatted" >&2
	exit 1
fi

echo "== unit, S3, end-to-end and short chaos tests (tests/chaos/run.sh runs the long one)"
go test -count=1 -timeout 20m ./...

echo "== race detector on the concurrent packages"
go test -count=1 -race -timeout 20m ./shipper/... ./receiver/... ./store/...

echo "== short fuzz runs"
# Budgets are execution counts (about 10 s each here), not durations: a
# duration -fuzztime can fail with a bare "context deadline exceeded" when
# a loaded machine starves the workers at the deadline, a race in Go's
# fuzz coordinator (go.dev/issue/75804, fixed in Go 1.27). FUZZTIME, if
# set, replaces every budget (e.g. FUZZTIME=60s or FUZZTIME=100000x).
fuzz() { # fuzz TARGET PACKAGE EXECUTIONS
	go test -run='^$' -fuzz="^$1\$" -fuzztime="${FUZZTIME:-$3x}" "$2"
}
fuzz FuzzDecode ./batch/ 150000
fuzz FuzzParseFrame ./batch/ 300000
fuzz FuzzForged ./batch/ 90000
fuzz FuzzParseSegmentName ./batch/ 200000
fuzz FuzzParseGeneration ./batch/ 100000
fuzz FuzzLoad ./config/ 8000
fuzz FuzzParseEntry ./shipper/spool/ 150000
fuzz FuzzReadFrame ./transport/tcp/ 80000
fuzz FuzzReadCheckpointFile ./receiver/ 100000
fuzz FuzzParseHeader ./dirtree/ 100000
fuzz FuzzParseDelta ./dirtree/ 50000
fuzz FuzzParseRename ./dirtree/ 50000
fuzz FuzzCheckHeader ./batch/crypt/ 20000
fuzz FuzzParseSignature ./batch/sign/ 50000

echo "== all tests passed"

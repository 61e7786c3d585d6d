#!/usr/bin/env bash
# Archives a real PostgreSQL through ferry push and restores it through
# ferry fetch (tests/pg/pg_test.go). Installs Debian's postgresql package
# when it is missing (as root); fails, never skips, when PostgreSQL cannot
# be installed or started.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go test -count=1 -timeout 10m -v ./tests/pg/ "$@"

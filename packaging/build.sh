#!/usr/bin/env bash
# Builds the ferry .deb and .rpm into dist/:
#
#   packaging/build.sh VERSION          # e.g. 0.2.0; a leading v is dropped
#   PKG_ARCH=arm64 packaging/build.sh 0.2.0
#   PKG_FORMATS=deb packaging/build.sh 0.2.0   # only the .deb
#
# The package holds the static binary (/usr/bin/ferry, with the version,
# commit and build date stamped in), the systemd units, the sample configs
# (/etc/ferry/examples, conffiles), the docs, and the shell completions and
# man pages where ferry can generate them. packaging/nfpm.yaml says what
# goes where; nfpm (pinned below) is run with go run, so ferry's go.mod
# gains nothing and nothing but Go is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

if [ $# -ne 1 ] || [ -z "$1" ]; then
	echo "usage: packaging/build.sh VERSION" >&2
	exit 2
fi
version=${1#v}
case "$version" in
[0-9]*) ;;
*)
	echo "packaging/build.sh: version $1 must start with a digit (deb and rpm need one)" >&2
	exit 2
	;;
esac
arch=${PKG_ARCH:-$(go env GOARCH)}
formats=${PKG_FORMATS:-deb rpm}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The commit's time, not now: the same commit builds the same binary.
date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || true)
[ -n "$date" ] || date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

rm -rf dist/build dist/stage
mkdir -p dist/build dist/stage
ldflags="-s -w -X main.version=$version -X main.commit=$commit -X main.buildDate=$date"
echo "== ferry $version ($commit, $date) for linux/$arch"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" -o dist/build/ferry ./cmd/ferry

# What generates completions and man pages runs here: a binary for this
# machine, whatever the package's architecture.
host=dist/build/ferry
if [ "$arch" != "$(go env GOARCH)" ]; then
	host=dist/build/ferry-host
	CGO_ENABLED=0 go build -trimpath -o "$host" ./cmd/ferry
fi

extra=() # "SRC DST [PACKAGER]" appended to nfpm.yaml's contents

# Shell completions, if this ferry has `ferry completion SHELL`.
if "$host" completion bash >/dev/null 2>&1; then
	mkdir -p dist/stage/completions
	"$host" completion bash >dist/stage/completions/ferry.bash
	"$host" completion zsh >dist/stage/completions/_ferry
	"$host" completion fish >dist/stage/completions/ferry.fish
	extra+=("dist/stage/completions/ferry.bash /usr/share/bash-completion/completions/ferry"
		"dist/stage/completions/_ferry /usr/share/zsh/vendor-completions/_ferry deb"
		"dist/stage/completions/_ferry /usr/share/zsh/site-functions/_ferry rpm"
		"dist/stage/completions/ferry.fish /usr/share/fish/vendor_completions.d/ferry.fish")
	echo "== shell completions: bash, zsh, fish"
else
	echo "== no shell completions: this ferry has no 'completion' command"
fi

# Man pages, generated from the same definitions as the help (ferry.1,
# ferry-ship.1, ...).
mkdir -p dist/stage/man
"$host" man --dir dist/stage/man
for page in dist/stage/man/*.[1-8]; do
	[ -e "$page" ] || continue
	gzip -9n "$page"
	section=${page##*.}
	extra+=("$page.gz /usr/share/man/man$section/$(basename "$page").gz")
done

# nfpm.yaml with the generated files appended to its contents (its last
# key), then nfpm for each format.
{
	cat packaging/nfpm.yaml
	for e in "${extra[@]}"; do
		set -- $e
		printf '  - src: %s\n    dst: %s\n    file_info:\n      mode: 0644\n' "$1" "$2"
		[ $# -lt 3 ] || printf '    packager: %s\n' "$3"
	done
} >dist/build/nfpm.yaml
mkdir -p dist
for f in $formats; do
	echo "== $f (nfpm, pinned: $NFPM; the first run builds it)"
	PKG_VERSION=$version PKG_ARCH=$arch go run "$NFPM" package \
		--config dist/build/nfpm.yaml --packager "$f" --target dist/
done
ls -l dist/*.deb dist/*.rpm 2>/dev/null || true

#!/usr/bin/env bash
# Runs staticcheck at the version hack/tools/lint pins, built once into the
# tools cache (keyed by that version) from the Go module proxy.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export GOWORK=off
version=$(cd "$root/hack/tools/lint" && go list -m -f '{{.Version}}' honnef.co/go/tools)
cache=${CARVE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/carve/tools}
bin=$cache/staticcheck-$version/staticcheck
if [ ! -x "$bin" ]; then
	echo "[staticcheck] building $version (once)" >&2
	mkdir -p "$(dirname "$bin")"
	(cd "$root/hack/tools/lint" && CGO_ENABLED=0 go build -mod=readonly -o "$bin.tmp" honnef.co/go/tools/cmd/staticcheck)
	mv "$bin.tmp" "$bin"
fi
exec "$bin" "$@"

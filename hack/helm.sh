#!/usr/bin/env bash
# Runs Helm at the version hack/tools/helm pins, built once from the Go module
# proxy into the tools cache (keyed by that version), as hack/staticcheck.sh
# does for staticcheck. The chart tests (test/chart) and the Helm e2e test run
# Helm through it; `make tools` builds it ahead.
#
#   bash hack/helm.sh template carve charts/carve    # any helm command
#   bash hack/helm.sh --print-path                   # the binary's path only
#
# Environment:
#   CARVE_TOOLS_DIR  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/carve/tools)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The tools module must not see a go.work above it, nor edit its go.mod.
export GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" CGO_ENABLED=0
version=$(cd "$root/hack/tools/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
cache=${CARVE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/carve/tools}
bin=$cache/helm-$version/helm
if [[ ! -x $bin ]]; then
	mkdir -p "$(dirname "$bin")"
	# Parallel test packages may all ask at once: one builds, the others wait.
	exec 9>"$bin.lock"
	flock 9
	if [[ ! -x $bin ]]; then
		echo "[helm] building $version (once; about 5 minutes cold on 2 cores)" >&2
		t0=$SECONDS
		# The ldflags Helm's own release build sets: its version, and the
		# Kubernetes version of its client-go (v0.X.Y is Kubernetes 1.X),
		# which `helm template` reports as .Capabilities.KubeVersion and
		# `helm lint` checks deprecated APIs against (else 1.20).
		kube=$(cd "$root/hack/tools/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
		kube_minor=${kube#v0.}
		kube_minor=${kube_minor%%.*}
		ldflags="-X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
		for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
			ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kube_minor"
		done
		(cd "$root/hack/tools/helm" && go build -ldflags "$ldflags" -o "$bin.tmp" helm.sh/helm/v3/cmd/helm)
		mv -f "$bin.tmp" "$bin"
		echo "[helm] built in $((SECONDS - t0))s" >&2
	fi
	exec 9>&-
fi
if [[ ${1:-} == --print-path ]]; then
	echo "$bin"
	exit 0
fi
exec "$bin" "$@"

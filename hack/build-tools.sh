#!/usr/bin/env bash
# Builds the local control plane used by test/cluster: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, the kubelet, etcd and kwok, from the
# tools modules under hack/tools. Binaries are cached outside the repository in
# a directory keyed by the tool versions; anything already there is skipped, so
# a warm run takes about a second.
#
# Progress goes to stderr; the last line on stdout is the bin directory:
#   bin=$(bash hack/build-tools.sh)
#
# With the argument "e2e" it also builds the upstream storage e2e suite
# (e2e.test, k8s.io/kubernetes/test/e2e) and agnhost, its test image's
# program, for make conformance (about 5 more minutes cold).
#
# Environment:
#   CARVE_TOOLS_DIR  cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/carve/tools)
#   FORCE=1          rebuild even when the binaries exist
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root/hack/tools

# The tools modules must not see a go.work above them, and plain builds must
# not edit their go.mod. CGO is off so a fresh machine needs no C toolchain.
export GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" CGO_ENABLED=0

log() { printf '[build-tools] %s\n' "$*" >&2; }

modversion() { # modversion DIR MODULE
	(cd "$1" && go list -m -f '{{.Version}}' "$2")
}

kube_version=$(modversion "$tools/kube" k8s.io/kubernetes)
etcd_version=$(modversion "$tools/etcd" go.etcd.io/etcd/server/v3)
kwok_version=$(modversion "$tools/kwok" sigs.k8s.io/kwok)

cache=${CARVE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/carve/tools}
bin=$cache/kube-$kube_version-etcd-$etcd_version-kwok-$kwok_version/bin
mkdir -p "$bin"

# Serialise concurrent runs (parallel test packages) on the same cache.
if command -v flock >/dev/null; then
	exec 9>"$bin/.lock"
	flock 9
fi

kube_minor=${kube_version#v*.}
kube_minor=${kube_minor%%.*}
kube_major=${kube_version#v}
kube_major=${kube_major%%.*}
# Without these the API server reports v0.0.0-master+$Format:%H$, which makes
# clients that parse the server version fail.
kube_ldflags="-X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=$kube_major \
-X k8s.io/component-base/version.gitMinor=$kube_minor \
-X k8s.io/component-base/version.gitTreeState=clean"
kwok_ldflags="-X sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v}"

start=$SECONDS
built=0
ticker=
tmp=
# An interrupted run must not leave the heartbeat loop or a partial binary.
cleanup() {
	if [[ -n $ticker ]]; then kill "$ticker" 2>/dev/null || true; fi
	if [[ -n $tmp ]]; then rm -f "$tmp"; fi
}
trap cleanup EXIT

# build NAME MODULE_DIR PACKAGE LDFLAGS [test]: "test" builds PACKAGE's test
# binary (go test -c), as e2e.test is.
build() {
	local name=$1 dir=$2 pkg=$3 ldflags=$4 gocmd=(build)
	if [[ ${5:-} == test ]]; then gocmd=(test -c -vet=off); fi
	if [[ -x $bin/$name && -z ${FORCE:-} ]]; then
		log "$name: cached"
		return
	fi
	log "$name: building $pkg (cold builds take minutes)"
	local t0=$SECONDS
	# Heartbeat so a long cold build does not look hung.
	(while sleep 30; do log "$name: still building, $((SECONDS - t0))s"; done) &
	ticker=$!
	# Build to a temporary name so an interrupted build never leaves a
	# truncated binary that a later run would treat as cached.
	tmp=$bin/.$name.tmp
	if ! (cd "$dir" && go "${gocmd[@]}" -ldflags "$ldflags" -o "$tmp" "$pkg"); then
		log "$name: build FAILED after $((SECONDS - t0))s"
		exit 1
	fi
	kill "$ticker" 2>/dev/null || true
	wait "$ticker" 2>/dev/null || true
	ticker=
	mv -f "$tmp" "$bin/$name"
	tmp=
	built=$((built + 1))
	log "$name: done in $((SECONDS - t0))s"
}

# Cheapest first, so a failure in the module setup shows up quickly.
build etcd "$tools/etcd" go.etcd.io/etcd/server/v3 ""
build kwok "$tools/kwok" sigs.k8s.io/kwok/cmd/kwok "$kwok_ldflags"
build kube-apiserver "$tools/kube" k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kube-controller-manager "$tools/kube" k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
build kube-scheduler "$tools/kube" k8s.io/kubernetes/cmd/kube-scheduler "$kube_ldflags"
build kubectl "$tools/kube" k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
# The kubelet for test/cluster's real nodes (AddRealNode); about 1.5 min after
# the control plane, which shares most of its packages.
build kubelet "$tools/kube" k8s.io/kubernetes/cmd/kubelet "$kube_ldflags"
if [[ ${1:-} == e2e ]]; then
	build e2e.test "$tools/kube" k8s.io/kubernetes/test/e2e "$kube_ldflags" test
	build agnhost "$tools/kube" k8s.io/kubernetes/test/images/agnhost ""
fi

if ((built > 0)); then
	log "built $built binaries in $((SECONDS - start))s"
fi
echo "$bin"

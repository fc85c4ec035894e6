#!/usr/bin/env bash
# Builds carve's OCI images without Docker or a registry (`make images`):
#
#   carve-provisioner      cmd/provisioner (static binary alone)
#   carve-csi-controller   cmd/csi-driver on the Debian base (gluster CLI, ssh)
#   carve-csi-node         cmd/csi-driver on the Debian base (mount.nfs, mount.glusterfs, mount)
#   mongo-rs-agent         the example's replica-set agent
#   ferretdb               FerretDB v1.24.0 (the example's Mongo-wire server, SQLite backend)
#   carve-registrar        kubelet plugin registration (stands in for node-driver-registrar)
#   carve-livenessprobe    CSI Probe over HTTP (stands in for livenessprobe)
#   carve-resizer          ControllerExpandVolume on claim growth (stands in for csi-resizer)
#   csi-provisioner        kubernetes-csi external-provisioner v6.3.0, from the Go module proxy, with
#                          carve's patch to its library (hack/tools/csi-provisioner/*.patch): tag v6.3.0-carve.1
#   csi-snapshotter        kubernetes-csi external-snapshotter v8.4.0's sidecar, from the Go module proxy
#   snapshot-controller    the same release's snapshot-controller (deploy/snapshot-controller)
#   test-busybox, test-pause   for the real-node tests only (Debian's busybox-static; hack/tools/images/pause)
#
# The Debian base (mmdebstrap, about 4 minutes) and the sidecar and FerretDB
# binaries are cached outside the repository, keyed by their inputs; a warm
# run only rebuilds carve's binaries and re-assembles the images.
# Every image is a docker-archive tarball in OUT (default bin/images), listed
# with its digest in OUT/images.txt; load one with
#   ctr -n k8s.io images import OUT/carve-csi-node.tar   (containerd)
#   docker load -i OUT/carve-csi-node.tar                (Docker)
#   crane push OUT/carve-csi-node.tar REGISTRY/carve-csi-node:TAG
#
# Same inputs, same digests: timestamps are SOURCE_DATE_EPOCH (default the
# commit time of HEAD) and Go builds use -trimpath. The Debian base is
# reproducible only as long as the mirror serves the same package versions;
# the cached base tar pins it on one machine.
#
# Environment:
#   VERSION            tag of carve's own images (default: git describe)
#   REGISTRY           image name prefix (default ghcr.io/carve-csi)
#   CARVE_IMAGES_CACHE cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/carve/images)
#   DEBIAN_MIRROR      (default http://deb.debian.org/debian)
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/bin/images}
version=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
registry=${REGISTRY:-ghcr.io/carve-csi}
cache=${CARVE_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/carve/images}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
export GOWORK=off CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -trimpath"

log() { printf '[build-images] %s\n' "$*" >&2; }
start=$SECONDS
mkdir -p "$out/bin" "$cache"
exec 9>"$cache/.lock"
flock 9

# --- Debian base: the mount helpers the node plugin runs, and the gluster CLI
# and ssh the controller runs for Gluster quotas and volumes.
base_pkgs=(mount nfs-common glusterfs-client glusterfs-cli openssh-client ca-certificates)
base_suite=bookworm
base_key=$(printf '%s\n' "$base_suite" "$mirror" "${base_pkgs[@]}" v1 | sha256sum | cut -c1-16)
base=$cache/debian-$base_suite-$base_key.tar
if [[ ! -s $base ]]; then
	command -v mmdebstrap >/dev/null || { log "mmdebstrap missing: apt-get install mmdebstrap"; exit 1; }
	log "debian base: mmdebstrap $base_suite (${base_pkgs[*]}), about 4 minutes"
	t0=$SECONDS
	pkgs=$(IFS=,; echo "${base_pkgs[*]}")
	mmdebstrap --quiet --variant=essential --include="$pkgs" \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--format=tar "$base_suite" "$base.tmp" \
		"deb $mirror $base_suite main" "deb $mirror $base_suite-updates main" \
		"deb ${mirror%/debian}/debian-security $base_suite-security main" >&2
	mv "$base.tmp" "$base"
	log "debian base: done in $((SECONDS - t0))s ($(du -h "$base" | cut -f1))"
fi

# --- Tools: the image assembler and the pause program.
tools=$cache/bin
mkdir -p "$tools"
(cd "$root/hack/tools/images" && go build -o "$tools/" ./mkimage ./pause)

# gobuild MODULE_DIR OUT PACKAGE LDFLAGS [GO BUILD FLAGS...]: build a static binary.
gobuild() {
	local dir=$1 dst=$2 pkg=$3 ldflags=$4
	shift 4
	(cd "$dir" && go build "$@" -ldflags "-s -w $ldflags" -o "$dst" "$pkg")
}

# cached NAME VERSION MODULE_DIR PACKAGE LDFLAGS [GO BUILD FLAGS...]:
# third-party binaries are built once per version (a cold csi-provisioner
# build takes minutes).
cached() {
	local name=$1 ver=$2 dir=$3 pkg=$4 ldflags=$5 dst=$cache/bin/$1-$2
	shift 5
	if [[ ! -x $dst ]]; then
		log "$name $ver: building $pkg (cold: minutes)"
		local t0=$SECONDS
		gobuild "$dir" "$dst.tmp" "$pkg" "$ldflags" "$@"
		mv "$dst.tmp" "$dst"
		log "$name $ver: done in $((SECONDS - t0))s"
	fi
	cp "$dst" "$out/bin/$name"
}

modversion() { (cd "$1" && go list -m -f '{{.Version}}' "$2"); }

# patched_modfile MODULE_DIR DEP PATCH: prints a go.mod for MODULE_DIR whose
# DEP is replaced by a copy of its source with PATCH applied (git apply), in
# the cache and keyed by both, for go build -modfile.
patched_modfile() {
	local dir=$1 dep=$2 patch=$3 ver src key
	ver=$(modversion "$dir" "$dep")
	key=$(cat "$dir/go.mod" "$dir/go.sum" "$patch" | sha256sum | cut -c1-12)
	src=$cache/src/$(basename "$dir")-$key
	if [[ ! -s $src/go.mod ]]; then
		local from
		from=$(cd "$dir" && go mod download -json "$dep@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[[ -d $from ]] || { log "$dep@$ver: no source in the module cache"; return 1; }
		rm -rf "$src" && mkdir -p "$src"
		cp -r "$from" "$src/dep" && chmod -R u+w "$src/dep"
		# A repository of its own, so git apply patches exactly this tree.
		git -C "$src/dep" init -q && git -C "$src/dep" apply "$patch"
		cp "$dir/go.sum" "$src/go.sum"
		cp "$dir/go.mod" "$src/tmp.mod"
		(cd "$dir" && go mod edit -modfile="$src/tmp.mod" -replace="$dep=$src/dep")
		grep -q "=> $src/dep" "$src/tmp.mod" || { log "$dep: replace missing from $src/tmp.mod"; return 1; }
		mv "$src/tmp.mod" "$src/go.mod"
	fi
	echo "$src/go.mod"
}

log "carve $version: building binaries"
ld="-X github.com/carve-csi/carve/pkg/buildinfo.Version=$version"
gobuild "$root" "$out/bin/" ./cmd/provisioner "$ld"
gobuild "$root" "$out/bin/" ./cmd/csi-driver "$ld"
gobuild "$root/examples/mongo-statefulset/agent" "$out/bin/mongo-rs-agent" . "-X main.version=$version"
gobuild "$root/build/sidecars" "$out/bin/carve-registrar" ./registrar "-X main.version=$version"
gobuild "$root/build/sidecars" "$out/bin/carve-livenessprobe" ./livenessprobe "-X main.version=$version"
gobuild "$root/build/sidecars" "$out/bin/carve-resizer" ./resizer "-X main.version=$version"
# csi-provisioner with carve's patch to its provisioning library (the patch
# file says why); tagged -carve.N, the suffix deploy/ and the chart name.
prov_dir=$root/hack/tools/csi-provisioner
prov_patch=$prov_dir/lib-finalizer-delete-only.patch
prov_version=$(modversion "$prov_dir" github.com/kubernetes-csi/external-provisioner/v6)
prov_tag=$prov_version-carve.1
prov_modfile=$(patched_modfile "$prov_dir" sigs.k8s.io/sig-storage-lib-external-provisioner/v13 "$prov_patch")
prov_src=${prov_modfile%/go.mod}
cached csi-provisioner "$prov_tag-${prov_src##*-}" "$prov_dir" \
	github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner "-X main.version=$prov_tag" \
	-modfile="$prov_modfile"
# external-snapshotter's sidecar and controller, one module (hack/tools/external-snapshotter).
snap_version=$(modversion "$root/hack/tools/external-snapshotter" github.com/kubernetes-csi/external-snapshotter/v8)
for cmd in csi-snapshotter snapshot-controller; do
	cached "$cmd" "$snap_version" "$root/hack/tools/external-snapshotter" \
		"github.com/kubernetes-csi/external-snapshotter/v8/cmd/$cmd" "-X main.version=$snap_version"
done
# FerretDB through a small main of ours (hack/tools/ferretdb) on its embeddable
# package; a cold build takes a few minutes, then the Go build cache serves it.
ferret_version=$(modversion "$root/hack/tools/ferretdb" github.com/FerretDB/FerretDB)
gobuild "$root/hack/tools/ferretdb" "$out/bin/ferretdb" . ""
cp "$tools/pause" "$out/bin/pause"

busybox=/bin/busybox
[[ -x $busybox ]] || busybox=$(command -v busybox || true)

: >"$out/images.txt.tmp"
# image FILE REF KIND [mkimage flags...]; KIND tells the image test what to check.
image() {
	local file=$1 ref=$2 kind=$3
	shift 3
	local line
	line=$("$tools/mkimage" -ref "$ref" -out "$out/$file.tar" "$@")
	log "$file: $line"
	echo "$file $line $kind" >>"$out/images.txt.tmp"
}

b=$out/bin
image carve-provisioner "$registry/carve-provisioner:$version" carve \
	-file "$b/provisioner:/provisioner" -entrypoint /provisioner
image carve-csi-controller "$registry/carve-csi-controller:$version" controller \
	-rootfs "$base" -file "$b/csi-driver:/csi-driver" -entrypoint /csi-driver
image carve-csi-node "$registry/carve-csi-node:$version" node \
	-rootfs "$base" -file "$b/csi-driver:/csi-driver" -entrypoint /csi-driver
image mongo-rs-agent "$registry/mongo-rs-agent:$version" agent \
	-file "$b/mongo-rs-agent:/mongo-rs-agent" -entrypoint /mongo-rs-agent -user 65532:65532
image ferretdb "$registry/ferretdb:$ferret_version" ferretdb \
	-file "$b/ferretdb:/ferretdb" -entrypoint /ferretdb -user 65532:65532
image carve-registrar "$registry/carve-registrar:$version" sidecar \
	-file "$b/carve-registrar:/carve-registrar" -entrypoint /carve-registrar
image carve-livenessprobe "$registry/carve-livenessprobe:$version" sidecar \
	-file "$b/carve-livenessprobe:/carve-livenessprobe" -entrypoint /carve-livenessprobe
image carve-resizer "$registry/carve-resizer:$version" sidecar \
	-file "$b/carve-resizer:/carve-resizer" -entrypoint /carve-resizer
image csi-provisioner "$registry/csi-provisioner:$prov_tag" sidecar \
	-file "$b/csi-provisioner:/csi-provisioner" -entrypoint /csi-provisioner
image csi-snapshotter "$registry/csi-snapshotter:$snap_version" sidecar \
	-file "$b/csi-snapshotter:/csi-snapshotter" -entrypoint /csi-snapshotter
image snapshot-controller "$registry/snapshot-controller:$snap_version" sidecar \
	-file "$b/snapshot-controller:/snapshot-controller" -entrypoint /snapshot-controller
if [[ -n $busybox ]]; then
	image test-busybox "carve.test/busybox:1.35" busybox -busybox "$busybox" -cmd sh
else
	log "test-busybox: skipped (apt-get install busybox-static)"
fi
image test-pause "carve.test/pause:1.0" pause -file "$b/pause:/pause" -entrypoint /pause
mv "$out/images.txt.tmp" "$out/images.txt"
log "done in $((SECONDS - start))s: $out/images.txt"
echo "$out"

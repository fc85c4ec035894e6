#!/usr/bin/env bash
# Builds the images the upstream storage e2e suite pulls, for make conformance
# on the real node (no registry): agnhost (k8s.io/kubernetes/test/images/agnhost,
# built by hack/build-tools.sh e2e, on a busybox root as upstream's image), and
# busybox standing in for the suite's busybox, nginx and jessie-dnsutils (the
# storage specs use those two only as shells). Tags are e2e.test v1.34.4's
# (test/utils/image/manifest.go). Needs make images first (its mkimage).
#
#   hack/build-conformance-images.sh OUT TOOLS_BIN
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$1 toolsbin=$2
cache=${CARVE_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/carve/images}
mkimage=$cache/bin/mkimage
[[ -x $mkimage ]] || { echo "no $mkimage: run make images first" >&2; exit 1; }
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
busybox=/bin/busybox
[[ -x $busybox ]] || busybox=$(command -v busybox)
mkdir -p "$out"
e2e=registry.k8s.io/e2e-test-images
: >"$out/images.txt.tmp"
image() { # FILE REF mkimage-flags...
	local file=$1 ref=$2
	shift 2
	echo "$file $("$mkimage" -ref "$ref" -out "$out/$file.tar" "$@")" >>"$out/images.txt.tmp"
}
# upstream's agnhost image has /agnhost and the link /agnhost-2 (older tests).
image agnhost "$e2e/agnhost:2.56" -busybox "$busybox" \
	-file "$toolsbin/agnhost:/agnhost:0755" -file "$toolsbin/agnhost:/agnhost-2:0755" -entrypoint /agnhost
image busybox "$e2e/busybox:1.37.0-1" -busybox "$busybox" -cmd sh
image nginx "$e2e/nginx:1.14-4" -busybox "$busybox" -cmd sh
image jessie-dnsutils "$e2e/jessie-dnsutils:1.7" -busybox "$busybox" -cmd sh
mv "$out/images.txt.tmp" "$out/images.txt"
echo "$out"

#!/usr/bin/env bash
# Installs what carve's tests use: a real NFS server (nfs-ganesha) with a
# userspace client (libnfs-utils), and GlusterFS (server + FUSE client); for
# the real node of `make e2e` containerd, runc and the CNI plugins, busybox for
# its test image, and mmdebstrap for the images' Debian base (`make images`);
# btrfs-progs and xfsprogs for the loop filesystems of the btrfs layout's and
# the reflink copies' tests (internal/testenv/loopfs); openssh-server and bindfs
# for the btrfs layout over ssh (a real sshd on 127.0.0.1, carve's view of the
# share through FUSE: internal/testenv/sshd, pkg/nfs).
set -euo pipefail
pkgs=(nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils glusterfs-server glusterfs-client
  containerd runc containernetworking-plugins busybox-static mmdebstrap btrfs-progs xfsprogs
  openssh-server bindfs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all installed (${pkgs[*]})"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "deps: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

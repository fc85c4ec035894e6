// Package btrfssanity holds the csi-sanity run of carve's CSI driver with the
// NFS backend in the btrfs layout, on a real btrfs filesystem with quota. It
// is a package of its own because csi-sanity (Ginkgo) runs once per test
// binary.
package btrfssanity

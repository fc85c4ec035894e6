// Package glustersanity holds the second csi-sanity run of carve's CSI driver,
// with the Gluster backend on a real glusterd and real FUSE mounts. It is a
// package of its own because csi-sanity (Ginkgo) runs once per test binary.
package glustersanity

// Package buildinfo holds the version stamped in at build time.
package buildinfo

// Version is set with -ldflags "-X github.com/carve-csi/carve/pkg/buildinfo.Version=v1.2.3".
var Version = "dev"

//go:build tools

// Package tools pins csi-provisioner, the one kubernetes-csi sidecar that the
// Go module proxy serves at the version deploy/csi-driver uses, so
// hack/build-images.sh can build its image from source.
package tools

import (
	_ "github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner"
)

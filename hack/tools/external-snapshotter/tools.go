//go:build tools

// Package tools pins kubernetes-csi external-snapshotter (the csi-snapshotter
// sidecar and the snapshot-controller) and its client module (the
// snapshot.storage.k8s.io CRDs), so hack/build-images.sh can build their
// images from source and hack/gen-snapshot-crds.sh can copy the CRDs.
//
// The snapshotter's go.mod replaces its client module with ./client and pins
// every k8s.io module to v0.34.0 with replace directives; replace directives
// of a dependency do not apply here, so go.mod repeats them (client/v8 at
// the same release, k8s.io at v0.34.0). Without them the build picks newer
// k8s.io modules and fails to compile.
package tools

import (
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter"
	_ "github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller"
)

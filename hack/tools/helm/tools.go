//go:build tools

// Package tools pins Helm, which hack/helm.sh builds for the chart tests
// (charts/carve). A module of its own: Helm needs newer k8s.io modules than
// carve's go.mod pins, and its dependencies must not reach carve's. To move
// to another version (the module proxy answers explicit versions only):
//
//	cd hack/tools/helm && GOWORK=off GOFLAGS=-mod=mod go get helm.sh/helm/v3@vX.Y.Z && GOWORK=off go mod tidy
package tools

import _ "helm.sh/helm/v3/cmd/helm"

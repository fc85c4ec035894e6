//go:build tools

// Package tools pins kwok, built by hack/build-tools.sh. It is a module of its
// own so kwok keeps the Kubernetes library versions it was released with.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"

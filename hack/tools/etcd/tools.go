//go:build tools

// Package tools pins etcd, built by hack/build-tools.sh. It is a module of its
// own because etcd v3.5's server cannot share a build list with Kubernetes
// v1.34, which requires the v3.6 etcd client modules.
package tools

import _ "go.etcd.io/etcd/server/v3"

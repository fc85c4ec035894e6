//go:build tools

// Package lint pins the static analyser `make lint` runs (staticcheck), in a
// module of its own so its dependencies never reach carve's go.mod.
package lint

import _ "honnef.co/go/tools/cmd/staticcheck"

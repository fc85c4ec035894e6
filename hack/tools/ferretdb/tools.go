//go:build tools

// Package tools pins FerretDB (a MongoDB wire-protocol server; SQLite
// backend) for the example's image, built by hack/build-images.sh.
package tools

import (
	_ "github.com/FerretDB/FerretDB/cmd/ferretdb"
)

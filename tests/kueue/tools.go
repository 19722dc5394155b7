//go:build tools

// Package tools pins the Kueue controller the Kueue integration tests run, so that
// `go mod tidy` keeps its dependencies in go.mod and go.sum.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)

//go:build tools

// Package tools pins the helm command (its own module, so that helm's Kubernetes client
// libraries never fight with the versions in ../kubernetes).
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)

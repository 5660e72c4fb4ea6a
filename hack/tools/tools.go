//go:build tools

// Package tools pins the versions of the programs the image ships next to the
// plugin, so that `go build` of them uses go.mod's versions.
package tools

import (
	// nvidia-cdi-hook creates the driver's symlinks and refreshes the linker
	// cache in containers; the CDI specs name it.
	_ "github.com/NVIDIA/nvidia-container-toolkit/cmd/nvidia-cdi-hook"
)

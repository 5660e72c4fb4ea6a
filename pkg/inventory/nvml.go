package inventory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// ErrNVMLUnavailable means the NVML library could not be loaded or
// initialized: no driver, or the driver root does not hold it.
var ErrNVMLUnavailable = errors.New("NVML is not available")

// librarySearchDirs are the directories, relative to a driver root, where
// distributions and the driver container install libnvidia-ml.so.1.
var librarySearchDirs = []string{
	"usr/lib64",
	"usr/lib/x86_64-linux-gnu",
	"usr/lib/aarch64-linux-gnu",
	"usr/lib",
	"lib64",
	"lib/x86_64-linux-gnu",
	"lib/aarch64-linux-gnu",
}

// LoadNVML loads the NVIDIA driver's libnvidia-ml.so.1 (looked up under
// driverRoot first, then through the dynamic linker) and initializes it. A
// failure wraps ErrNVMLUnavailable and says what to check; hint, when set,
// is appended to it (the caller's advice for nodes without GPUs).
//
// The caller owns the returned library and must call Shutdown on it.
func LoadNVML(driverRoot, hint string) (lib nvml.Interface, err error) {
	var opts []nvml.LibraryOption
	if path := FindNVMLLibrary(driverRoot); path != "" {
		opts = append(opts, nvml.WithLibraryPath(path))
	}
	lib = nvml.New(opts...)
	// go-nvml panics instead of returning an error in a few loader paths
	// (symbol lookups on a broken library); turn that into an error too.
	defer func() {
		if r := recover(); r != nil {
			lib, err = nil, fmt.Errorf("%w: loading libnvidia-ml.so.1 failed: %v", ErrNVMLUnavailable, r)
		}
	}()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		msg := fmt.Sprintf("nvmlInit: %s (driver root %q): is the NVIDIA driver installed and the driver root right?", nvml.ErrorString(ret), driverRoot)
		if hint != "" {
			msg += " " + hint
		}
		return nil, fmt.Errorf("%w: %s", ErrNVMLUnavailable, msg)
	}
	return lib, nil
}

// FindNVMLLibrary returns the path of libnvidia-ml.so.1 under driverRoot, or
// "" when the driver root has none in the usual library directories.
func FindNVMLLibrary(driverRoot string) string {
	if driverRoot == "" {
		return ""
	}
	for _, dir := range librarySearchDirs {
		p := filepath.Join(driverRoot, dir, "libnvidia-ml.so.1")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

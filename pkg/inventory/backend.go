package inventory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// BackendReal selects the NVIDIA driver's libnvidia-ml.
const BackendReal = "real"

// mockPrefix selects a go-nvml mock machine, e.g. "mock:dgxh100".
const mockPrefix = "mock:"

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

// Open returns an initialized NVML for backend, which is BackendReal or
// "mock:<machine>" (see MockMachines). seed makes mock UUIDs stable and
// distinct per node; it is ignored for the real backend. For the real
// backend, libnvidia-ml.so.1 is looked up under driverRoot first, then
// through the dynamic linker.
//
// The caller owns the returned library and must call Shutdown on it.
func Open(backend, driverRoot, seed string) (nvml.Interface, error) {
	switch {
	case backend == BackendReal || backend == "":
		return openReal(driverRoot)
	case strings.HasPrefix(backend, mockPrefix):
		s, err := NewMock(strings.TrimPrefix(backend, mockPrefix), seed)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown NVML backend %q: use %q or one of %s", backend, BackendReal, strings.Join(mockBackendNames(), ", "))
}

func openReal(driverRoot string) (lib nvml.Interface, err error) {
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
		return nil, fmt.Errorf("%w: nvmlInit: %s (driver root %q): is the NVIDIA driver installed and the driver root right? On a node without GPUs use a mock backend such as --nvml=mock:dgxh100",
			ErrNVMLUnavailable, nvml.ErrorString(ret), driverRoot)
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

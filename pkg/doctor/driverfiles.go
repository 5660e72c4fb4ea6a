package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// mockNotReadyFix explains missing mock driver files: the plugin lays them
// out when it starts, so an init container that runs before it may not find
// them on a node's first start.
const mockNotReadyFix = "none needed before the plugin's first start on this node: the plugin lays out the mock driver files and device nodes when it starts; if this persists, check the plugin's log for mock host errors"

// driverRootForFiles is where this process reads the driver's files, and
// how to name it in messages.
func (e *env) driverRootForFiles() (dir, name string) {
	if e.mock {
		return e.host.path(e.cfg.MockHostRoot), "mock host root " + e.cfg.MockHostRoot
	}
	root := e.cfg.DriverRoot
	if root == "" {
		root = "/"
	}
	return root, "driver root " + root
}

// checkDriverLibraries checks that the driver root holds the libraries of
// the running driver version, none of them empty: a truncated library
// (a full disk during an upgrade) is mounted into containers as is and
// makes CUDA fail there with obscure errors.
func checkDriverLibraries(e *env) Result {
	const check = "driver/libraries"
	root, name := e.driverRootForFiles()
	missing := func(detail, fix string) Result {
		if e.mock {
			return Result{Check: check, Status: Warn, Detail: detail, Fix: mockNotReadyFix}
		}
		return Result{Check: check, Status: Fail, Detail: detail, Fix: fix}
	}
	if _, err := os.Stat(root); err != nil {
		return missing(fmt.Sprintf("%s: %v", name, err), "point --driver-root (NVIDIA_DRIVER_ROOT) at the driver's installation root")
	}
	nvmlLib := inventory.FindNVMLLibrary(root)
	if nvmlLib == "" {
		return missing(fmt.Sprintf("%s has no libnvidia-ml.so.1 in its library directories", name),
			"install the NVIDIA driver's user-space libraries, or point --driver-root (NVIDIA_DRIVER_ROOT) at the root that holds them")
	}
	if e.driver == nil {
		return Result{Check: check, Status: Warn, Detail: fmt.Sprintf("%s has %s, but the running driver version is unknown (NVML failed)", name, nvmlLib),
			Fix: "fix the nvml check first"}
	}
	version := e.driver.DriverVersion
	libDir := filepath.Dir(nvmlLib)
	entries, err := os.ReadDir(libDir)
	if err != nil {
		return Result{Check: check, Status: Fail, Detail: fmt.Sprintf("reading %s: %v", libDir, err), Fix: "make the driver's library directory readable by this process"}
	}
	var found, empty []string
	for _, ent := range entries {
		if !strings.HasPrefix(ent.Name(), "lib") || !strings.HasSuffix(ent.Name(), ".so."+version) || !ent.Type().IsRegular() {
			continue
		}
		found = append(found, ent.Name())
		if info, err := ent.Info(); err == nil && info.Size() == 0 {
			empty = append(empty, filepath.Join(libDir, ent.Name()))
		}
	}
	sort.Strings(found)
	var absent []string
	for _, lib := range []string{"libnvidia-ml.so." + version, "libcuda.so." + version} {
		if !contains(found, lib) {
			absent = append(absent, filepath.Join(libDir, lib))
		}
	}
	switch {
	case len(empty) > 0:
		return Result{Check: check, Status: Fail,
			Detail: fmt.Sprintf("zero-byte driver libraries of driver %s: %s", version, pathList(empty, 5)),
			Fix:    fmt.Sprintf("reinstall the NVIDIA driver %s (the files were truncated, e.g. by a full disk during an upgrade), then regenerate CDI specs with `gpudra cdi generate --output /etc/cdi/nvidia.yaml` and restart the GPU plugin", version)}
	case len(absent) > 0:
		return missing(fmt.Sprintf("%s lacks libraries of the running driver %s: %s", name, version, pathList(absent, 5)),
			fmt.Sprintf("the user-space libraries do not match the loaded kernel module %s: finish the driver upgrade (install the matching user-space package) or reboot into the new kernel module", version))
	}
	return Result{Check: check, Status: Pass, Detail: fmt.Sprintf("%d libraries of driver %s in %s", len(found), version, libDir)}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

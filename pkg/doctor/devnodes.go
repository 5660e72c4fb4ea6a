package doctor

import (
	"fmt"
	"os"
	"path/filepath"
)

// checkDeviceNodes checks the device nodes that the CDI specs name: the
// control nodes and one /dev/nvidia<minor> per GPU NVML reports. They must
// be character devices on the host, or containers get no GPU.
func checkDeviceNodes(e *env) Result {
	const check = "driver/device-nodes"
	// Host paths (the mock host root, the host's /) are read under the host
	// root; an explicit --dev-root is where this process sees them. Without
	// one, the nodes are where the CDI edits take them from
	// (cdi.EditsOptions.DevRoot): under the driver root when it holds
	// dev/nvidiactl (a driver container's root), else under the host's /.
	devRoot, stat := "/", e.host.stat
	switch {
	case e.mock:
		devRoot = e.cfg.MockHostRoot
	case e.cfg.DevRoot != "":
		devRoot, stat = e.cfg.DevRoot, os.Stat
	case e.driverRootHoldsDevNodes():
		devRoot, stat = e.cfg.DriverRoot, os.Stat
	}
	names := []string{"nvidiactl", "nvidia-uvm"}
	if e.driver != nil {
		for _, d := range e.driver.Devices {
			names = append(names, fmt.Sprintf("nvidia%d", d.Minor))
		}
	}
	var missing, wrong []string
	for _, n := range names {
		p := filepath.Join(devRoot, "dev", n)
		info, err := stat(p)
		switch {
		case err != nil:
			missing = append(missing, p)
		case info.Mode()&os.ModeCharDevice == 0:
			wrong = append(wrong, p)
		}
	}
	switch {
	case len(missing) == 0 && len(wrong) == 0:
		return Result{Check: check, Status: Pass, Detail: fmt.Sprintf("%d device nodes present under %s", len(names), filepath.Join(devRoot, "dev"))}
	case e.mock:
		return Result{Check: check, Status: Warn, Detail: fmt.Sprintf("mock device nodes missing or not character devices: %s", pathList(append(missing, wrong...), 5)), Fix: mockNotReadyFix}
	case len(wrong) > 0:
		return Result{Check: check, Status: Fail, Detail: "not character devices: " + pathList(wrong, 5),
			Fix: "remove these files (something created them as plain files) and recreate the nodes with `nvidia-modprobe -c=<minor>` (control: `nvidia-modprobe -c=255`, uvm: `nvidia-modprobe -u -c=0`)"}
	}
	fix := "load the driver's kernel modules and create the nodes: `nvidia-modprobe -u -c=0` for nvidia-uvm, `nvidia-smi` creates the others (or enable nvidia-persistenced)"
	if e.driver == nil {
		fix += "; NVML failed, so the per-GPU nodes were not checked"
	}
	return Result{Check: check, Status: Fail, Detail: "missing: " + pathList(missing, 5), Fix: fix}
}

// driverRootHoldsDevNodes tells whether the driver root, as this process
// sees it, is not the host's / and has dev/nvidiactl: the driver's device
// nodes are then under it.
func (e *env) driverRootHoldsDevNodes() bool {
	root := e.cfg.DriverRoot
	if root == "" || filepath.Clean(root) == filepath.Clean(e.host.path("/")) {
		return false
	}
	_, err := os.Stat(filepath.Join(root, "dev", "nvidiactl"))
	return err == nil
}

package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/node"
)

// checkNVML loads NVML as the plugin does and reads the driver version.
// The inventory is nil when NVML is unusable. GPUs that NVML enumerates but
// cannot use are named with the fix (reset or drain; see unusableResult).
func checkNVML(ctx context.Context, cfg Config) (Result, *inventory.Inventory) {
	const check = "nvml"
	inv, err := openNVML(ctx, cfg)
	if err != nil {
		fix := "install or load the NVIDIA driver (nvidia-smi must work on the host) and point --driver-root (NVIDIA_DRIVER_ROOT) at its root: / for a host install, /run/nvidia/driver for the GPU Operator's driver container"
		if b, perr := node.ParseBackend(cfg.NVMLBackend, ""); perr != nil || b.Mock() {
			fix = fmt.Sprintf("use one of the mock machines mock:%v in --nvml (NVML_BACKEND)", mockmachine.Names())
		}
		return Result{Check: check, Status: Fail, Detail: fmt.Sprintf("backend %q, driver root %q: %v", backendName(cfg), cfg.DriverRoot, err), Fix: fix}, nil
	}
	detail := fmt.Sprintf("backend %q: driver %s, CUDA %s, %d GPUs", backendName(cfg), inv.DriverVersion, inv.CUDADriverVersion, len(inv.Devices))
	if len(inv.Unusable) > 0 {
		return unusableResult(check, detail, inv, cfg.PreStart), inv
	}
	if len(inv.Devices) == 0 {
		return Result{Check: check, Status: Warn, Detail: detail,
			Fix: "NVML sees no GPU: check `nvidia-smi -L` and the kernel log (dmesg | grep -i nvrm) for GPUs that fell off the bus"}, inv
	}
	return Result{Check: check, Status: Pass, Detail: detail}, inv
}

func backendName(cfg Config) string {
	if cfg.NVMLBackend == "" {
		return node.BackendReal
	}
	return cfg.NVMLBackend
}

// unusableResult is the nvml check of a driver that works but cannot use
// some GPUs: WARN while other GPUs are usable (the plugins serve them and
// report these), FAIL when none is, except before the plugin starts
// (preStart): the plugin must run to taint the unusable GPUs in its slices,
// so the doctor never keeps it from starting for them. It names every
// unusable GPU with its error, and the fix is to reset them or drain the
// node: the driver is installed, reinstalling it fixes nothing.
func unusableResult(check, detail string, inv *inventory.Inventory, preStart bool) Result {
	status := Warn
	if len(inv.Devices) == 0 && !preStart {
		status = Fail
	}
	var gpus, resets []string
	for _, u := range inv.Unusable {
		gpus = append(gpus, fmt.Sprintf("%s: %v", u, u.Err))
		resets = append(resets, fmt.Sprintf("`nvidia-smi -r -i %d`", u.Index))
	}
	detail += fmt.Sprintf(" usable; %d unusable: %s", len(inv.Unusable), strings.Join(gpus, "; "))
	fix := inv.Unusable[0].Fix()
	if len(inv.Unusable) > 1 {
		fix = fmt.Sprintf("reset the GPUs with %s (stop the processes using them first) and restart the GPU plugins on the node, "+
			"or drain the node and reboot it; if the kernel log (dmesg | grep -i nvrm) shows Xid 79 or a GPU keeps failing, have it replaced",
			strings.Join(resets, ", "))
	}
	return Result{Check: check, Status: status, Detail: detail, Fix: fix}
}

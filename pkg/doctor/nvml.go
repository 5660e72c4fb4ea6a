package doctor

import (
	"context"
	"fmt"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/node"
)

// checkNVML loads NVML as the plugin does and reads the driver version.
// The inventory is nil when NVML is unusable.
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

package mockmachine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// FaultsFile is the file, in the driver root of a mock machine (the mock
// host root in the chart's mock mode), whose faults the mock NVML backend
// applies when it opens the machine (see ApplyFaults): every binary that
// opens the node then discovers the same broken GPUs. Write it before the
// plugins start (or restart them); remove it to repair the GPUs.
const FaultsFile = "fail-gpus"

// faultCalls are the NVML calls of a mock GPU that FailDevice can make
// fail, by the name FailDevice and ApplyFaults take.
var faultCalls = map[string]func(d *server.Device, ret nvml.Return){
	"uuid": func(d *server.Device, ret nvml.Return) {
		d.GetUUIDFunc = func() (string, nvml.Return) { return "", ret }
	},
	"minor": func(d *server.Device, ret nvml.Return) {
		d.GetMinorNumberFunc = func() (int, nvml.Return) { return 0, ret }
	},
	"pci": func(d *server.Device, ret nvml.Return) {
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{}, ret }
	},
	"name": func(d *server.Device, ret nvml.Return) {
		d.GetNameFunc = func() (string, nvml.Return) { return "", ret }
	},
	"brand": func(d *server.Device, ret nvml.Return) {
		d.GetBrandFunc = func() (nvml.BrandType, nvml.Return) { return 0, ret }
	},
	"architecture": func(d *server.Device, ret nvml.Return) {
		d.GetArchitectureFunc = func() (nvml.DeviceArchitecture, nvml.Return) { return 0, ret }
	},
	"compute-capability": func(d *server.Device, ret nvml.Return) {
		d.GetCudaComputeCapabilityFunc = func() (int, int, nvml.Return) { return 0, 0, ret }
	},
	"memory": func(d *server.Device, ret nvml.Return) {
		d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, ret }
	},
	// The NVLink fabric query: the GPU is then published without its
	// fabric attributes, and stays usable.
	"fabric": func(d *server.Device, ret nvml.Return) {
		d.GetGpuFabricInfoFunc = func() (nvml.GpuFabricInfo, nvml.Return) { return nvml.GpuFabricInfo{}, ret }
	},
	// The MIG devices of a GPU in MIG mode.
	"mig": func(d *server.Device, ret nvml.Return) {
		d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, ret }
	},
}

// FaultCalls lists the calls FailDevice accepts: those of faultCalls, "all"
// (every one of them: a GPU that fell off the bus answers nothing) and
// "handle" (DeviceGetHandleByIndex of the GPU's index).
func FaultCalls() []string {
	out := []string{"all", "handle"}
	for c := range faultCalls {
		out = append(out, c)
	}
	sort.Strings(out[2:])
	return out
}

// FailDevice makes the NVML call named call (see FaultCalls) of the mock GPU
// at index fail with ret from now on, as a lost or broken GPU does: e.g.
// FailDevice(s, 5, "memory", nvml.ERROR_GPU_IS_LOST). s is a machine of New;
// call FailDevice before anything else uses s (it sets the mock's function
// fields without locking).
func FailDevice(s *server.Server, index int, call string, ret nvml.Return) error {
	if index < 0 || index >= len(s.Devices) {
		return fmt.Errorf("mock faults: no GPU %d: the machine has GPUs 0..%d", index, len(s.Devices)-1)
	}
	if ret == nvml.SUCCESS {
		return errors.New("mock faults: a fault needs an NVML error, not SUCCESS")
	}
	d, ok := s.Devices[index].(*server.Device)
	if !ok {
		return fmt.Errorf("mock faults: GPU %d has unexpected type %T", index, s.Devices[index])
	}
	switch call {
	case "handle":
		next := s.DeviceGetHandleByIndexFunc
		s.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
			if i == index {
				return nil, ret
			}
			return next(i)
		}
	case "all":
		for _, set := range faultCalls {
			set(d, ret)
		}
	default:
		set, ok := faultCalls[call]
		if !ok {
			return fmt.Errorf("mock faults: unknown call %q: use one of %s", call, strings.Join(FaultCalls(), ", "))
		}
		set(d, ret)
	}
	return nil
}

// faultReturns are the NVML errors ApplyFaults accepts, by name without
// the ERROR_ prefix.
var faultReturns = map[string]nvml.Return{
	"GPU_IS_LOST":    nvml.ERROR_GPU_IS_LOST,
	"UNKNOWN":        nvml.ERROR_UNKNOWN,
	"RESET_REQUIRED": nvml.ERROR_RESET_REQUIRED,
	"NOT_FOUND":      nvml.ERROR_NOT_FOUND,
	"NO_PERMISSION":  nvml.ERROR_NO_PERMISSION,
	"TIMEOUT":        nvml.ERROR_TIMEOUT,
}

// ApplyFaults applies faults, one per line, to s (see FailDevice); blank
// lines and lines starting with # are skipped:
//
//	<index> <call> [<error>]   e.g. "5 memory", "3 all UNKNOWN"
//
// <call> is one of FaultCalls; <error> an NVML error name (GPU_IS_LOST,
// the default, UNKNOWN, RESET_REQUIRED, NOT_FOUND, NO_PERMISSION,
// TIMEOUT; with or without the ERROR_ prefix). It returns how many faults
// it applied; every line is tried, and the error joins the failures, each
// naming its line.
func ApplyFaults(s *server.Server, r io.Reader) (int, error) {
	var errs []error
	n := 0
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if err := applyFault(s, text); err != nil {
			errs = append(errs, fmt.Errorf("line %d %q: %w", line, text, err))
			continue
		}
		n++
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

func applyFault(s *server.Server, line string) error {
	f := strings.Fields(line)
	if len(f) < 2 || len(f) > 3 {
		return errors.New("want <index> <call> [<error>], e.g. \"5 memory GPU_IS_LOST\"")
	}
	index, err := strconv.Atoi(f[0])
	if err != nil {
		return fmt.Errorf("GPU index %q is not a number", f[0])
	}
	ret := nvml.ERROR_GPU_IS_LOST
	if len(f) == 3 {
		var ok bool
		if ret, ok = faultReturns[strings.TrimPrefix(strings.ToUpper(f[2]), "ERROR_")]; !ok {
			return fmt.Errorf("unknown NVML error %q: use GPU_IS_LOST, UNKNOWN, RESET_REQUIRED, NOT_FOUND, NO_PERMISSION or TIMEOUT", f[2])
		}
	}
	return FailDevice(s, index, f[1], ret)
}

// ApplyFaultsFile applies the faults of the file at path (see ApplyFaults);
// a missing file applies none.
func ApplyFaultsFile(s *server.Server, path string) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mock faults: %w", err)
	}
	defer f.Close()
	n, err := ApplyFaults(s, f)
	if err != nil {
		return n, fmt.Errorf("mock faults in %s: %w", path, err)
	}
	return n, nil
}

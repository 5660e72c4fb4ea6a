package inventory_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// TestDiscoverSkipsUnusableGPUs: a GPU whose NVML calls fail is set aside
// with what NVML could read of it, and the other GPUs are discovered as
// usual; Discover fails only for the driver-wide calls.
func TestDiscoverSkipsUnusableGPUs(t *testing.T) {
	lib, err := mockmachine.New("dgxh100", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	healthy, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		index int
		call  string
		ret   nvml.Return
	}{
		{5, "memory", nvml.ERROR_GPU_IS_LOST}, // only one call fails
		{2, "all", nvml.ERROR_UNKNOWN},        // nothing readable
		{7, "handle", nvml.ERROR_GPU_IS_LOST}, // no handle at all
	} {
		if err := mockmachine.FailDevice(lib, f.index, f.call, f.ret); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatalf("Discover with broken GPUs: %v", err)
	}
	var indexes []int
	for _, d := range inv.Devices {
		indexes = append(indexes, d.Index)
		if d != healthy.Devices[d.Index] {
			t.Errorf("GPU %d differs next to broken GPUs: %+v, want %+v", d.Index, d, healthy.Devices[d.Index])
		}
	}
	if got := len(inv.Devices); got != 5 || indexes[2] != 3 || indexes[4] != 6 {
		t.Errorf("usable GPUs %v, want 0 1 3 4 6", indexes)
	}
	if len(inv.Unusable) != 3 {
		t.Fatalf("unusable GPUs %+v, want 2, 5 and 7", inv.Unusable)
	}
	two, five, seven := inv.Unusable[0], inv.Unusable[1], inv.Unusable[2]

	h5 := healthy.Devices[5]
	if five.Index != 5 || five.UUID != h5.UUID || five.Minor != h5.Minor || five.PCIBusID != h5.PCIBusID || five.ProductName != h5.ProductName {
		t.Errorf("GPU 5 = %+v: what NVML could read is lost (want UUID %s, minor %d, bus %s)", five, h5.UUID, h5.Minor, h5.PCIBusID)
	}
	if msg := five.Err.Error(); !strings.HasPrefix(msg, "reading memory info") || !strings.Contains(msg, "GPU_IS_LOST") {
		t.Errorf("GPU 5 error %q does not name the call and NVML's error", msg)
	}
	if !five.Lost() || !errors.Is(five.Err, nvml.ERROR_GPU_IS_LOST) {
		t.Errorf("GPU 5 is not reported lost: %v", five.Err)
	}
	if got := five.String(); got != "GPU 5 ("+h5.UUID+", PCI "+h5.PCIBusID+")" {
		t.Errorf("String() = %q", got)
	}
	if fix := five.Fix(); !strings.Contains(fix, "nvidia-smi -r -i 5") || !strings.Contains(fix, "drain the node") {
		t.Errorf("Fix() = %q, want a reset of GPU 5 or a drain", fix)
	}

	if two.Index != 2 || two.UUID != "" || two.Minor != -1 || two.PCIBusID != "" || two.Lost() {
		t.Errorf("GPU 2, which answers nothing: %+v", two)
	}
	if !strings.HasPrefix(two.Err.Error(), "reading UUID") || two.String() != "GPU 2" {
		t.Errorf("GPU 2: error %q, name %q", two.Err, two)
	}
	if seven.Index != 7 || seven.UUID != "" || seven.Minor != -1 || !seven.Lost() || !strings.Contains(seven.Err.Error(), "getting the NVML handle") {
		t.Errorf("GPU 7 without a handle: %+v", seven)
	}
}

// TestDiscoverSkipsAGPUWhoseMIGDevicesFail: a GPU in MIG mode whose MIG
// devices cannot be listed is unusable as a whole; the other GPU in MIG
// mode keeps its MIG devices.
func TestDiscoverSkipsAGPUWhoseMIGDevicesFail(t *testing.T) {
	lib, err := mockmachine.New("dgxa100"+mockmachine.MIGSuffix, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	if err := mockmachine.FailDevice(lib, 0, "mig", nvml.ERROR_UNKNOWN); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Unusable) != 1 || inv.Unusable[0].Index != 0 || inv.Unusable[0].UUID == "" || !strings.HasPrefix(inv.Unusable[0].Err.Error(), "in MIG mode: ") {
		t.Fatalf("unusable %+v, want GPU 0 in MIG mode", inv.Unusable)
	}
	if len(inv.Devices) != 7 || inv.Devices[0].Index != 1 {
		t.Errorf("%d usable GPUs from %d", len(inv.Devices), inv.Devices[0].Index)
	}
	if len(inv.MIGDevices) == 0 {
		t.Fatal("GPU 1 lost its MIG devices")
	}
	for _, m := range inv.MIGDevices {
		if m.ParentIndex != 1 {
			t.Errorf("MIG device %s of unusable GPU %d", m.UUID, m.ParentIndex)
		}
	}
}

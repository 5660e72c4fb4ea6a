package resourceslice

import (
	"fmt"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	resourceapi "k8s.io/api/resource/v1"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// TestUnusableDevices: a GPU that NVML cannot use is published under its
// usual name with what is known, no capacity and the NoSchedule taint
// gpu-lost (lost) or unusable (otherwise); Devices leaves it out.
func TestUnusableDevices(t *testing.T) {
	inv := mockInventory(t, "dgxh100", "node-1")
	lost := inv.Devices[5]
	inv.Devices = append(inv.Devices[:5], inv.Devices[6:]...)
	inv.Unusable = []inventory.UnusableDevice{
		{Index: 5, UUID: lost.UUID, Minor: lost.Minor, PCIBusID: lost.PCIBusID, ProductName: lost.ProductName,
			Err: fmt.Errorf("GPU 5: reading memory info: %w", nvml.ERROR_GPU_IS_LOST)},
		{Index: 8, Minor: -1, Err: fmt.Errorf("GPU 8: reading UUID: %w", nvml.ERROR_UNKNOWN)},
	}
	for _, d := range Devices(inv, devices.FromInventory(inv), Options{}) {
		if d.Name == "gpu-5" || d.Name == "gpu-8" {
			t.Errorf("Devices publishes the unusable %s", d.Name)
		}
	}
	devs := UnusableDevices(inv, "gpu.nvidia.com", Options{PCIeRoot: fakePCIeRoot})
	if len(devs) != 2 || devs[0].Name != "gpu-5" || devs[1].Name != "gpu-8" {
		t.Fatalf("unusable devices %+v, want gpu-5 and gpu-8", devs)
	}
	five, eight := devs[0], devs[1]
	for name, want := range map[resourceapi.QualifiedName]string{
		AttrType: "gpu", AttrUUID: lost.UUID, AttrProductName: lost.ProductName, AttrPCIBusID: lost.PCIBusID,
	} {
		if got := stringAttr(t, five, name); got != want {
			t.Errorf("gpu-5 %s = %q, want %q", name, got, want)
		}
	}
	wantRoot, _ := fakePCIeRoot(lost.PCIBusID)
	if got := stringAttr(t, five, AttrPCIeRoot); got != wantRoot {
		t.Errorf("gpu-5 pcieRoot %q, want %q", got, wantRoot)
	}
	if i := five.Attributes[AttrIndex].IntValue; i == nil || *i != 5 {
		t.Errorf("gpu-5 index %v", i)
	}
	if m := five.Attributes[AttrMinor].IntValue; m == nil || *m != int64(lost.Minor) {
		t.Errorf("gpu-5 minor %v", m)
	}
	if v := five.Attributes[AttrDriverVersion].VersionValue; v == nil || *v != "550.54.15" {
		t.Errorf("gpu-5 driverVersion %v", v)
	}
	if len(five.Capacity) != 0 {
		t.Errorf("gpu-5 has capacity %v", five.Capacity)
	}
	for _, absent := range []resourceapi.QualifiedName{AttrUUID, AttrMinor, AttrPCIBusID, AttrPCIeRoot, AttrProductName} {
		if _, ok := eight.Attributes[absent]; ok {
			t.Errorf("gpu-8 publishes unknown %s", absent)
		}
	}
	for d, want := range map[*resourceapi.Device]string{&devs[0]: TaintGPULost, &devs[1]: TaintUnusable} {
		if len(d.Taints) != 1 || d.Taints[0].Key != "gpu.nvidia.com/unhealthy" || d.Taints[0].Value != want ||
			d.Taints[0].Effect != resourceapi.DeviceTaintEffectNoSchedule || d.Taints[0].TimeAdded != nil {
			t.Errorf("%s taints %+v, want gpu.nvidia.com/unhealthy=%s:NoSchedule", d.Name, d.Taints, want)
		}
		checkAPILimits(t, *d)
	}
	// With health taints on top, the device keeps its own.
	tainted := WithTaints(devs, map[string][]resourceapi.DeviceTaint{"gpu-5": {HealthTaint("gpu.nvidia.com", "xid-79", resourceapi.DeviceTaintEffectNoExecute, time.Time{})}})
	if len(tainted[0].Taints) != 2 || tainted[0].Taints[0].Value != TaintGPULost {
		t.Errorf("health taints replace the unusable taint: %+v", tainted[0].Taints)
	}
	// A pool with one tainted device uses the lower per-slice limit.
	all := append(Devices(inv, devices.FromInventory(inv), Options{}), devs...)
	res := DriverResources("node-1", all, nil)
	if n := len(res.Pools["node-1"].Slices); n != 1 {
		t.Errorf("%d slices for %d devices", n, len(all))
	}
	if got := UnusableDevices(nil, "gpu.nvidia.com", Options{}); got == nil || len(got) != 0 {
		t.Errorf("nil inventory: %v", got)
	}
}

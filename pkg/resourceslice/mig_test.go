package resourceslice

import (
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
)

func TestDevicesMIGMock(t *testing.T) {
	inv := mockInventory(t, "dgxa100-mig", "node-a")
	devs := Devices(inv, devices.FromInventory(inv), Options{PCIeRoot: fakePCIeRoot})
	byName := map[string]resourceapi.Device{}
	for _, d := range devs {
		byName[d.Name] = d
		checkAPILimits(t, d)
		if errs := validation.IsDNS1123Label(d.Name); len(errs) > 0 {
			t.Errorf("device name %q is not a DNS label: %v", d.Name, errs)
		}
	}
	// 8 GPUs, two in MIG mode with 4 and 1 MIG devices.
	if len(devs) != 6+5 {
		t.Fatalf("got %d devices, want 6 GPUs and 5 MIG devices", len(devs))
	}
	for _, gone := range []string{"gpu-0", "gpu-1"} {
		if _, ok := byName[gone]; ok {
			t.Errorf("GPU %s is in MIG mode but published as a whole GPU", gone)
		}
	}
	if d, ok := byName["gpu-2"]; !ok || stringAttr(t, d, AttrType) != string(devices.KindGPU) {
		t.Errorf("gpu-2 (not in MIG mode) missing or not of type gpu")
	}
	want := map[string]string{
		// GPU instance IDs start at 1, as NVML's do.
		"gpu-0-mig-1g5gb-1":  "1g.5gb",
		"gpu-0-mig-1g5gb-2":  "1g.5gb",
		"gpu-0-mig-2g10gb-3": "2g.10gb",
		"gpu-0-mig-3g20gb-4": "3g.20gb",
		"gpu-1-mig-7g40gb-1": "7g.40gb",
	}
	for name, profile := range want {
		d, ok := byName[name]
		if !ok {
			t.Errorf("MIG device %s missing; devices: %v", name, deviceNamesOf(devs))
			continue
		}
		var m inventory.MIGDevice
		for _, x := range inv.MIGDevices {
			if devices.MIGName(x) == name {
				m = x
			}
		}
		if got := stringAttr(t, d, AttrType); got != string(devices.KindMIG) {
			t.Errorf("%s: type %q", name, got)
		}
		if got := stringAttr(t, d, AttrProfile); got != profile {
			t.Errorf("%s: profile %q, want %q", name, got, profile)
		}
		if got := stringAttr(t, d, AttrUUID); got != m.UUID {
			t.Errorf("%s: uuid %q, want %q", name, got, m.UUID)
		}
		if got := stringAttr(t, d, AttrParentUUID); got != inv.Devices[m.ParentIndex].UUID {
			t.Errorf("%s: parentUUID %q", name, got)
		}
		if got := stringAttr(t, d, AttrProductName); got != inv.Devices[m.ParentIndex].ProductName {
			t.Errorf("%s: productName %q", name, got)
		}
		if _, ok := d.Attributes[AttrMIGCapable]; ok {
			t.Errorf("%s: a MIG device has no migCapable attribute", name)
		}
		caps := map[resourceapi.QualifiedName]int64{
			CapacityMemory: int64(m.MemoryBytes), CapacityMultiprocessors: int64(m.Multiprocessors),
			CapacityCopyEngines: int64(m.CopyEngines), CapacityDecoders: int64(m.Decoders), CapacityEncoders: int64(m.Encoders),
			CapacityJPEGEngines: int64(m.JPEGs), CapacityOFAEngines: int64(m.OFAs),
		}
		for c, v := range caps {
			q, ok := d.Capacity[c]
			if !ok || q.Value.Value() != v {
				t.Errorf("%s: capacity %s = %v, want %d", name, c, q.Value.String(), v)
			}
		}
	}
	if q := byName["gpu-0-mig-3g20gb-4"].Capacity[CapacityMultiprocessors]; q.Value.Value() != 42 {
		t.Errorf("3g.20gb multiprocessors = %s, want 42 (the A100 profile)", q.Value.String())
	}
}

func deviceNamesOf(devs []resourceapi.Device) []string {
	var out []string
	for _, d := range devs {
		out = append(out, d.Name)
	}
	return out
}

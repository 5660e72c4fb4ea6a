package mocknvmltest

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/migmanager"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// TestDynamicMIGThroughTheLibrary: the driver's dynamic MIG, on the
// library through go-nvml's binding (the C path of a real node), reads the
// same MIG layouts as on the Go mock machine, creates and destroys MIG
// devices, refuses overlaps and the whole GPU while partitioned, and takes
// the GPU out of MIG mode with its last MIG device.
func TestDynamicMIGThroughTheLibrary(t *testing.T) {
	t.Parallel()
	runChild(t, "dynamic-mig", "dgxh100", "GPUDRA_MOCK_NVML_MACHINE=dgxh100", "GPUDRA_MOCK_NVML_SEED="+seed, "GPUDRA_MOCK_NVML_LOG=off")
}

func (c *child) dynamicMIG() {
	t := c.t
	_, ctx := ktesting.NewTestContext(t)
	lib := c.load()
	defer lib.Shutdown()
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	layouts, errs := inventory.DiscoverMIGLayouts(lib, inv)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	goLib, err := mockmachine.New(c.machine, c.seed)
	if err != nil {
		t.Fatal(err)
	}
	goInv, err := inventory.Discover(goLib)
	if err != nil {
		t.Fatal(err)
	}
	goLayouts, _ := inventory.DiscoverMIGLayouts(goLib, goInv)
	if !reflect.DeepEqual(layouts, goLayouts) {
		t.Fatalf("MIG layouts through the library differ from the Go mock's:\n%+v\n%+v", layouts, goLayouts)
	}
	gpu := inv.Devices[0]
	spec := func(profile string, start int) migmanager.Spec {
		p, ok := profileNamed(layouts[gpu.UUID], profile)
		if !ok {
			t.Fatalf("no profile %s", profile)
		}
		return migmanager.Spec{ParentUUID: gpu.UUID, GPUInstanceProfileIndex: p.ProfileIndex, GPUInstanceProfileID: p.GPUInstanceProfileID,
			ComputeInstanceProfileID: p.ComputeInstanceProfileID, Placement: inventory.MIGPlacement{Start: start, Size: p.Placements[0].Size}}
	}
	m := migmanager.New(lib, migmanager.Options{LeaveMIGModeWhenEmpty: map[string]bool{gpu.UUID: true}})
	var made []migmanager.Instance
	for _, start := range []int{0, 4} {
		inst, err := m.Create(ctx, spec("3g.40gb", start))
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, inst)
	}
	if made[0].UUID == made[1].UUID || !strings.HasPrefix(made[0].UUID, "MIG-") {
		t.Errorf("created %+v", made)
	}
	after, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.MIGDevices) != 2 || after.MIGDevices[0].UUID != made[0].UUID || after.MIGDevices[1].Profile != "3g.40gb" {
		t.Errorf("MIG devices after creation: %+v", after.MIGDevices)
	}
	if _, err := m.Create(ctx, spec("1g.10gb", 6)); !errors.Is(err, nvml.ERROR_INSUFFICIENT_RESOURCES) {
		t.Errorf("overlapping create: %v", err)
	}
	if err := m.UseWhole(ctx, gpu.UUID); err == nil {
		t.Error("UseWhole succeeded on a partitioned GPU")
	}
	for _, inst := range made {
		got, found, err := m.Lookup(ctx, inst.Spec)
		if err != nil || !found || got.UUID != inst.UUID {
			t.Errorf("Lookup(%v) = %+v, %v, %v", inst.Spec, got, found, err)
		}
		if err := m.Destroy(ctx, inst.Spec); err != nil {
			t.Fatal(err)
		}
	}
	h, r := lib.DeviceGetHandleByIndex(0)
	c.want("GPU 0", r, nvml.SUCCESS)
	if cur, pend, r := h.GetMigMode(); r != nvml.SUCCESS || cur != nvml.DEVICE_MIG_DISABLE || pend != nvml.DEVICE_MIG_DISABLE {
		t.Errorf("MIG mode after the last MIG device: %d/%d (%v), want disabled", cur, pend, r)
	}
}

func profileNamed(l inventory.MIGLayout, name string) (inventory.MIGProfile, bool) {
	for _, p := range l.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return inventory.MIGProfile{}, false
}

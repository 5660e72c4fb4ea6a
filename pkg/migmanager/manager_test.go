package migmanager

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// machine returns a mock machine, its inventory and its MIG layouts.
func machine(t *testing.T, name string) (nvml.Interface, *inventory.Inventory, map[string]inventory.MIGLayout) {
	t.Helper()
	lib, err := mockmachine.New(name, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	layouts, errs := inventory.DiscoverMIGLayouts(lib, inv)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return lib, inv, layouts
}

// spec is the MIG device of the profile named profile at placement start
// of GPU gpu.
func spec(t *testing.T, inv *inventory.Inventory, layouts map[string]inventory.MIGLayout, gpu int, profile string, start int) Spec {
	t.Helper()
	uuid := inv.Devices[gpu].UUID
	for _, p := range layouts[uuid].Profiles {
		if p.Name != profile {
			continue
		}
		for _, pl := range p.Placements {
			if pl.Start == start {
				return Spec{ParentUUID: uuid, GPUInstanceProfileIndex: p.ProfileIndex, GPUInstanceProfileID: p.GPUInstanceProfileID,
					ComputeInstanceProfileID: p.ComputeInstanceProfileID, Placement: pl}
			}
		}
	}
	t.Fatalf("GPU %d has no %s at memory slice %d", gpu, profile, start)
	return Spec{}
}

func TestCreateLookupDestroy(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	lib, inv, layouts := machine(t, "dgxh100")
	m := New(lib, Options{LeaveMIGModeWhenEmpty: map[string]bool{inv.Devices[0].UUID: true}})
	s3 := spec(t, inv, layouts, 0, "3g.40gb", 4)
	inst, err := m.Create(ctx, s3)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(inst.UUID, "MIG-") {
		t.Errorf("created %+v: want a MIG UUID", inst)
	}
	got, found, err := m.Lookup(ctx, s3)
	if err != nil || !found || got != inst {
		t.Errorf("Lookup = %+v, %v, %v; want %+v", got, found, err, inst)
	}
	// The 1g at memory slice 6 overlaps the 3g at 4-7.
	if _, err := m.Create(ctx, spec(t, inv, layouts, 0, "1g.10gb", 6)); !errors.Is(err, nvml.ERROR_INSUFFICIENT_RESOURCES) ||
		!strings.Contains(err.Error(), "taken by another MIG device") {
		t.Errorf("overlapping Create: %v, want ERROR_INSUFFICIENT_RESOURCES with the fix", err)
	}
	if _, err := m.Create(ctx, spec(t, inv, layouts, 0, "1g.10gb", 0)); err != nil {
		t.Fatal(err)
	}
	// The GPU holds MIG devices: it cannot be used whole.
	if err := m.UseWhole(ctx, inv.Devices[0].UUID); err == nil || !strings.Contains(err.Error(), "holds 2 MIG devices") {
		t.Errorf("UseWhole with MIG devices: %v", err)
	}
	gis, err := m.GPUInstances(inv.Devices[0].UUID)
	if err != nil || len(gis) != 2 || len(gis[0].ComputeInstances) != 1 {
		t.Fatalf("GPU instances = %+v, %v; want two with one compute instance each", gis, err)
	}
	for _, s := range []Spec{s3, spec(t, inv, layouts, 0, "1g.10gb", 0)} {
		for range 2 { // idempotent
			if err := m.Destroy(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
	}
	if gis, _ := m.GPUInstances(inv.Devices[0].UUID); len(gis) != 0 {
		t.Errorf("GPU instances after Destroy: %+v", gis)
	}
	h, _ := lib.DeviceGetHandleByIndex(0)
	if mode, _, _ := h.GetMigMode(); mode != nvml.DEVICE_MIG_DISABLE {
		t.Errorf("MIG mode after the last MIG device = %d, want disabled (LeaveMIGModeWhenEmpty)", mode)
	}
}

func TestModeSwitchThatNeedsAResetIsUndoneAndReported(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	lib, inv, layouts := machine(t, "dgxa100")
	var reported []*ModeError
	m := New(lib, Options{OnModeError: func(_ context.Context, err *ModeError) { reported = append(reported, err) }})
	_, err := m.Create(ctx, spec(t, inv, layouts, 2, "1g.5gb", 0))
	var me *ModeError
	if !errors.As(err, &me) || me.Status != nvml.ERROR_RESET_REQUIRED || !me.Enable || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("Create on an A100 out of MIG mode: %v, want a ModeError asking for a reset", err)
	}
	if len(reported) != 1 || reported[0].ParentUUID != inv.Devices[2].UUID {
		t.Errorf("OnModeError got %v", reported)
	}
	h, _ := lib.DeviceGetHandleByIndex(2)
	if cur, pend, _ := h.GetMigMode(); cur != nvml.DEVICE_MIG_DISABLE || pend != nvml.DEVICE_MIG_DISABLE {
		t.Errorf("MIG mode after the failed switch = %d/%d, want disabled with nothing pending", cur, pend)
	}
}

func TestCreateOnDifferentGPUsInParallel(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	lib, inv, layouts := machine(t, "dgxh200")
	var wg sync.WaitGroup
	m := New(lib, Options{})
	errs := make(chan error, 16)
	for gpu := range 8 {
		for _, start := range []int{0, 4} {
			wg.Go(func() {
				_, err := m.Create(ctx, spec(t, inv, layouts, gpu, "3g.71gb", start))
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for gpu := range 8 {
		if gis, err := m.GPUInstances(inv.Devices[gpu].UUID); err != nil || len(gis) != 2 {
			t.Errorf("GPU %d: %+v, %v; want two 3g instances", gpu, gis, err)
		}
	}
}

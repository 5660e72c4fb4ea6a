package claimstate

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/migmanager"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// dynamicEnv is an env over a mock H100 machine whose GPUs are all
// partitionable, with the real MIG manager over the mock's NVML.
type dynamicEnv struct {
	*env
	lib     *server.Server
	manager *migmanager.Manager
}

func newDynamicMIGEnv(t testing.TB) *dynamicEnv {
	t.Helper()
	e := newEnv(t)
	lib, err := mockmachine.New("dgxh100", nodeName)
	if err != nil {
		t.Fatal(err)
	}
	if e.inv, err = inventory.Discover(lib); err != nil {
		t.Fatal(err)
	}
	layouts, errs := inventory.DiscoverMIGLayouts(lib, e.inv)
	if len(errs) != 0 || len(layouts) != len(e.inv.Devices) {
		t.Fatalf("MIG layouts: %d of %d GPUs, errors %v", len(layouts), len(e.inv.Devices), errs)
	}
	e.set = devices.FromInventoryWith(e.inv, devices.Options{Partitionable: layouts})
	e.edits = &fakeEdits{inv: e.inv}
	withMIG, err := cdi.WithDynamicMIGCaps(e.edits, nil, mockmachine.MIGCapMinors(e.inv))
	if err != nil {
		t.Fatal(err)
	}
	e.migEdits = withMIG
	leave := map[string]bool{}
	for uuid := range layouts {
		leave[uuid] = true
	}
	m := migmanager.New(lib, migmanager.Options{LeaveMIGModeWhenEmpty: leave})
	e.mig = m
	e.restart()
	return &dynamicEnv{env: e, lib: lib, manager: m}
}

// instances returns "<GI profile>@<start>" of every GPU instance on GPU
// index i.
func (e *dynamicEnv) instances(i int) []string {
	e.t.Helper()
	gis, err := e.manager.GPUInstances(e.inv.Devices[i].UUID)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, gi := range gis {
		out = append(out, strings.Join([]string{itoa(gi.ProfileID), itoa(gi.Placement.Start)}, "@"))
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// destroyAll destroys every MIG device of GPU index i behind the State's
// back, through NVML.
func (e *dynamicEnv) destroyAll(i int) {
	e.t.Helper()
	h := e.lib.Devices[i]
	for idx := 0; idx < nvml.GPU_INSTANCE_PROFILE_COUNT; idx++ {
		p, ret := h.GetGpuInstanceProfileInfo(idx)
		if ret != nvml.SUCCESS {
			continue
		}
		gis, _ := h.GetGpuInstances(&p)
		for _, gi := range gis {
			for cidx := 0; cidx < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; cidx++ {
				cp, ret := gi.GetComputeInstanceProfileInfo(cidx, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
				if ret != nvml.SUCCESS {
					continue
				}
				cis, _ := gi.GetComputeInstances(&cp)
				for _, ci := range cis {
					if ret := ci.Destroy(); ret != nvml.SUCCESS {
						e.t.Fatal(ret)
					}
				}
			}
			if ret := gi.Destroy(); ret != nvml.SUCCESS {
				e.t.Fatal(ret)
			}
		}
	}
}

func (e *dynamicEnv) record(uid string) *checkpoint.ClaimRecord {
	e.t.Helper()
	store, err := checkpoint.NewStore(e.ckptDir)
	if err != nil {
		e.t.Fatal(err)
	}
	rec, err := store.Get(uid)
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func TestDynamicMIGPrepareCreatesAndUnprepareDestroys(t *testing.T) {
	e := newDynamicMIGEnv(t)
	const dev = "gpu-0-mig-1g10gb-19-6"
	c := claim("uid-1", "one", result{request: "mig", device: dev})
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := e.instances(0); len(got) != 1 || got[0] != "19@6" {
		t.Fatalf("GPU instances after prepare = %v, want [19@6]", got)
	}
	rec := e.record("uid-1")
	m := rec.Devices[0].MIG
	if m == nil || !m.Created || !strings.HasPrefix(m.UUID, "MIG-") || rec.Devices[0].UUID != m.UUID || m.PlacementStart != 6 || m.PlacementSize != 1 {
		t.Fatalf("recorded MIG device = %+v (device UUID %q)", m, rec.Devices[0].UUID)
	}
	spec, err := cdiapi.ReadSpec(e.specPath("uid-1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	d := spec.GetDevice("uid-1-" + dev)
	if d == nil {
		t.Fatalf("spec lacks %s", dev)
	}
	var paths []string
	for _, n := range d.ContainerEdits.DeviceNodes {
		paths = append(paths, n.Path)
	}
	caps := mockmachine.MIGCapMinors(e.inv)
	wantGI := "/dev/nvidia-caps/nvidia-cap" + itoa(caps[cdi.GPUInstanceCap(e.inv.Devices[0].Minor, m.GPUInstanceID)])
	if len(paths) != 3 || paths[0] != "/dev/nvidia0" || paths[1] != wantGI {
		t.Errorf("device nodes %v, want /dev/nvidia0, %s and the compute instance's", paths, wantGI)
	}

	if err := e.state.Unprepare(e.ctx, "default", "one", "uid-1"); err != nil {
		t.Fatal(err)
	}
	if got := e.instances(0); len(got) != 0 {
		t.Errorf("GPU instances after unprepare = %v, want none", got)
	}
	if rec := e.record("uid-1"); rec != nil {
		t.Errorf("record after unprepare: %+v", rec)
	}
}

func TestDynamicMIGOverlapAndCounters(t *testing.T) {
	e := newDynamicMIGEnv(t)
	for i, dev := range []string{"gpu-1-mig-3g40gb-9-0", "gpu-1-mig-3g40gb-9-4"} {
		uid := "uid-" + itoa(i)
		if _, err := e.state.Prepare(e.ctx, claim(uid, "c"+itoa(i), result{request: "mig", device: dev})); err != nil {
			t.Fatalf("prepare %s: %v", dev, err)
		}
	}
	if got := e.instances(1); len(got) != 2 {
		t.Fatalf("GPU instances = %v, want two 3g", got)
	}
	// A partition over taken memory slices, and the whole GPU, conflict
	// with the prepared claims although their names differ.
	for _, dev := range []string{"gpu-1-mig-1g10gb-19-6", "gpu-1"} {
		_, err := e.state.Prepare(e.ctx, claim("uid-x", "x", result{request: "r", device: dev}))
		if err == nil || !strings.Contains(err.Error(), "already prepared for claim default/c") {
			t.Errorf("prepare of %s over the 3g devices: %v, want a conflict naming the holder", dev, err)
		}
	}
	if got := e.instances(1); len(got) != 2 {
		t.Errorf("GPU instances after refused prepares = %v, want the two 3g only", got)
	}
}

func TestDynamicMIGWholeGPUSwitchesMIGModeOff(t *testing.T) {
	e := newDynamicMIGEnv(t)
	if _, err := e.state.Prepare(e.ctx, claim("uid-1", "mig", result{request: "r", device: "gpu-2-mig-7g80gb-0-0"})); err != nil {
		t.Fatal(err)
	}
	h := e.lib.Devices[2]
	if cur, _, _ := h.GetMigMode(); cur != nvml.DEVICE_MIG_ENABLE {
		t.Fatalf("MIG mode after a partition's prepare = %d, want enabled", cur)
	}
	if err := e.state.Unprepare(e.ctx, "default", "mig", "uid-1"); err != nil {
		t.Fatal(err)
	}
	// The GPU's last MIG device gone, it is back out of MIG mode.
	if cur, _, _ := h.GetMigMode(); cur != nvml.DEVICE_MIG_DISABLE {
		t.Errorf("MIG mode after the last partition's unprepare = %d, want disabled", cur)
	}
	// In MIG mode again (by hand, e.g. an earlier plugin's crash), the
	// whole GPU's prepare switches it off.
	if ret, _ := h.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	if _, err := e.state.Prepare(e.ctx, claim("uid-2", "whole", result{request: "r", device: "gpu-2"})); err != nil {
		t.Fatal(err)
	}
	if cur, pend, _ := h.GetMigMode(); cur != nvml.DEVICE_MIG_DISABLE || pend != nvml.DEVICE_MIG_DISABLE {
		t.Errorf("MIG mode after the whole GPU's prepare = %d/%d, want disabled", cur, pend)
	}
}

func TestDynamicMIGReconcileRollsBackInterruptedPrepare(t *testing.T) {
	e := newDynamicMIGEnv(t)
	const dev = "gpu-3-mig-2g20gb-14-4"
	// A prepare that crashed after recording its intent and creating the
	// GPU instance, before its compute instance: the record of step 1, the
	// instance made by hand.
	d, _ := e.set.Get(dev)
	store, _ := checkpoint.NewStore(e.ckptDir)
	rec := &checkpoint.ClaimRecord{BootID: e.bootID, DriverName: driverName, ClaimUID: "uid-1", Namespace: "default", Name: "one",
		Devices: []checkpoint.PreparedDevice{{Requests: []string{"r"}, Pool: nodeName, Device: dev, MIG: migIntent(d)}}}
	if err := store.Put(rec); err != nil {
		t.Fatal(err)
	}
	h := e.lib.Devices[3]
	if ret, _ := h.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	profile, _ := h.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_2_SLICE)
	if _, ret := h.CreateGpuInstanceWithPlacement(&profile, &nvml.GpuInstancePlacement{Start: 4, Size: 2}); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	e.restart()
	if got := e.state.PreparedClaims(); len(got) != 0 {
		t.Errorf("prepared claims before reconcile = %v, want none (an intent is not prepared)", got)
	}
	report := e.state.Reconcile(e.ctx)
	if report.MIGRolledBack != 1 || len(report.Errors) != 0 {
		t.Fatalf("report = %+v, want one rollback", report)
	}
	if got := e.instances(3); len(got) != 0 {
		t.Errorf("GPU instances after the rollback = %v, want none", got)
	}
	if rec := e.record("uid-1"); rec != nil {
		t.Errorf("record after the rollback: %+v", rec)
	}
	// The kubelet prepares the claim again: it gets its device.
	if _, err := e.state.Prepare(e.ctx, claim("uid-1", "one", result{request: "r", device: dev})); err != nil {
		t.Fatal(err)
	}
	if got := e.instances(3); len(got) != 1 || got[0] != "14@4" {
		t.Errorf("GPU instances after the new prepare = %v, want [14@4]", got)
	}
}

func TestDynamicMIGReconcileRecreatesAfterRebootAndFinishesUnprepare(t *testing.T) {
	e := newDynamicMIGEnv(t)
	for i, dev := range []string{"gpu-4-mig-1g20gb-15-6", "gpu-5-mig-4g40gb-5-0"} {
		if _, err := e.state.Prepare(e.ctx, claim("uid-"+itoa(i), "c"+itoa(i), result{request: "r", device: dev})); err != nil {
			t.Fatal(err)
		}
	}
	before := e.record("uid-0").Devices[0].MIG.UUID
	// A reboot destroys every MIG device and the CDI specs (tmpfs).
	e.destroyAll(4)
	e.destroyAll(5)
	if err := os.Remove(e.specPath("uid-0")); err != nil {
		t.Fatal(err)
	}
	e.bootID = "boot-2"
	e.restart()
	report := e.state.Reconcile(e.ctx)
	if report.MIGRecreated != 2 || len(report.Errors) != 0 {
		t.Fatalf("report after the reboot = %+v, want two claims' MIG devices re-created", report)
	}
	after := e.record("uid-0").Devices[0].MIG
	if got := e.instances(4); len(got) != 1 || got[0] != "15@6" || after.UUID == before || !after.Created {
		t.Errorf("GPU 4 instances %v, MIG device %+v (UUID before %s)", got, after, before)
	}
	spec, err := cdiapi.ReadSpec(e.specPath("uid-0"), 0)
	if err != nil {
		t.Fatalf("spec not re-created: %v", err)
	}
	if spec.GetDevice("uid-0-gpu-4-mig-1g20gb-15-6") == nil {
		t.Error("re-created spec lacks the device")
	}

	// An unprepare that crashed after removing the spec and destroying the
	// device, in this boot: Reconcile finishes it.
	if err := os.Remove(e.specPath("uid-1")); err != nil {
		t.Fatal(err)
	}
	e.destroyAll(5)
	e.restart()
	report = e.state.Reconcile(e.ctx)
	if report.UnpreparesFinished != 1 || len(report.Errors) != 0 {
		t.Fatalf("report = %+v, want one finished unprepare", report)
	}
	if rec := e.record("uid-1"); rec != nil {
		t.Errorf("record of the finished unprepare: %+v", rec)
	}
	if got := e.instances(5); len(got) != 0 {
		t.Errorf("GPU 5 instances = %v, want none", got)
	}
}

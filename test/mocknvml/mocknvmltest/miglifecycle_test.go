package mocknvmltest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// childOutEnv names a file through which a scenario hands a result to the
// next one (a MIG UUID).
const childOutEnv = "MOCKNVML_TEST_OUT"

// TestMIGLifecycle: through go-nvml's binding, MIG mode is enabled on a
// Hopper GPU, a 1-slice GPU instance is created at placement 0 with a
// compute instance spanning it, the MIG device appears, overlapping and
// in-use requests are refused as the mock machine refuses them, and once
// destroyed the instances, their MIG device and their handles are gone.
func TestMIGLifecycle(t *testing.T) {
	t.Parallel()
	runChild(t, "mig-lifecycle", "dgxh100", "GPUDRA_MOCK_NVML_MACHINE=dgxh100", "GPUDRA_MOCK_NVML_SEED="+seed, "GPUDRA_MOCK_NVML_LOG=off")
}

// TestMIGLifecycleConcurrent: GPU and compute instances created and
// destroyed from several threads at once all get their own instance and
// handle, and all go away.
func TestMIGLifecycleConcurrent(t *testing.T) {
	t.Parallel()
	runChild(t, "mig-concurrent", "dgxh200", "GPUDRA_MOCK_NVML_MACHINE=dgxh200", "GPUDRA_MOCK_NVML_SEED="+seed, "GPUDRA_MOCK_NVML_LOG=off")
}

// TestMIGStateSurvivesReload: with GPUDRA_MOCK_NVML_MIG_STATE (or migState
// in the config file), MIG mode and the instances created by one process
// are there, with the same IDs and MIG UUID, in the next process that
// loads the library; what the second destroys is gone for a third.
func TestMIGStateSurvivesReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	state := filepath.Join(dir, "state", "mig-state.json")
	out := filepath.Join(dir, "mig-uuid")
	env := []string{"GPUDRA_MOCK_NVML_MACHINE=dgxh100", "GPUDRA_MOCK_NVML_SEED=" + seed, "GPUDRA_MOCK_NVML_LOG=off",
		"GPUDRA_MOCK_NVML_MIG_STATE=" + state, childOutEnv + "=" + out}
	runChild(t, "mig-state-create", "dgxh100", env...)

	uuid, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("no MIG state file after the first process: %v", err)
	}
	if !json.Valid(data) || !strings.Contains(string(data), string(uuid)) {
		t.Fatalf("MIG state file without the MIG device %s:\n%s", uuid, data)
	}

	// The second process takes the state file from the config file.
	config := filepath.Join(dir, "mocknvml.yaml")
	writeFile(t, config, fmt.Sprintf("machine: dgxh100\nseed: %s\nlog: off\nmigState: %s\n", seed, state))
	runChild(t, "mig-state-check", "dgxh100", "GPUDRA_MOCK_NVML_CONFIG="+config, childOutEnv+"="+out)

	// The second process destroyed the instances and left MIG mode on.
	writeFile(t, out, "")
	runChild(t, "mig-state-check", "dgxh100", env...)
}

// want fails the child unless got is want.
func (c *child) want(what string, got, want nvml.Return) {
	c.t.Helper()
	if got != want {
		c.t.Fatalf("%s: %v, want %v", what, nvml.ErrorString(got), nvml.ErrorString(want))
	}
}

// enableMIG puts the GPU in MIG mode, which takes effect at once on Hopper.
func (c *child) enableMIG(gpu nvml.Device) {
	c.t.Helper()
	activation, r := gpu.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	c.want("SetMigMode(enable)", r, nvml.SUCCESS)
	c.want("SetMigMode(enable) activation", activation, nvml.SUCCESS)
	if cur, pending, r := gpu.GetMigMode(); r != nvml.SUCCESS || cur != nvml.DEVICE_MIG_ENABLE || pending != nvml.DEVICE_MIG_ENABLE {
		c.t.Fatalf("MIG mode after enabling: %d/%d (%v)", cur, pending, r)
	}
}

// spanning1 is the compute instance profile that spans a 1-slice GPU
// instance gi.
func (c *child) spanning1(gi nvml.GpuInstance) nvml.ComputeInstanceProfileInfo {
	c.t.Helper()
	cp, r := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	c.want("compute instance profile 1 slice", r, nvml.SUCCESS)
	return cp
}

// migDevices lists the MIG devices of gpu by index, as MIG discovery does.
func (c *child) migDevices(gpu nvml.Device) []nvml.Device {
	c.t.Helper()
	n, r := gpu.GetMaxMigDeviceCount()
	c.want("GetMaxMigDeviceCount", r, nvml.SUCCESS)
	var out []nvml.Device
	for i := 0; i < n; i++ {
		m, r := gpu.GetMigDeviceHandleByIndex(i)
		if r == nvml.ERROR_NOT_FOUND {
			continue
		}
		c.want(fmt.Sprintf("GetMigDeviceHandleByIndex(%d)", i), r, nvml.SUCCESS)
		out = append(out, m)
	}
	return out
}

func (c *child) migLifecycle() {
	t := c.t
	lib := c.load()
	defer lib.Shutdown()
	gpu, r := lib.DeviceGetHandleByIndex(0)
	c.want("GPU 0", r, nvml.SUCCESS)
	gpuUUID, _ := gpu.GetUUID()
	p1, r := gpu.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE)
	c.want("1-slice profile", r, nvml.SUCCESS)
	p2, r := gpu.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_2_SLICE)
	c.want("2-slice profile", r, nvml.SUCCESS)
	at0 := nvml.GpuInstancePlacement{Start: 0, Size: 1}

	// MIG mode is off: no instances.
	if cur, _, r := gpu.GetMigMode(); r != nvml.SUCCESS || cur != nvml.DEVICE_MIG_DISABLE {
		t.Fatalf("MIG mode at start: %d (%v), want disabled", cur, r)
	}
	_, r = gpu.CreateGpuInstanceWithPlacement(&p1, &at0)
	c.want("GPU instance without MIG mode", r, nvml.ERROR_NOT_SUPPORTED)
	_, r = gpu.SetMigMode(7)
	c.want("SetMigMode(7)", r, nvml.ERROR_INVALID_ARGUMENT)

	c.enableMIG(gpu)
	if ms := c.migDevices(gpu); len(ms) != 0 {
		t.Fatalf("%d MIG devices before any instance", len(ms))
	}
	left, r := gpu.GetGpuInstanceRemainingCapacity(&p1)
	c.want("remaining capacity", r, nvml.SUCCESS)
	if left != int(p1.InstanceCount) {
		t.Fatalf("room for %d 1-slice instances on an empty GPU, want %d", left, p1.InstanceCount)
	}

	// A 1-slice GPU instance at placement 0 and its compute instance.
	gi, r := gpu.CreateGpuInstanceWithPlacement(&p1, &at0)
	c.want("CreateGpuInstanceWithPlacement(1g at 0)", r, nvml.SUCCESS)
	giInfo, r := gi.GetInfo()
	c.want("GPU instance info", r, nvml.SUCCESS)
	if giInfo.ProfileId != p1.Id || giInfo.Placement != at0 {
		t.Fatalf("GPU instance %+v, want profile %d at %+v", giInfo, p1.Id, at0)
	}
	if u, _ := giInfo.Device.GetUUID(); u != gpuUUID {
		t.Fatalf("GPU instance on %s, want %s", u, gpuUUID)
	}
	gis, r := gpu.GetGpuInstances(&p1)
	c.want("GetGpuInstances", r, nvml.SUCCESS)
	if len(gis) != 1 || gis[0] != gi {
		t.Fatalf("GetGpuInstances: %v, want the created instance (same handle)", gis)
	}
	if byID, r := gpu.GetGpuInstanceById(int(giInfo.Id)); r != nvml.SUCCESS || byID != gi {
		t.Fatalf("GetGpuInstanceById(%d): %v (%v), want the created instance", giInfo.Id, byID, r)
	}
	if left, _ := gpu.GetGpuInstanceRemainingCapacity(&p1); left != int(p1.InstanceCount)-1 {
		t.Errorf("room for %d 1-slice instances with one, want %d", left, p1.InstanceCount-1)
	}

	// Placements that overlap it are refused.
	_, r = gpu.CreateGpuInstanceWithPlacement(&p1, &at0)
	c.want("1g at 0 again", r, nvml.ERROR_INSUFFICIENT_RESOURCES)
	_, r = gpu.CreateGpuInstanceWithPlacement(&p2, &nvml.GpuInstancePlacement{Start: 0, Size: 2})
	c.want("2g at 0 over the 1g", r, nvml.ERROR_INSUFFICIENT_RESOURCES)
	_, r = gpu.CreateGpuInstanceWithPlacement(&p2, &nvml.GpuInstancePlacement{Start: 1, Size: 2})
	c.want("2g at 1 (no such placement)", r, nvml.ERROR_INVALID_ARGUMENT)
	_, r = gpu.CreateGpuInstance(&nvml.GpuInstanceProfileInfo{Id: 999})
	c.want("unknown profile ID", r, nvml.ERROR_INVALID_ARGUMENT)

	cp := c.spanning1(gi)
	ci, r := gi.CreateComputeInstance(&cp)
	c.want("CreateComputeInstance", r, nvml.SUCCESS)
	ciInfo, r := ci.GetInfo()
	c.want("compute instance info", r, nvml.SUCCESS)
	if ciInfo.ProfileId != cp.Id || ciInfo.GpuInstance != gi || ciInfo.Placement != (nvml.ComputeInstancePlacement{Start: 0, Size: cp.SliceCount}) {
		t.Fatalf("compute instance %+v, want profile %d on the GPU instance spanning it", ciInfo, cp.Id)
	}
	_, r = gi.CreateComputeInstance(&cp)
	c.want("a second compute instance in a 1-slice GPU instance", r, nvml.ERROR_INSUFFICIENT_RESOURCES)
	cis, r := gi.GetComputeInstances(&cp)
	c.want("GetComputeInstances", r, nvml.SUCCESS)
	if len(cis) != 1 || cis[0] != ci {
		t.Fatalf("GetComputeInstances: %v, want the created instance", cis)
	}

	// The MIG device appears.
	ms := c.migDevices(gpu)
	if len(ms) != 1 {
		t.Fatalf("%d MIG devices, want 1", len(ms))
	}
	mig := ms[0]
	migUUID, r := mig.GetUUID()
	if r != nvml.SUCCESS || !strings.HasPrefix(migUUID, "MIG-") {
		t.Fatalf("MIG device UUID %q (%v)", migUUID, r)
	}
	if is, r := mig.IsMigDeviceHandle(); r != nvml.SUCCESS || !is {
		t.Errorf("IsMigDeviceHandle: %v (%v)", is, r)
	}
	if id, r := mig.GetGpuInstanceId(); r != nvml.SUCCESS || id != int(giInfo.Id) {
		t.Errorf("MIG device GPU instance ID %d (%v), want %d", id, r, giInfo.Id)
	}
	if id, r := mig.GetComputeInstanceId(); r != nvml.SUCCESS || id != int(ciInfo.Id) {
		t.Errorf("MIG device compute instance ID %d (%v), want %d", id, r, ciInfo.Id)
	}
	if parent, r := mig.GetDeviceHandleFromMigDeviceHandle(); r != nvml.SUCCESS || parent != gpu {
		t.Errorf("MIG device parent %v (%v), want GPU 0", parent, r)
	}
	if byUUID, r := lib.DeviceGetHandleByUUID(migUUID); r != nvml.SUCCESS || byUUID != mig {
		t.Errorf("MIG device by UUID: %v (%v)", byUUID, r)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.MIGDevices) != 1 || inv.MIGDevices[0].UUID != migUUID || inv.MIGDevices[0].GPUInstanceID != int(giInfo.Id) {
		t.Errorf("discovery finds MIG devices %+v, want %s", inv.MIGDevices, migUUID)
	}

	// Nothing goes while in use.
	activation, r := gpu.SetMigMode(nvml.DEVICE_MIG_DISABLE)
	c.want("SetMigMode(disable) with instances", r, nvml.SUCCESS)
	c.want("SetMigMode(disable) activation with instances", activation, nvml.ERROR_IN_USE)
	if cur, _, _ := gpu.GetMigMode(); cur != nvml.DEVICE_MIG_ENABLE {
		t.Fatalf("MIG mode %d after a refused disable", cur)
	}
	c.want("destroying a GPU instance with a compute instance", gi.Destroy(), nvml.ERROR_IN_USE)
	if _, r := gi.GetInfo(); r != nvml.SUCCESS {
		t.Fatalf("GPU instance after a refused destroy: %v", r)
	}

	// Compute instance, then GPU instance.
	c.want("destroying the compute instance", ci.Destroy(), nvml.SUCCESS)
	if ms := c.migDevices(gpu); len(ms) != 0 {
		t.Fatalf("%d MIG devices after destroying the compute instance", len(ms))
	}
	_, r = ci.GetInfo()
	c.want("destroyed compute instance: GetInfo", r, nvml.ERROR_INVALID_ARGUMENT)
	c.want("destroyed compute instance: Destroy", ci.Destroy(), nvml.ERROR_INVALID_ARGUMENT)
	_, r = mig.GetUUID()
	c.want("MIG device of a destroyed compute instance: GetUUID", r, nvml.ERROR_INVALID_ARGUMENT)
	_, r = mig.GetMemoryInfo()
	c.want("MIG device of a destroyed compute instance: GetMemoryInfo", r, nvml.ERROR_INVALID_ARGUMENT)
	_, r = lib.DeviceGetHandleByUUID(migUUID)
	c.want("MIG device of a destroyed compute instance by UUID", r, nvml.ERROR_NOT_FOUND)
	if cis, r := gi.GetComputeInstances(&cp); r != nvml.SUCCESS || len(cis) != 0 {
		t.Fatalf("compute instances after destroying: %v (%v)", cis, r)
	}

	c.want("destroying the GPU instance", gi.Destroy(), nvml.SUCCESS)
	_, r = gi.GetInfo()
	c.want("destroyed GPU instance: GetInfo", r, nvml.ERROR_INVALID_ARGUMENT)
	c.want("destroyed GPU instance: Destroy", gi.Destroy(), nvml.ERROR_INVALID_ARGUMENT)
	_, r = gi.CreateComputeInstance(&cp)
	c.want("destroyed GPU instance: CreateComputeInstance", r, nvml.ERROR_INVALID_ARGUMENT)
	_, r = gi.GetComputeInstances(&cp)
	c.want("destroyed GPU instance: GetComputeInstances", r, nvml.ERROR_INVALID_ARGUMENT)
	if gis, r := gpu.GetGpuInstances(&p1); r != nvml.SUCCESS || len(gis) != 0 {
		t.Fatalf("GPU instances after destroying: %v (%v)", gis, r)
	}
	if left, _ := gpu.GetGpuInstanceRemainingCapacity(&p1); left != int(p1.InstanceCount) {
		t.Errorf("room for %d 1-slice instances after destroying, want %d", left, p1.InstanceCount)
	}

	// Created again (without a placement: the first free one), the
	// instances get new handles and a new MIG device; the old handles stay
	// invalid.
	gi2, r := gpu.CreateGpuInstance(&p1)
	c.want("CreateGpuInstance(1g)", r, nvml.SUCCESS)
	if info, _ := gi2.GetInfo(); gi2 == gi || info.Placement != at0 {
		t.Fatalf("re-created GPU instance %+v (same handle: %v), want a new one at %+v", info, gi2 == gi, at0)
	}
	ci2, r := gi2.CreateComputeInstanceWithPlacement(&cp, &nvml.ComputeInstancePlacement{Start: 0, Size: cp.SliceCount})
	c.want("CreateComputeInstanceWithPlacement", r, nvml.SUCCESS)
	if ci2 == ci {
		t.Fatal("the re-created compute instance has the destroyed one's handle")
	}
	ms = c.migDevices(gpu)
	if len(ms) != 1 || ms[0] == mig {
		t.Fatalf("MIG devices after re-creating: %v, want one new handle", ms)
	}
	if u, _ := ms[0].GetUUID(); u == migUUID || !strings.HasPrefix(u, "MIG-") {
		t.Errorf("re-created MIG device UUID %q, want a new one", u)
	}
	_, r = gi.GetInfo()
	c.want("old GPU instance handle after re-creating", r, nvml.ERROR_INVALID_ARGUMENT)
	_, r = mig.GetUUID()
	c.want("old MIG device handle after re-creating", r, nvml.ERROR_INVALID_ARGUMENT)

	c.want("destroying the second compute instance", ci2.Destroy(), nvml.SUCCESS)
	c.want("destroying the second GPU instance", gi2.Destroy(), nvml.SUCCESS)
	activation, r = gpu.SetMigMode(nvml.DEVICE_MIG_DISABLE)
	c.want("SetMigMode(disable)", r, nvml.SUCCESS)
	c.want("SetMigMode(disable) activation", activation, nvml.SUCCESS)
	if cur, pending, _ := gpu.GetMigMode(); cur != nvml.DEVICE_MIG_DISABLE || pending != nvml.DEVICE_MIG_DISABLE {
		t.Errorf("MIG mode after disabling: %d/%d", cur, pending)
	}
	// Handles of MIG devices are not GPUs.
	_, r = ms[0].SetMigMode(nvml.DEVICE_MIG_ENABLE)
	c.want("SetMigMode on a stale MIG device handle", r, nvml.ERROR_INVALID_ARGUMENT)
}

func (c *child) migConcurrent() {
	t := c.t
	lib := c.load()
	defer lib.Shutdown()
	gpu, r := lib.DeviceGetHandleByIndex(1)
	c.want("GPU 1", r, nvml.SUCCESS)
	c.enableMIG(gpu)
	p1, r := gpu.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE)
	c.want("1-slice profile", r, nvml.SUCCESS)
	n := int(p1.InstanceCount)

	type made struct {
		gi nvml.GpuInstance
		ci nvml.ComputeInstance
	}
	all := make([]made, n)
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gi, r := gpu.CreateGpuInstanceWithPlacement(&p1, &nvml.GpuInstancePlacement{Start: uint32(i), Size: 1})
			if r != nvml.SUCCESS {
				errs <- fmt.Errorf("GPU instance at %d: %v", i, nvml.ErrorString(r))
				return
			}
			cp, r := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
			if r != nvml.SUCCESS {
				errs <- fmt.Errorf("compute instance profile at %d: %v", i, nvml.ErrorString(r))
				return
			}
			ci, r := gi.CreateComputeInstance(&cp)
			if r != nvml.SUCCESS {
				errs <- fmt.Errorf("compute instance at %d: %v", i, nvml.ErrorString(r))
				return
			}
			all[i] = made{gi, ci}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	ids := map[uint32]bool{}
	for i, m := range all {
		info, r := m.gi.GetInfo()
		c.want("GPU instance info", r, nvml.SUCCESS)
		if ids[info.Id] || info.Placement.Start != uint32(i) {
			t.Errorf("GPU instance %+v: duplicate ID or wrong placement (want start %d)", info, i)
		}
		ids[info.Id] = true
	}
	ms := c.migDevices(gpu)
	if len(ms) != n {
		t.Fatalf("%d MIG devices, want %d", len(ms), n)
	}
	uuids := map[string]bool{}
	for _, m := range ms {
		u, _ := m.GetUUID()
		uuids[u] = true
	}
	if len(uuids) != n {
		t.Errorf("MIG UUIDs %v, want %d distinct", uuids, n)
	}

	for _, m := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := m.ci.Destroy(); r != nvml.SUCCESS {
				t.Errorf("destroying a compute instance: %v", nvml.ErrorString(r))
				return
			}
			if r := m.gi.Destroy(); r != nvml.SUCCESS {
				t.Errorf("destroying a GPU instance: %v", nvml.ErrorString(r))
			}
		}()
	}
	wg.Wait()
	if ms := c.migDevices(gpu); len(ms) != 0 {
		t.Errorf("%d MIG devices left", len(ms))
	}
	for _, m := range all {
		if _, r := m.gi.GetInfo(); r != nvml.ERROR_INVALID_ARGUMENT {
			t.Errorf("destroyed GPU instance: %v, want ERROR_INVALID_ARGUMENT", nvml.ErrorString(r))
		}
	}
	for _, m := range ms {
		if _, r := m.GetUUID(); r != nvml.ERROR_INVALID_ARGUMENT {
			t.Errorf("MIG device of a destroyed instance: %v, want ERROR_INVALID_ARGUMENT", nvml.ErrorString(r))
		}
	}
}

// migStateCreate enables MIG mode on GPU 0 and creates a 1-slice GPU
// instance at placement 2 with its compute instance; the MIG UUID goes to
// the out file.
func (c *child) migStateCreate() {
	lib := c.load()
	defer lib.Shutdown()
	gpu, r := lib.DeviceGetHandleByIndex(0)
	c.want("GPU 0", r, nvml.SUCCESS)
	c.enableMIG(gpu)
	p1, r := gpu.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE)
	c.want("1-slice profile", r, nvml.SUCCESS)
	gi, r := gpu.CreateGpuInstanceWithPlacement(&p1, &nvml.GpuInstancePlacement{Start: 2, Size: 1})
	c.want("CreateGpuInstanceWithPlacement", r, nvml.SUCCESS)
	cp := c.spanning1(gi)
	_, r = gi.CreateComputeInstance(&cp)
	c.want("CreateComputeInstance", r, nvml.SUCCESS)
	ms := c.migDevices(gpu)
	if len(ms) != 1 {
		c.t.Fatalf("%d MIG devices, want 1", len(ms))
	}
	u, r := ms[0].GetUUID()
	c.want("MIG UUID", r, nvml.SUCCESS)
	writeFile(c.t, os.Getenv(childOutEnv), u)
}

// migStateCheck finds GPU 0 in MIG mode and, when the out file names a MIG
// UUID, that MIG device at placement 2, which it then destroys; with an
// empty out file, no instances.
func (c *child) migStateCheck() {
	t := c.t
	data, err := os.ReadFile(os.Getenv(childOutEnv))
	if err != nil {
		t.Fatal(err)
	}
	want := string(data)
	lib := c.load()
	defer lib.Shutdown()
	gpu, r := lib.DeviceGetHandleByIndex(0)
	c.want("GPU 0", r, nvml.SUCCESS)
	if cur, pending, r := gpu.GetMigMode(); r != nvml.SUCCESS || cur != nvml.DEVICE_MIG_ENABLE || pending != nvml.DEVICE_MIG_ENABLE {
		t.Fatalf("MIG mode after reload: %d/%d (%v), want enabled", cur, pending, r)
	}
	if other, _ := lib.DeviceGetHandleByIndex(1); other != nil {
		if cur, _, _ := other.GetMigMode(); cur != nvml.DEVICE_MIG_DISABLE {
			t.Errorf("GPU 1 MIG mode %d after reload, want disabled", cur)
		}
	}
	p1, r := gpu.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE)
	c.want("1-slice profile", r, nvml.SUCCESS)
	gis, r := gpu.GetGpuInstances(&p1)
	c.want("GetGpuInstances", r, nvml.SUCCESS)
	ms := c.migDevices(gpu)
	if want == "" {
		if len(gis) != 0 || len(ms) != 0 {
			t.Fatalf("after the instances were destroyed and the library reloaded: %d GPU instances, %d MIG devices", len(gis), len(ms))
		}
		return
	}
	if len(gis) != 1 || len(ms) != 1 {
		t.Fatalf("after reload: %d GPU instances, %d MIG devices, want 1 each", len(gis), len(ms))
	}
	info, r := gis[0].GetInfo()
	c.want("GPU instance info", r, nvml.SUCCESS)
	if info.Placement != (nvml.GpuInstancePlacement{Start: 2, Size: 1}) {
		t.Errorf("GPU instance after reload at %+v, want 2:1", info.Placement)
	}
	if u, _ := ms[0].GetUUID(); u != want {
		t.Errorf("MIG device after reload %s, want %s", u, want)
	}
	if id, _ := ms[0].GetGpuInstanceId(); id != int(info.Id) {
		t.Errorf("MIG device GPU instance ID %d, want %d", id, info.Id)
	}
	cp := c.spanning1(gis[0])
	cis, r := gis[0].GetComputeInstances(&cp)
	if r != nvml.SUCCESS || len(cis) != 1 {
		t.Fatalf("compute instances after reload: %v (%v)", cis, r)
	}
	c.want("destroying the reloaded compute instance", cis[0].Destroy(), nvml.SUCCESS)
	c.want("destroying the reloaded GPU instance", gis[0].Destroy(), nvml.SUCCESS)
}

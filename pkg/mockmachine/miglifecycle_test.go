package mockmachine

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpudra/gpudra/pkg/inventory"
)

func newMachine(t *testing.T, machine string, opts ...Option) *server.Server {
	t.Helper()
	s, err := New(machine, "node-1", opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", machine, err)
	}
	return s
}

// profileIndexes are the profile indexes of the mock GPUs, in the order of
// the unique IDs 19, 20, 15, 14, 9, 5, 0.
var profileIndexes = []int{nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2,
	nvml.GPU_INSTANCE_PROFILE_2_SLICE, nvml.GPU_INSTANCE_PROFILE_3_SLICE, nvml.GPU_INSTANCE_PROFILE_4_SLICE, nvml.GPU_INSTANCE_PROFILE_7_SLICE}

func profile(t *testing.T, d nvml.Device, index int) nvml.GpuInstanceProfileInfo {
	t.Helper()
	p, ret := d.GetGpuInstanceProfileInfo(index)
	if ret != nvml.SUCCESS {
		t.Fatalf("GetGpuInstanceProfileInfo(%d): %s", index, nvml.ErrorString(ret))
	}
	return p
}

func TestMIGProfileTables(t *testing.T) {
	names := map[string][]string{
		"dgxa100":      {"1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"},
		"dgxa100-80gb": {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"},
		"dgxh100":      {"1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"},
		"dgxh200":      {"1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"},
		"dgxb200":      {"1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"},
	}
	ids := []uint32{19, 20, 15, 14, 9, 5, 0}
	slices := []uint32{1, 1, 1, 2, 3, 4, 7}
	counts := []uint32{7, 1, 4, 3, 2, 1, 1}
	placements := [][]nvml.GpuInstancePlacement{
		placements(1, 0, 1, 2, 3, 4, 5, 6), placements(1, 0, 1, 2, 3, 4, 5, 6), placements(2, 0, 2, 4, 6),
		placements(2, 0, 2, 4), placements(4, 0, 4), placements(4, 0), placements(8, 0),
	}
	sms := map[string][]uint32{
		"dgxa100": {14, 14, 14, 28, 42, 56, 98},
		"dgxh100": {16, 16, 26, 32, 60, 64, 132},
		"dgxb200": {18, 18, 18, 36, 54, 72, 148},
	}
	if len(Names()) != len(names) {
		t.Fatalf("Names() = %v, the test knows %d machines", Names(), len(names))
	}
	for _, machine := range Names() {
		d := newMachine(t, machine).Devices[0]
		mem, _ := d.GetMemoryInfo()
		for i, index := range profileIndexes {
			p := profile(t, d, index)
			if got := inventory.MIGProfileName(index, p.SliceCount, p.SliceCount, p.MemorySizeMB, mem.Total>>20); got != names[machine][i] {
				t.Errorf("%s: profile %d (ID %d, %d MiB): name %q, want %q", machine, index, p.Id, p.MemorySizeMB, got, names[machine][i])
			}
			if p.Id != ids[i] || p.SliceCount != slices[i] || p.InstanceCount != counts[i] {
				t.Errorf("%s: profile %d: ID %d, %d slices, %d instances; want %d, %d, %d", machine, index, p.Id, p.SliceCount, p.InstanceCount, ids[i], slices[i], counts[i])
			}
			if want, ok := sms[machine]; ok && p.MultiprocessorCount != want[i] {
				t.Errorf("%s: %s has %d SMs, want %d", machine, names[machine][i], p.MultiprocessorCount, want[i])
			}
			pl, ret := d.GetGpuInstancePossiblePlacements(&p)
			if ret != nvml.SUCCESS || !reflect.DeepEqual(pl, placements[i]) {
				t.Errorf("%s: %s placements %v (%s), want %v", machine, names[machine][i], pl, nvml.ErrorString(ret), placements[i])
			}
		}
	}
}

func TestComputeInstanceProfiles(t *testing.T) {
	s := newMachine(t, "dgxh100-migon")
	d := s.Devices[0]
	for _, tc := range []struct {
		index    int
		ciSlices []uint32 // by CI profile 0..4
	}{
		{nvml.GPU_INSTANCE_PROFILE_1_SLICE, []uint32{1}},
		{nvml.GPU_INSTANCE_PROFILE_3_SLICE, []uint32{1, 2, 3}},
		{nvml.GPU_INSTANCE_PROFILE_4_SLICE, []uint32{1, 2, 3, 4}},
		{nvml.GPU_INSTANCE_PROFILE_7_SLICE, []uint32{1, 2, 3, 4, 7}},
	} {
		p := profile(t, d, tc.index)
		gi, ret := d.CreateGpuInstance(&p)
		if ret != nvml.SUCCESS {
			t.Fatalf("profile %d: %s", tc.index, nvml.ErrorString(ret))
		}
		var got []uint32
		for id := 0; id < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; id++ {
			c, ret := gi.GetComputeInstanceProfileInfo(id, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
			if ret != nvml.SUCCESS {
				continue
			}
			got = append(got, c.SliceCount)
			if int(c.Id) != id || c.MultiprocessorCount != p.MultiprocessorCount*c.SliceCount/p.SliceCount {
				t.Errorf("profile %d: CI profile %d: %+v", tc.index, id, c)
			}
		}
		if !reflect.DeepEqual(got, tc.ciSlices) {
			t.Errorf("GI profile %d: CI slice counts %v, want %v", tc.index, got, tc.ciSlices)
		}
		if ret := gi.Destroy(); ret != nvml.SUCCESS {
			t.Fatal(nvml.ErrorString(ret))
		}
	}
}

func TestCreateGpuInstanceRules(t *testing.T) {
	if _, ret := newMachine(t, "dgxh100").Devices[0].CreateGpuInstance(&nvml.GpuInstanceProfileInfo{Id: 19}); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("without MIG mode: %s, want ERROR_NOT_SUPPORTED", nvml.ErrorString(ret))
	}
	d := newMachine(t, "dgxh100-migon").Devices[0]
	g3, g2, g1, me := profile(t, d, nvml.GPU_INSTANCE_PROFILE_3_SLICE), profile(t, d, nvml.GPU_INSTANCE_PROFILE_2_SLICE),
		profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE), profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1)
	create := func(p nvml.GpuInstanceProfileInfo, start, size uint32) (nvml.GpuInstance, nvml.Return) {
		return d.CreateGpuInstanceWithPlacement(&p, &nvml.GpuInstancePlacement{Start: start, Size: size})
	}
	id := func(gi nvml.GpuInstance) uint32 {
		info, ret := gi.GetInfo()
		if ret != nvml.SUCCESS {
			t.Fatal(nvml.ErrorString(ret))
		}
		return info.Id
	}
	if _, ret := create(g3, 2, 4); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("3g at 2:4: %s, want ERROR_INVALID_ARGUMENT", nvml.ErrorString(ret))
	}
	if _, ret := create(nvml.GpuInstanceProfileInfo{Id: 42}, 0, 1); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("unknown profile: %s, want ERROR_INVALID_ARGUMENT", nvml.ErrorString(ret))
	}
	a, ret := create(g3, 4, 4)
	if ret != nvml.SUCCESS || id(a) != 1 {
		t.Fatalf("3g at 4:4: %s", nvml.ErrorString(ret))
	}
	if _, ret := create(g2, 4, 2); ret != nvml.ERROR_INSUFFICIENT_RESOURCES {
		t.Errorf("2g at 4:2 over the 3g at 4:4: %s, want ERROR_INSUFFICIENT_RESOURCES", nvml.ErrorString(ret))
	}
	if _, ret := create(g1, 6, 1); ret != nvml.ERROR_INSUFFICIENT_RESOURCES {
		t.Errorf("1g at 6 over the 3g at 4:4: %s, want ERROR_INSUFFICIENT_RESOURCES", nvml.ErrorString(ret))
	}
	b, ret := create(me, 0, 1)
	if ret != nvml.SUCCESS || id(b) != 2 {
		t.Fatalf("1g+me at 0: %s", nvml.ErrorString(ret))
	}
	if _, ret := create(me, 1, 1); ret != nvml.ERROR_INSUFFICIENT_RESOURCES {
		t.Errorf("a second 1g+me: %s, want ERROR_INSUFFICIENT_RESOURCES (InstanceCount 1)", nvml.ErrorString(ret))
	}
	if n, ret := d.GetGpuInstanceRemainingCapacity(&g1); ret != nvml.SUCCESS || n != 3 {
		t.Errorf("1g remaining capacity %d (%s), want 3 (slices 1, 2, 3)", n, nvml.ErrorString(ret))
	}
	if n, _ := d.GetGpuInstanceRemainingCapacity(&g2); n != 1 {
		t.Errorf("2g remaining capacity %d, want 1 (at 2)", n)
	}
	// Without a placement: the first free one.
	c, ret := d.CreateGpuInstance(&g1)
	if info, _ := c.GetInfo(); ret != nvml.SUCCESS || info.Id != 3 || info.Placement != (nvml.GpuInstancePlacement{Start: 1, Size: 1}) || info.ProfileId != 19 {
		t.Errorf("1g without placement: %+v, %s; want ID 3 at 1:1", info, nvml.ErrorString(ret))
	}
	// IDs: the lowest free one.
	if ret := b.Destroy(); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	if ret := b.Destroy(); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("destroying twice: %s", nvml.ErrorString(ret))
	}
	if e, ret := create(g1, 0, 1); ret != nvml.SUCCESS || id(e) != 2 {
		t.Errorf("after destroying GI 2: %s", nvml.ErrorString(ret))
	}
	gis, ret := d.GetGpuInstances(&g1)
	if ret != nvml.SUCCESS || len(gis) != 2 || id(gis[0]) != 2 || id(gis[1]) != 3 {
		t.Errorf("1g instances: %d, %s", len(gis), nvml.ErrorString(ret))
	}
	if gi, ret := d.GetGpuInstanceById(1); ret != nvml.SUCCESS || gi != a {
		t.Errorf("GetGpuInstanceById(1): %s", nvml.ErrorString(ret))
	}
	if _, ret := d.GetGpuInstanceById(4); ret != nvml.ERROR_NOT_FOUND {
		t.Errorf("GetGpuInstanceById(4): %s", nvml.ErrorString(ret))
	}
}

func migUUIDs(t *testing.T, d nvml.Device) []string {
	t.Helper()
	n, ret := d.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	var out []string
	for i := 0; i < n; i++ {
		h, ret := d.GetMigDeviceHandleByIndex(i)
		if ret == nvml.ERROR_NOT_FOUND {
			break
		}
		u, _ := h.GetUUID()
		gi, _ := h.GetGpuInstanceId()
		ci, _ := h.GetComputeInstanceId()
		out = append(out, fmt.Sprintf("%d/%d/%s", gi, ci, u))
	}
	return out
}

func TestComputeInstanceLifecycle(t *testing.T) {
	d := newMachine(t, "dgxh100-migon").Devices[1]
	g7, g1 := profile(t, d, nvml.GPU_INSTANCE_PROFILE_7_SLICE), profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE)
	big, ret := d.CreateGpuInstance(&g7)
	if ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	c3, _ := big.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	c1, _ := big.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	var cis []nvml.ComputeInstance
	for range 2 {
		ci, ret := big.CreateComputeInstance(&c3)
		if ret != nvml.SUCCESS {
			t.Fatal(nvml.ErrorString(ret))
		}
		cis = append(cis, ci)
	}
	if _, ret := big.CreateComputeInstance(&c3); ret != nvml.ERROR_INSUFFICIENT_RESOURCES {
		t.Errorf("a third 3-slice CI in a 7g: %s, want ERROR_INSUFFICIENT_RESOURCES", nvml.ErrorString(ret))
	}
	last, ret := big.CreateComputeInstance(&c1)
	if info, _ := last.GetInfo(); ret != nvml.SUCCESS || info.Id != 2 || info.Placement.Start != 6 {
		t.Fatalf("the 1-slice CI: %+v, %s", info, nvml.ErrorString(ret))
	}
	if _, ret := big.CreateComputeInstance(&c1); ret != nvml.ERROR_INSUFFICIENT_RESOURCES {
		t.Errorf("a CI in a full 7g: %s", nvml.ErrorString(ret))
	}
	if got, _ := big.GetComputeInstances(&c3); len(got) != 2 || got[0] != cis[0] || got[1] != cis[1] {
		t.Errorf("3-slice CIs: %v", got)
	}
	if ci, ret := big.GetComputeInstanceById(1); ret != nvml.SUCCESS || ci != cis[1] {
		t.Errorf("GetComputeInstanceById(1): %s", nvml.ErrorString(ret))
	}
	// The MIG devices are the compute instances.
	devs := migUUIDs(t, d)
	if len(devs) != 3 || devs[0][:4] != "1/0/" || devs[1][:4] != "1/1/" || devs[2][:4] != "1/2/" {
		t.Fatalf("MIG devices %v", devs)
	}
	h, _ := d.GetMigDeviceHandleByIndex(0)
	if name, _ := h.GetName(); name != "NVIDIA H100 80GB HBM3 MIG 3c.7g.80gb" {
		t.Errorf("MIG device name %q", name)
	}
	if mem, _ := h.GetMemoryInfo(); mem.Total != 81152<<20 {
		t.Errorf("MIG device memory %d", mem.Total)
	}
	if parent, _ := h.GetDeviceHandleFromMigDeviceHandle(); parent != d {
		t.Error("MIG device parent is not the GPU")
	}
	if ret := big.Destroy(); ret != nvml.ERROR_IN_USE {
		t.Errorf("destroying a GI with CIs: %s, want ERROR_IN_USE", nvml.ErrorString(ret))
	}
	// A re-created compute instance has the same IDs and a new UUID.
	if ret := cis[0].Destroy(); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	if _, ret := h.GetUUID(); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("UUID of a destroyed MIG device: %s", nvml.ErrorString(ret))
	}
	if ret := cis[0].Destroy(); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("destroying a CI twice: %s", nvml.ErrorString(ret))
	}
	if _, ret := big.CreateComputeInstance(&c3); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	again := migUUIDs(t, d)
	if len(again) != 3 || again[0][:4] != "1/0/" || again[0] == devs[0] || again[1] != devs[1] {
		t.Errorf("after re-creating CI 0: %v, before %v", again, devs)
	}
	for _, ci := range append(cis[1:], last) {
		if ret := ci.Destroy(); ret != nvml.SUCCESS {
			t.Fatal(nvml.ErrorString(ret))
		}
	}
	c0, _ := big.GetComputeInstanceById(0)
	if ret := c0.Destroy(); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	if ret := big.Destroy(); ret != nvml.SUCCESS {
		t.Errorf("destroying an empty GI: %s", nvml.ErrorString(ret))
	}
	if _, ret := big.CreateComputeInstance(&c1); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("a CI in a destroyed GI: %s", nvml.ErrorString(ret))
	}
	if got := migUUIDs(t, d); len(got) != 0 {
		t.Errorf("MIG devices left: %v", got)
	}
	// A GI re-created at the same place gets the same ID and new UUIDs.
	gi, _ := d.CreateGpuInstance(&g1)
	ci1, _ := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if _, ret := gi.CreateComputeInstance(&ci1); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	if got := migUUIDs(t, d); len(got) != 1 || got[0][:4] != "1/0/" || got[0] == devs[0] || got[0] == again[0] {
		t.Errorf("re-created GI 1: %v", got)
	}
}

func migMode(t *testing.T, d nvml.Device) string {
	t.Helper()
	cur, pend, ret := d.GetMigMode()
	if ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	return fmt.Sprintf("%d/%d", cur, pend)
}

func TestSetMigModePerArchitecture(t *testing.T) {
	for _, machine := range []string{"dgxh100", "dgxh200", "dgxb200"} {
		d := newMachine(t, machine).Devices[2]
		if act, ret := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); act != nvml.SUCCESS || ret != nvml.SUCCESS || migMode(t, d) != "1/1" {
			t.Fatalf("%s: enabling: %s/%s, mode %s", machine, nvml.ErrorString(act), nvml.ErrorString(ret), migMode(t, d))
		}
		p := profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE)
		gi, ret := d.CreateGpuInstance(&p)
		if ret != nvml.SUCCESS {
			t.Fatal(nvml.ErrorString(ret))
		}
		if act, ret := d.SetMigMode(nvml.DEVICE_MIG_DISABLE); act != nvml.ERROR_IN_USE || ret != nvml.SUCCESS || migMode(t, d) != "1/1" {
			t.Errorf("%s: disabling with a GI: %s/%s, mode %s", machine, nvml.ErrorString(act), nvml.ErrorString(ret), migMode(t, d))
		}
		gi.Destroy()
		if act, ret := d.SetMigMode(nvml.DEVICE_MIG_DISABLE); act != nvml.SUCCESS || ret != nvml.SUCCESS || migMode(t, d) != "0/0" {
			t.Errorf("%s: disabling: %s/%s, mode %s", machine, nvml.ErrorString(act), nvml.ErrorString(ret), migMode(t, d))
		}
		if n, _ := d.GetMaxMigDeviceCount(); n != 0 {
			t.Errorf("%s: %d MIG devices without MIG mode", machine, n)
		}
	}
	for _, machine := range []string{"dgxa100", "dgxa100-80gb"} {
		d := newMachine(t, machine).Devices[0]
		if act, ret := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); act != nvml.ERROR_RESET_REQUIRED || ret != nvml.SUCCESS || migMode(t, d) != "0/1" {
			t.Errorf("%s: enabling: %s/%s, mode %s; want a pending mode", machine, nvml.ErrorString(act), nvml.ErrorString(ret), migMode(t, d))
		}
		p := profile(t, d, nvml.GPU_INSTANCE_PROFILE_1_SLICE)
		if _, ret := d.CreateGpuInstance(&p); ret != nvml.ERROR_NOT_SUPPORTED {
			t.Errorf("%s: a GI with MIG mode pending: %s", machine, nvml.ErrorString(ret))
		}
		if act, _ := d.SetMigMode(nvml.DEVICE_MIG_DISABLE); act != nvml.SUCCESS || migMode(t, d) != "0/0" {
			t.Errorf("%s: cancelling the pending mode: %s, mode %s", machine, nvml.ErrorString(act), migMode(t, d))
		}
		on := newMachine(t, machine+MIGSuffix).Devices[0]
		if act, ret := on.SetMigMode(nvml.DEVICE_MIG_DISABLE); act != nvml.ERROR_IN_USE || ret != nvml.SUCCESS || migMode(t, on) != "1/1" {
			t.Errorf("%s: disabling with GIs: %s/%s, mode %s", machine, nvml.ErrorString(act), nvml.ErrorString(ret), migMode(t, on))
		}
	}
	if act, ret := newMachine(t, "dgxh100").Devices[0].SetMigMode(5); ret != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("mode 5: %s/%s", nvml.ErrorString(act), nvml.ErrorString(ret))
	}
}

func TestMIGVariants(t *testing.T) {
	for _, machine := range MIGOnNames() {
		if !Known(machine) {
			t.Errorf("Known(%q) = false", machine)
		}
		inv := discoverMock(t, machine, "node-1")
		for _, d := range inv.Devices {
			if !d.MIGEnabled {
				t.Errorf("%s: GPU %d not in MIG mode", machine, d.Index)
			}
		}
		if len(inv.MIGDevices) != 0 {
			t.Errorf("%s: MIG devices %v", machine, inv.MIGDevices)
		}
	}
	for _, machine := range MIGNames() {
		inv := discoverMock(t, machine, "node-1")
		var got []string
		for _, m := range inv.MIGDevices {
			got = append(got, fmt.Sprintf("%d:gi%d/ci%d@%d:%d/%d", m.ParentIndex, m.GPUInstanceID, m.ComputeInstanceID, m.PlacementStart, m.PlacementSize, m.PlacementSize))
		}
		want := []string{"0:gi1/ci0@0:1/1", "0:gi2/ci0@1:1/1", "0:gi3/ci0@2:2/2", "0:gi4/ci0@4:4/4", "1:gi1/ci0@0:8/8"}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: MIG devices %v, want %v", machine, got, want)
		}
	}
}

func TestMIGCapMinorsListEveryPossibleInstance(t *testing.T) {
	inv := discoverMock(t, "dgxh100", "node-1")
	caps := MIGCapMinors(inv)
	if len(caps) != 2+8*15*9 {
		t.Errorf("%d capabilities, want %d", len(caps), 2+8*15*9)
	}
	for name, want := range map[string]int{"config": 1, "monitor": 2, "gpu0/gi0/access": 3, "gpu0/gi0/ci0/access": 4,
		"gpu0/gi1/access": 12, "gpu0/gi14/ci7/access": 3 + 14*9 + 8, "gpu7/gi14/ci7/access": 3 + 7*135 + 14*9 + 8} {
		if caps[name] != want {
			t.Errorf("%s = %d, want %d", name, caps[name], want)
		}
	}
}

// readState returns the GI and CI summary of GPU gpu in the state file.
func readState(t *testing.T, path string, gpu int) (string, []string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st migStateFile
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	g := st.GPUs[gpu]
	var out []string
	for _, gi := range g.GPUInstances {
		out = append(out, fmt.Sprintf("gi%d:%d@%d", gi.ID, gi.ProfileID, gi.Start))
		for _, ci := range gi.ComputeInstances {
			out = append(out, fmt.Sprintf("gi%d/ci%d", gi.ID, ci.ID))
		}
	}
	return fmt.Sprintf("%d/%d", g.MIGMode, g.PendingMIGMode), out
}

func TestMIGStateSurvivesARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root", MIGStateFile)
	s := newMachine(t, "dgxh100-mig", WithMIGState(path))
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("New wrote the state: %v", err)
	}
	before := discoverMockServer(t, s)
	// GPU 0: destroy GI 2 (1g at slice 1). GPU 3: MIG mode, a GI, then its CI.
	d0 := s.Devices[0]
	gi2, _ := d0.GetGpuInstanceById(2)
	ci, _ := gi2.GetComputeInstanceById(0)
	if ret := ci.Destroy(); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	if _, cis := readState(t, path, 0); len(cis) != 7 {
		t.Errorf("state after destroying a CI: %v", cis)
	}
	if ret := gi2.Destroy(); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	d3 := s.Devices[3]
	if act, _ := d3.SetMigMode(nvml.DEVICE_MIG_ENABLE); act != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(act))
	}
	if mode, gis := readState(t, path, 3); mode != "1/1" || len(gis) != 0 {
		t.Errorf("state after SetMigMode: %s %v", mode, gis)
	}
	p := profile(t, d3, nvml.GPU_INSTANCE_PROFILE_2_SLICE)
	gi, ret := d3.CreateGpuInstanceWithPlacement(&p, &nvml.GpuInstancePlacement{Start: 4, Size: 2})
	if ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	// A restart between the GI and the CI: the GI is there, without CI.
	if _, gis := readState(t, path, 3); !reflect.DeepEqual(gis, []string{"gi1:14@4"}) {
		t.Errorf("state after creating a GI: %v", gis)
	}
	mid := newMachine(t, "dgxh100-mig", WithMIGState(path))
	if got, ret := mid.Devices[3].GetGpuInstanceById(1); ret != nvml.SUCCESS {
		t.Errorf("GI after a restart: %s", nvml.ErrorString(ret))
	} else if info, _ := got.GetInfo(); info.ProfileId != 14 || info.Placement.Start != 4 {
		t.Errorf("GI after a restart: %+v", info)
	}
	if n := len(migUUIDs(t, mid.Devices[3])); n != 0 {
		t.Errorf("%d MIG devices after a restart between GI and CI", n)
	}
	c, _ := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if _, ret := gi.CreateComputeInstance(&c); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	after := discoverMockServer(t, s)
	if len(after.MIGDevices) != len(before.MIGDevices) {
		t.Fatalf("%d MIG devices, want %d", len(after.MIGDevices), len(before.MIGDevices))
	}
	restarted := discoverMockServer(t, newMachine(t, "dgxh100-mig", WithMIGState(path)))
	if !reflect.DeepEqual(restarted.MIGDevices, after.MIGDevices) || !reflect.DeepEqual(restarted.Devices, after.Devices) {
		t.Errorf("after a restart:\n%+v\nwant\n%+v", restarted.MIGDevices, after.MIGDevices)
	}
	// The CI created after the restart gets a UUID no earlier one had.
	r := newMachine(t, "dgxh100-mig", WithMIGState(path))
	rgi, _ := r.Devices[3].GetGpuInstanceById(1)
	rci, _ := rgi.GetComputeInstanceById(0)
	rci.Destroy()
	rgi.CreateComputeInstance(&c)
	seen := map[string]bool{}
	for _, m := range append(after.MIGDevices, discoverMockServer(t, r).MIGDevices...) {
		seen[m.UUID] = true
	}
	if len(seen) != len(after.MIGDevices)+1 {
		t.Errorf("re-created CI after a restart reused a UUID")
	}
	// Another seed's state is not this machine's.
	other, err := New("dgxh100-mig", "node-2", WithMIGState(path))
	if err != nil {
		t.Fatal(err)
	}
	if inv := discoverMockServer(t, other); len(inv.MIGDevices) != 5 {
		t.Errorf("another seed: %d MIG devices, want the layout's 5", len(inv.MIGDevices))
	}
	if err := os.WriteFile(path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New("dgxh100-mig", "node-1", WithMIGState(path)); err == nil {
		t.Error("New accepted a corrupt state file")
	}
}

func TestMIGMutationThatCannotBeSavedChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s := newMachine(t, "dgxh100-mig", WithMIGState(filepath.Join(dir, "sub", MIGStateFile)))
	// The state's directory becomes a file: no write can succeed.
	if err := os.WriteFile(filepath.Join(dir, "sub"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d := s.Devices[2]
	if act, ret := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.ERROR_UNKNOWN || act != nvml.ERROR_UNKNOWN || migMode(t, d) != "0/0" {
		t.Errorf("unsaved SetMigMode: %s/%s, mode %s", nvml.ErrorString(act), nvml.ErrorString(ret), migMode(t, d))
	}
	gi, _ := s.Devices[0].GetGpuInstanceById(1)
	ci, _ := gi.GetComputeInstanceById(0)
	if ret := ci.Destroy(); ret != nvml.ERROR_UNKNOWN {
		t.Errorf("unsaved CI destroy: %s", nvml.ErrorString(ret))
	}
	if n := len(migUUIDs(t, s.Devices[0])); n != 4 {
		t.Errorf("%d MIG devices after a failed destroy, want 4", n)
	}
}

func TestMIGLifecycleConcurrency(t *testing.T) {
	path := filepath.Join(t.TempDir(), MIGStateFile)
	s := newMachine(t, "dgxb200-migon", WithMIGState(path))
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for w := range 16 {
		wg.Go(func() {
			d := s.Devices[w%4]
			p, _ := d.GetGpuInstanceProfileInfo(nvml.GPU_INSTANCE_PROFILE_1_SLICE)
			for range 10 {
				gi, ret := d.CreateGpuInstance(&p)
				if ret == nvml.ERROR_INSUFFICIENT_RESOURCES {
					continue
				}
				if ret != nvml.SUCCESS {
					errs <- "create GI: " + nvml.ErrorString(ret)
					return
				}
				c, _ := gi.GetComputeInstanceProfileInfo(nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
				ci, ret := gi.CreateComputeInstance(&c)
				if ret != nvml.SUCCESS {
					errs <- "create CI: " + nvml.ErrorString(ret)
					return
				}
				for i := range MaxMIGDevices {
					if h, ret := d.GetMigDeviceHandleByIndex(i); ret == nvml.SUCCESS {
						_, _ = h.GetUUID()
					}
				}
				_, _, _ = d.GetMigMode()
				if ret := ci.Destroy(); ret != nvml.SUCCESS {
					errs <- "destroy CI: " + nvml.ErrorString(ret)
				}
				if ret := gi.Destroy(); ret != nvml.SUCCESS {
					errs <- "destroy GI: " + nvml.ErrorString(ret)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for gpu := range 4 {
		if _, gis := readState(t, path, gpu); len(gis) != 0 {
			t.Errorf("GPU %d: instances left in the state: %v", gpu, gis)
		}
		if n := len(migUUIDs(t, s.Devices[gpu])); n != 0 {
			t.Errorf("GPU %d: %d MIG devices left", gpu, n)
		}
	}
}

func discoverMockServer(t *testing.T, s *server.Server) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.Discover(s)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

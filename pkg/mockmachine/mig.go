package mockmachine

import (
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// MIGSuffix turns a mock machine into its MIG variant: "dgxa100-mig"
// is a dgxa100 whose first two GPUs are in MIG mode with MIG devices
// already created (see MIGLayout).
const MIGSuffix = "-mig"

// MIGLayout is the GPU instance slice counts created on the GPUs of a
// MIG mock machine, by GPU index: GPU 0 is split into two 1-slice, a
// 2-slice and a 3-slice instance (GPU instance IDs 0 to 3, placed in that
// order), GPU 1 holds one 7-slice instance. Each GPU
// instance holds one compute instance that spans it.
var MIGLayout = map[int][]uint32{
	0: {1, 1, 2, 3},
	1: {7},
}

// MIGMockMachines lists the MIG variants of MockMachines accepted by
// NewMock.
func MIGNames() []string {
	var out []string
	for _, m := range Names() {
		out = append(out, m+MIGSuffix)
	}
	return out
}

// splitMIGMachine returns the base machine of name and whether name is a
// MIG variant.
func splitMIGMachine(name string) (string, bool) {
	return strings.CutSuffix(name, MIGSuffix)
}

// enableMockMIG puts the GPUs of MIGLayout into MIG mode, creates their
// instances with go-nvml's own mock functions, and adds the NVML calls of
// MIG discovery that the mock servers leave unset. MIG UUIDs derive from
// (machine, seed, GPU index, instance) like the GPUs' UUIDs.
func enableMockMIG(s *server.Server, machine, seed string) error {
	for idx, slices := range MIGLayout {
		if idx >= len(s.Devices) {
			continue
		}
		d := s.Devices[idx].(*server.Device)
		if ret, _ := d.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS {
			return fmt.Errorf("mock machine %q: GPU %d: enabling MIG: %s", machine, idx, nvml.ErrorString(ret))
		}
		var handles []nvml.Device
		gis := map[int]*server.GpuInstance{}
		used := map[uint32]bool{} // memory slices taken
		for _, n := range slices {
			giProfile, ok := profileWithSlices(d, n)
			if !ok {
				return fmt.Errorf("mock machine %q: GPU %d has no MIG profile with %d slices", machine, idx, n)
			}
			placement, ok := freePlacement(d, giProfile, used)
			if !ok {
				return fmt.Errorf("mock machine %q: GPU %d: no free placement for a %d-slice MIG instance", machine, idx, n)
			}
			giH, ret := d.CreateGpuInstanceWithPlacement(&giProfile, &placement)
			if ret != nvml.SUCCESS {
				return fmt.Errorf("mock machine %q: GPU %d: creating a GPU instance: %s", machine, idx, nvml.ErrorString(ret))
			}
			gi := giH.(*server.GpuInstance)
			gis[int(gi.Info.Id)] = gi
			ciProfile, ok := ciProfileWithSlices(gi, n)
			if !ok {
				return fmt.Errorf("mock machine %q: GPU %d: no compute instance profile with %d slices", machine, idx, n)
			}
			ciH, ret := gi.CreateComputeInstance(&ciProfile)
			if ret != nvml.SUCCESS {
				return fmt.Errorf("mock machine %q: GPU %d: creating a compute instance: %s", machine, idx, nvml.ErrorString(ret))
			}
			ci := ciH.(*server.ComputeInstance)
			cis := map[int]*server.ComputeInstance{int(ci.Info.Id): ci}
			gi.GetComputeInstanceByIdFunc = func(id int) (nvml.ComputeInstance, nvml.Return) {
				if c, ok := cis[id]; ok {
					return c, nvml.SUCCESS
				}
				return nil, nvml.ERROR_NOT_FOUND
			}
			handles = append(handles, newMockMIGHandle(d, mockMIGUUID(machine, seed, idx, int(gi.Info.Id), int(ci.Info.Id)),
				int(gi.Info.Id), int(ci.Info.Id), giProfile.MemorySizeMB))
		}
		d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
		d.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= 7 {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			if i >= len(handles) {
				return nil, nvml.ERROR_NOT_FOUND
			}
			return handles[i], nvml.SUCCESS
		}
		d.GetGpuInstanceByIdFunc = func(id int) (nvml.GpuInstance, nvml.Return) {
			if gi, ok := gis[id]; ok {
				return gi, nvml.SUCCESS
			}
			return nil, nvml.ERROR_NOT_FOUND
		}
	}
	return nil
}

// profileWithSlices returns the plain GPU instance profile (no media
// extension variant) with n slices.
func profileWithSlices(d *server.Device, n uint32) (nvml.GpuInstanceProfileInfo, bool) {
	for _, id := range []int{nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.GPU_INSTANCE_PROFILE_2_SLICE, nvml.GPU_INSTANCE_PROFILE_3_SLICE,
		nvml.GPU_INSTANCE_PROFILE_4_SLICE, nvml.GPU_INSTANCE_PROFILE_7_SLICE, nvml.GPU_INSTANCE_PROFILE_8_SLICE, nvml.GPU_INSTANCE_PROFILE_6_SLICE} {
		if p, ok := d.Config.MIGProfiles.GpuInstanceProfiles[id]; ok && p.SliceCount == n {
			return p, true
		}
	}
	return nvml.GpuInstanceProfileInfo{}, false
}

func freePlacement(d *server.Device, p nvml.GpuInstanceProfileInfo, used map[uint32]bool) (nvml.GpuInstancePlacement, bool) {
	for _, pl := range d.Config.MIGProfiles.GpuInstancePlacements[int(p.Id)] {
		free := true
		for s := pl.Start; s < pl.Start+pl.Size; s++ {
			free = free && !used[s]
		}
		if free {
			for s := pl.Start; s < pl.Start+pl.Size; s++ {
				used[s] = true
			}
			return pl, true
		}
	}
	return nvml.GpuInstancePlacement{}, false
}

func ciProfileWithSlices(gi *server.GpuInstance, n uint32) (nvml.ComputeInstanceProfileInfo, bool) {
	for id := 0; id < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; id++ {
		p, ret := gi.GetComputeInstanceProfileInfo(id, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
		if ret == nvml.SUCCESS && p.SliceCount == n {
			return p, true
		}
	}
	return nvml.ComputeInstanceProfileInfo{}, false
}

// newMockMIGHandle returns the NVML handle of one mock MIG device with the
// calls that MIG discovery and CDI generation make on it.
func newMockMIGHandle(parent *server.Device, uuid string, gi, ci int, memMB uint64) nvml.Device {
	return &mock.Device{
		GetUUIDFunc:                            func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		IsMigDeviceHandleFunc:                  func() (bool, nvml.Return) { return true, nvml.SUCCESS },
		GetGpuInstanceIdFunc:                   func() (int, nvml.Return) { return gi, nvml.SUCCESS },
		GetComputeInstanceIdFunc:               func() (int, nvml.Return) { return ci, nvml.SUCCESS },
		GetDeviceHandleFromMigDeviceHandleFunc: func() (nvml.Device, nvml.Return) { return parent, nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: memMB << 20, Free: memMB << 20}, nvml.SUCCESS
		},
	}
}

func mockMIGUUID(machine, seed string, gpu, gi, ci int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d/gi%d/ci%d", machine, seed, gpu, gi, ci))
	return fmt.Sprintf("MIG-%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}

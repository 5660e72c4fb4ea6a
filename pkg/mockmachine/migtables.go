package mockmachine

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
)

// MemorySlices is the number of memory slices of every MIG-capable mock
// GPU (A100, H100, H200, B200): the end of the widest placement.
const MemorySlices = 8

// giProfileSpec is one GPU instance profile of a GPU model, as NVML's
// GpuInstanceProfileInfo reports it: index is the profile argument of
// GetGpuInstanceProfileInfo (nvml.GPU_INSTANCE_PROFILE_*), id the profile's
// unique ID (GpuInstanceProfileInfo.Id and GpuInstanceInfo.ProfileId, the ID
// nvidia-smi shows). Memory is in MiB.
type giProfileSpec struct {
	index                      int
	id                         uint32
	slices, count              uint32
	sm, ce, dec, enc, jpeg, of uint32
	memMB                      uint64
}

// The unique GPU instance profile IDs of the mock GPU models (as on A100,
// H100, H200 and B200).
const (
	profileID1g   = 19 // GPU_INSTANCE_PROFILE_1_SLICE
	profileID1gME = 20 // GPU_INSTANCE_PROFILE_1_SLICE_REV1: with media extensions
	profileID1gX2 = 15 // GPU_INSTANCE_PROFILE_1_SLICE_REV2: double memory
	profileID2g   = 14 // GPU_INSTANCE_PROFILE_2_SLICE
	profileID3g   = 9  // GPU_INSTANCE_PROFILE_3_SLICE
	profileID4g   = 5  // GPU_INSTANCE_PROFILE_4_SLICE
	profileID7g   = 0  // GPU_INSTANCE_PROFILE_7_SLICE
)

// giPlacements are the possible placements (start:size in memory slices)
// of each GPU instance profile, by unique profile ID; the same on every
// mock GPU model.
var giPlacements = map[uint32][]nvml.GpuInstancePlacement{
	profileID1g:   placements(1, 0, 1, 2, 3, 4, 5, 6),
	profileID1gME: placements(1, 0, 1, 2, 3, 4, 5, 6),
	profileID1gX2: placements(2, 0, 2, 4, 6),
	profileID2g:   placements(2, 0, 2, 4),
	profileID3g:   placements(4, 0, 4),
	profileID4g:   placements(4, 0),
	profileID7g:   placements(8, 0),
}

func placements(size uint32, starts ...uint32) []nvml.GpuInstancePlacement {
	out := make([]nvml.GpuInstancePlacement, len(starts))
	for i, s := range starts {
		out[i] = nvml.GpuInstancePlacement{Start: s, Size: size}
	}
	return out
}

// a100Profiles returns the A100 profiles with the memory sizes of the 1g,
// 1g double memory (and 2g), 3g (and 4g) and 7g instances.
func a100Profiles(mem1, mem2, mem3, mem7 uint64) []giProfileSpec {
	return []giProfileSpec{
		{index: nvml.GPU_INSTANCE_PROFILE_1_SLICE, id: profileID1g, slices: 1, count: 7, sm: 14, ce: 1, memMB: mem1},
		{index: nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, id: profileID1gME, slices: 1, count: 1, sm: 14, ce: 1, dec: 1, jpeg: 1, of: 1, memMB: mem1},
		{index: nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2, id: profileID1gX2, slices: 1, count: 4, sm: 14, ce: 1, dec: 1, memMB: mem2},
		{index: nvml.GPU_INSTANCE_PROFILE_2_SLICE, id: profileID2g, slices: 2, count: 3, sm: 28, ce: 2, dec: 1, memMB: mem2},
		{index: nvml.GPU_INSTANCE_PROFILE_3_SLICE, id: profileID3g, slices: 3, count: 2, sm: 42, ce: 3, dec: 2, memMB: mem3},
		{index: nvml.GPU_INSTANCE_PROFILE_4_SLICE, id: profileID4g, slices: 4, count: 1, sm: 56, ce: 4, dec: 2, memMB: mem3},
		{index: nvml.GPU_INSTANCE_PROFILE_7_SLICE, id: profileID7g, slices: 7, count: 1, sm: 98, ce: 7, dec: 5, jpeg: 1, of: 1, memMB: mem7},
	}
}

// hopperProfiles returns the H100-like profiles (H100, H200, B200) with the
// multiprocessors of the 1g (all three 1g profiles), 2g, 3g, 4g and 7g
// instances and the memory sizes as in a100Profiles.
func hopperProfiles(sm1, sm1x2, sm2, sm3, sm4, sm7 uint32, mem1, mem2, mem3, mem7 uint64) []giProfileSpec {
	return []giProfileSpec{
		{index: nvml.GPU_INSTANCE_PROFILE_1_SLICE, id: profileID1g, slices: 1, count: 7, sm: sm1, ce: 1, dec: 1, jpeg: 1, memMB: mem1},
		{index: nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, id: profileID1gME, slices: 1, count: 1, sm: sm1, ce: 1, dec: 1, jpeg: 1, of: 1, memMB: mem1},
		{index: nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV2, id: profileID1gX2, slices: 1, count: 4, sm: sm1x2, ce: 1, dec: 1, jpeg: 1, memMB: mem2},
		{index: nvml.GPU_INSTANCE_PROFILE_2_SLICE, id: profileID2g, slices: 2, count: 3, sm: sm2, ce: 2, dec: 2, jpeg: 2, memMB: mem2},
		{index: nvml.GPU_INSTANCE_PROFILE_3_SLICE, id: profileID3g, slices: 3, count: 2, sm: sm3, ce: 3, dec: 3, jpeg: 3, memMB: mem3},
		{index: nvml.GPU_INSTANCE_PROFILE_4_SLICE, id: profileID4g, slices: 4, count: 1, sm: sm4, ce: 4, dec: 4, jpeg: 4, memMB: mem3},
		{index: nvml.GPU_INSTANCE_PROFILE_7_SLICE, id: profileID7g, slices: 7, count: 1, sm: sm7, ce: 8, dec: 7, jpeg: 7, of: 1, memMB: mem7},
	}
}

// migModels are the MIG profiles of the mock GPU models, by PCI device ID
// (gpus.Config.PciDeviceId), as real GPUs of the model report them. The
// profile names that pkg/inventory derives from them are those of
// nvidia-smi (see TestMIGProfileNames).
var migModels = map[uint32][]giProfileSpec{
	gpus.A100_SXM4_40GB.PciDeviceId:  a100Profiles(4864, 9856, 19968, 40192),
	gpus.A100_SXM4_80GB.PciDeviceId:  a100Profiles(9728, 19968, 40192, 80384),
	gpus.H100_SXM5_80GB.PciDeviceId:  hopperProfiles(16, 26, 32, 60, 64, 132, 9984, 20096, 40448, 81152),
	gpus.H200_SXM5_141GB.PciDeviceId: hopperProfiles(16, 26, 32, 60, 64, 132, 16896, 33792, 71424, 143360),
	// 92160 MiB for 3g.90gb and 4g.90gb: with the GPU's 184320 MiB, any
	// more is over half the memory, which pkg/inventory names 113gb.
	gpus.B200_SXM5_180GB.PciDeviceId: hopperProfiles(18, 18, 36, 54, 72, 148, 23040, 45824, 92160, 184320),
}

// ciSliceProfiles are the compute instance profiles, by slice count, that
// the mock GPU instances offer.
var ciSliceProfiles = []struct {
	id     int
	slices uint32
}{
	{nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, 1},
	{nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE, 2},
	{nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE, 3},
	{nvml.COMPUTE_INSTANCE_PROFILE_4_SLICE, 4},
	{nvml.COMPUTE_INSTANCE_PROFILE_7_SLICE, 7},
}

// migProfileTables returns the MIG profile configuration of the GPU model
// with the given PCI device ID: GPU instance profiles (keyed by profile
// index, nvml.GPU_INSTANCE_PROFILE_*) and placements (keyed by unique
// profile ID), and
// for each GPU instance profile the compute instance profiles whose slice
// count fits in it (the one spanning it included) with multiprocessors in
// proportion and the GPU instance's engines shared, placed at multiples of
// their slice count (keyed by the GPU instance's unique profile ID, then by
// compute instance profile ID, which equals its index
// nvml.COMPUTE_INSTANCE_PROFILE_*). The keys are those go-nvml's mock
// servers use. The maps are new; the caller may keep them.
func migProfileTables(pciDeviceID uint32) (gpus.MIGProfileConfig, error) {
	specs, ok := migModels[pciDeviceID]
	if !ok {
		return gpus.MIGProfileConfig{}, fmt.Errorf("no MIG profiles for the GPU with PCI device ID %#x", pciDeviceID)
	}
	cfg := gpus.MIGProfileConfig{
		GpuInstanceProfiles:       map[int]nvml.GpuInstanceProfileInfo{},
		ComputeInstanceProfiles:   map[int]map[int]nvml.ComputeInstanceProfileInfo{},
		GpuInstancePlacements:     map[int][]nvml.GpuInstancePlacement{},
		ComputeInstancePlacements: map[int]map[int][]nvml.ComputeInstancePlacement{},
	}
	for _, p := range specs {
		cfg.GpuInstanceProfiles[p.index] = nvml.GpuInstanceProfileInfo{
			Id: p.id, SliceCount: p.slices, InstanceCount: p.count, MultiprocessorCount: p.sm,
			CopyEngineCount: p.ce, DecoderCount: p.dec, EncoderCount: p.enc, JpegCount: p.jpeg, OfaCount: p.of, MemorySizeMB: p.memMB,
		}
		cfg.GpuInstancePlacements[int(p.id)] = append([]nvml.GpuInstancePlacement(nil), giPlacements[p.id]...)
		cis := map[int]nvml.ComputeInstanceProfileInfo{}
		cps := map[int][]nvml.ComputeInstancePlacement{}
		for _, c := range ciSliceProfiles {
			if c.slices > p.slices {
				continue
			}
			cis[c.id] = nvml.ComputeInstanceProfileInfo{
				Id: uint32(c.id), SliceCount: c.slices, InstanceCount: p.slices / c.slices,
				MultiprocessorCount:   p.sm * c.slices / p.slices,
				SharedCopyEngineCount: p.ce, SharedDecoderCount: p.dec, SharedEncoderCount: p.enc, SharedJpegCount: p.jpeg, SharedOfaCount: p.of,
			}
			for start := uint32(0); start+c.slices <= p.slices; start += c.slices {
				cps[c.id] = append(cps[c.id], nvml.ComputeInstancePlacement{Start: start, Size: c.slices})
			}
		}
		cfg.ComputeInstanceProfiles[int(p.id)] = cis
		cfg.ComputeInstancePlacements[int(p.id)] = cps
	}
	return cfg, nil
}

package inventory

import (
	"fmt"
	"math"
	"sort"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// MIGDevice is one MIG device (a compute instance inside a GPU instance)
// that exists on a GPU in MIG mode. The driver publishes existing MIG
// devices ("static MIG"); it never creates or destroys them.
type MIGDevice struct {
	// UUID is NVML's identifier of the MIG device, "MIG-...".
	UUID string
	// ParentIndex, ParentUUID and ParentMinor identify the GPU.
	ParentIndex int
	ParentUUID  string
	ParentMinor int
	// ProductName is the parent GPU's product name.
	ProductName string
	// GPUInstanceID and ComputeInstanceID are the MIG instance IDs; with
	// the parent's minor they select the capability device nodes
	// (/proc/driver/nvidia-caps/mig-minors).
	GPUInstanceID     int
	ComputeInstanceID int
	// Profile is the MIG profile name as nvidia-smi shows it: "1g.5gb",
	// "3g.40gb", "1c.3g.40gb" (a compute instance smaller than its GPU
	// instance), "1g.10gb+me" (with media extensions).
	Profile string
	// GPUInstanceProfileID and ComputeInstanceProfileID are NVML's profile
	// IDs (nvml.GPU_INSTANCE_PROFILE_*, nvml.COMPUTE_INSTANCE_PROFILE_*).
	GPUInstanceProfileID     int
	ComputeInstanceProfileID int
	// PlacementStart and PlacementSize are the GPU instance's memory
	// slices on the GPU.
	PlacementStart int
	PlacementSize  int
	// Capacities of the profile.
	Multiprocessors uint32
	MemoryBytes     uint64
	CopyEngines     uint32
	Decoders        uint32
	Encoders        uint32
	JPEGs           uint32
	OFAs            uint32
}

// discoverMIG lists the MIG devices of the GPU d (handle h), which is in
// MIG mode, ordered by GPU instance ID then compute instance ID.
func discoverMIG(h nvml.Device, d Device) ([]MIGDevice, error) {
	count, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("counting MIG devices: %s", nvml.ErrorString(ret))
	}
	var out []MIGDevice
	for i := 0; i < count; i++ {
		mh, ret := h.GetMigDeviceHandleByIndex(i)
		if ret == nvml.ERROR_NOT_FOUND || ret == nvml.ERROR_INVALID_ARGUMENT {
			continue // no MIG device at this index
		}
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("MIG device %d: getting its handle: %s", i, nvml.ErrorString(ret))
		}
		m, err := describeMIG(h, mh, d)
		if err != nil {
			return nil, fmt.Errorf("MIG device %d: %w", i, err)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].GPUInstanceID != out[b].GPUInstanceID {
			return out[a].GPUInstanceID < out[b].GPUInstanceID
		}
		return out[a].ComputeInstanceID < out[b].ComputeInstanceID
	})
	return out, nil
}

func describeMIG(parent, mh nvml.Device, d Device) (MIGDevice, error) {
	m := MIGDevice{ParentIndex: d.Index, ParentUUID: d.UUID, ParentMinor: d.Minor, ProductName: d.ProductName}
	var ret nvml.Return
	if m.UUID, ret = mh.GetUUID(); ret != nvml.SUCCESS {
		return m, fmt.Errorf("reading its UUID: %s", nvml.ErrorString(ret))
	}
	if m.GPUInstanceID, ret = mh.GetGpuInstanceId(); ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: reading its GPU instance ID: %s", m.UUID, nvml.ErrorString(ret))
	}
	if m.ComputeInstanceID, ret = mh.GetComputeInstanceId(); ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: reading its compute instance ID: %s", m.UUID, nvml.ErrorString(ret))
	}
	gi, ret := parent.GetGpuInstanceById(m.GPUInstanceID)
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: getting GPU instance %d: %s", m.UUID, m.GPUInstanceID, nvml.ErrorString(ret))
	}
	giInfo, ret := gi.GetInfo()
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: reading GPU instance %d: %s", m.UUID, m.GPUInstanceID, nvml.ErrorString(ret))
	}
	giProfileIndex, giProfile, ret := gpuInstanceProfileByID(parent, giInfo.ProfileId)
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: reading GPU instance profile %d: %s", m.UUID, giInfo.ProfileId, nvml.ErrorString(ret))
	}
	ci, ret := gi.GetComputeInstanceById(m.ComputeInstanceID)
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: getting compute instance %d: %s", m.UUID, m.ComputeInstanceID, nvml.ErrorString(ret))
	}
	ciInfo, ret := ci.GetInfo()
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: reading compute instance %d: %s", m.UUID, m.ComputeInstanceID, nvml.ErrorString(ret))
	}
	ciProfile, ret := gi.GetComputeInstanceProfileInfo(int(ciInfo.ProfileId), nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if ret != nvml.SUCCESS {
		return m, fmt.Errorf("%s: reading compute instance profile %d: %s", m.UUID, ciInfo.ProfileId, nvml.ErrorString(ret))
	}
	m.GPUInstanceProfileID = giProfileIndex
	m.ComputeInstanceProfileID = int(ciInfo.ProfileId)
	m.PlacementStart = int(giInfo.Placement.Start)
	m.PlacementSize = int(giInfo.Placement.Size)
	m.Multiprocessors = ciProfile.MultiprocessorCount
	m.MemoryBytes = giProfile.MemorySizeMB << 20
	m.CopyEngines = giProfile.CopyEngineCount
	m.Decoders = giProfile.DecoderCount
	m.Encoders = giProfile.EncoderCount
	m.JPEGs = giProfile.JpegCount
	m.OFAs = giProfile.OfaCount
	m.Profile = MIGProfileName(giProfileIndex, giProfile.SliceCount, ciProfile.SliceCount, giProfile.MemorySizeMB, d.MemoryBytes>>20)
	return m, nil
}

// gpuInstanceProfileByID returns the index (nvml.GPU_INSTANCE_PROFILE_*,
// the argument of GetGpuInstanceProfileInfo) and the info of the GPU
// instance profile whose unique ID (GpuInstanceInfo.ProfileId, 19 for a
// 1g profile on an A100) is id: NVML reports instances by unique ID, which
// differs from the index. ERROR_NOT_FOUND when no profile has that ID.
func gpuInstanceProfileByID(h nvml.Device, id uint32) (int, nvml.GpuInstanceProfileInfo, nvml.Return) {
	for i := 0; i < nvml.GPU_INSTANCE_PROFILE_COUNT; i++ {
		p, ret := h.GetGpuInstanceProfileInfo(i)
		if ret == nvml.SUCCESS && p.Id == id {
			return i, p, nvml.SUCCESS
		}
	}
	return 0, nvml.GpuInstanceProfileInfo{}, nvml.ERROR_NOT_FOUND
}

// MIGProfileName returns the nvidia-smi name of a MIG profile: "<g>g.<mem>gb"
// when the compute instance spans its GPU instance, "<c>c.<g>g.<mem>gb"
// otherwise, with "+me", "+gfx", "-me" or "+me.all" for the GPU instance
// profile variants. The memory is given in GB the way NVIDIA names it: the
// instance's share of the GPU memory rounded up to eighths, times the GPU
// memory in whole GB, rounded.
func MIGProfileName(giProfileID int, giSlices, ciSlices uint32, memMB, gpuMemMB uint64) string {
	name := fmt.Sprintf("%dg.%dgb", giSlices, migMemoryGB(memMB, gpuMemMB))
	if ciSlices != 0 && ciSlices != giSlices {
		name = fmt.Sprintf("%dc.%s", ciSlices, name)
	}
	switch giProfileID {
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_REV1, nvml.GPU_INSTANCE_PROFILE_2_SLICE_REV1:
		name += "+me"
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_GFX, nvml.GPU_INSTANCE_PROFILE_2_SLICE_GFX,
		nvml.GPU_INSTANCE_PROFILE_4_SLICE_GFX, nvml.GPU_INSTANCE_PROFILE_3_SLICE_GFX:
		name += "+gfx"
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_NO_ME, nvml.GPU_INSTANCE_PROFILE_2_SLICE_NO_ME:
		name += "-me"
	case nvml.GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME, nvml.GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME:
		name += "+me.all"
	}
	return name
}

func migMemoryGB(memMB, gpuMemMB uint64) uint64 {
	if gpuMemMB == 0 {
		return (memMB + 1023) / 1024
	}
	eighths := math.Ceil(float64(memMB) / float64(gpuMemMB) * 8)
	gpuGB := float64((gpuMemMB + 1023) / 1024)
	return uint64(math.Round(eighths / 8 * gpuGB))
}

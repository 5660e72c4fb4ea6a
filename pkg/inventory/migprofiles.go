package inventory

import (
	"fmt"
	"sort"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// MIGPlacement is where a GPU instance of a profile can be created: the
// memory slices [Start, Start+Size) of its GPU (nvml.GpuInstancePlacement).
type MIGPlacement struct {
	Start int
	Size  int
}

// End is the first memory slice after the placement.
func (p MIGPlacement) End() int { return p.Start + p.Size }

// Overlaps tells whether p and q share a memory slice.
func (p MIGPlacement) Overlaps(q MIGPlacement) bool { return p.Start < q.End() && q.Start < p.End() }

// MIGProfile is a GPU instance profile that a MIG-capable GPU offers, used
// with one compute instance spanning the GPU instance: what the driver
// creates for a claim on demand.
type MIGProfile struct {
	// Name is the nvidia-smi name, e.g. "1g.10gb" or "1g.10gb+me" (see
	// MIGProfileName).
	Name string
	// ProfileIndex is the profile's index in NVML's profile enumeration
	// (nvml.GPU_INSTANCE_PROFILE_*: 0 for 1g, 7 for 1g+me...), what
	// nvmlDeviceGetGpuInstanceProfileInfo takes.
	ProfileIndex int
	// GPUInstanceProfileID is the profile's ID (the ID column of
	// `nvidia-smi mig -lgip`: 19 for 1g, 20 for 1g+me, 0 for 7g), what
	// NVML reports in a GPU instance's info.
	GPUInstanceProfileID int
	// ComputeInstanceProfileID is the compute instance profile that spans
	// the GPU instance (ComputeInstanceProfileFor(Slices)).
	ComputeInstanceProfileID int
	// Slices is the profile's compute slice count: the "1" of "1g".
	Slices uint32
	// MemoryBytes and the engine counts are the GPU instance's.
	MemoryBytes     uint64
	Multiprocessors uint32
	CopyEngines     uint32
	Decoders        uint32
	Encoders        uint32
	JPEGs           uint32
	OFAs            uint32
	// Placements are NVML's possible placements of the profile, ordered
	// by Start.
	Placements []MIGPlacement
}

// MIGLayout is how a MIG-capable GPU can be partitioned on demand.
type MIGLayout struct {
	// ParentUUID is the GPU's UUID.
	ParentUUID string
	// MemorySlices is the GPU's number of memory slices (8 on A100, H100,
	// H200, B200): the end of the widest placement.
	MemorySlices int
	// Profiles are the profiles that have at least one placement, ordered
	// by ProfileIndex.
	Profiles []MIGProfile
	// ModePending tells that a MIG mode change waits for a GPU reset
	// (NVML's current and pending modes differ).
	ModePending bool
	// ModeSwitchable tells whether the GPU changes MIG mode without a GPU
	// reset when idle: Hopper and later. An Ampere GPU (A100, A30) needs a
	// reset, so only its mode at start-up can be used.
	ModeSwitchable bool
}

// Profile returns the layout's profile with the given GPU instance
// profile ID (MIGProfile.GPUInstanceProfileID).
func (l MIGLayout) Profile(giProfileID int) (MIGProfile, bool) {
	for _, p := range l.Profiles {
		if p.GPUInstanceProfileID == giProfileID {
			return p, true
		}
	}
	return MIGProfile{}, false
}

// ComputeInstanceProfileFor returns the compute instance profile ID with
// the given slice count (nvml.COMPUTE_INSTANCE_PROFILE_<n>_SLICE), and
// false for a count NVML has no profile for.
func ComputeInstanceProfileFor(slices uint32) (int, bool) {
	switch slices {
	case 1:
		return nvml.COMPUTE_INSTANCE_PROFILE_1_SLICE, true
	case 2:
		return nvml.COMPUTE_INSTANCE_PROFILE_2_SLICE, true
	case 3:
		return nvml.COMPUTE_INSTANCE_PROFILE_3_SLICE, true
	case 4:
		return nvml.COMPUTE_INSTANCE_PROFILE_4_SLICE, true
	case 6:
		return nvml.COMPUTE_INSTANCE_PROFILE_6_SLICE, true
	case 7:
		return nvml.COMPUTE_INSTANCE_PROFILE_7_SLICE, true
	case 8:
		return nvml.COMPUTE_INSTANCE_PROFILE_8_SLICE, true
	}
	return 0, false
}

// DiscoverMIGLayouts returns the MIG layout of every MIG-capable GPU of inv
// (by UUID), read through lib. A GPU whose profiles NVML does not report
// (NOT_SUPPORTED for every profile, as on some virtualized GPUs) is left
// out; a GPU whose profile query fails otherwise is left out and named in
// the returned errors, which never stop the others.
func DiscoverMIGLayouts(lib nvml.Interface, inv *Inventory) (map[string]MIGLayout, []error) {
	out := map[string]MIGLayout{}
	var errs []error
	for _, d := range inv.Devices {
		if !d.MIGCapable {
			continue
		}
		h, ret := lib.DeviceGetHandleByUUID(d.UUID)
		if ret != nvml.SUCCESS {
			errs = append(errs, fmt.Errorf("GPU %d (%s): getting its NVML handle for its MIG profiles: %s", d.Index, d.UUID, nvml.ErrorString(ret)))
			continue
		}
		l, err := discoverMIGLayout(h, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("GPU %d (%s): %w", d.Index, d.UUID, err))
			continue
		}
		if len(l.Profiles) > 0 {
			out[d.UUID] = l
		}
	}
	return out, errs
}

func discoverMIGLayout(h nvml.Device, d Device) (MIGLayout, error) {
	l := MIGLayout{ParentUUID: d.UUID, ModeSwitchable: modeSwitchable(d.Architecture)}
	current, pending, ret := h.GetMigMode()
	if ret != nvml.SUCCESS {
		return l, fmt.Errorf("reading its MIG mode: %s", nvml.ErrorString(ret))
	}
	l.ModePending = current != pending
	for id := 0; id < nvml.GPU_INSTANCE_PROFILE_COUNT; id++ {
		info, ret := h.GetGpuInstanceProfileInfo(id)
		if ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_INVALID_ARGUMENT || ret == nvml.ERROR_NOT_FOUND {
			continue
		}
		if ret != nvml.SUCCESS {
			return l, fmt.Errorf("reading MIG profile %d: %s", id, nvml.ErrorString(ret))
		}
		ciProfile, ok := ComputeInstanceProfileFor(info.SliceCount)
		if !ok {
			continue
		}
		placements, ret := h.GetGpuInstancePossiblePlacements(&info)
		if ret != nvml.SUCCESS {
			return l, fmt.Errorf("reading the placements of MIG profile %d: %s", id, nvml.ErrorString(ret))
		}
		p := MIGProfile{
			Name:                     MIGProfileName(id, info.SliceCount, info.SliceCount, info.MemorySizeMB, d.MemoryBytes>>20),
			ProfileIndex:             id,
			GPUInstanceProfileID:     int(info.Id),
			ComputeInstanceProfileID: ciProfile,
			Slices:                   info.SliceCount,
			MemoryBytes:              info.MemorySizeMB << 20,
			Multiprocessors:          info.MultiprocessorCount,
			CopyEngines:              info.CopyEngineCount,
			Decoders:                 info.DecoderCount,
			Encoders:                 info.EncoderCount,
			JPEGs:                    info.JpegCount,
			OFAs:                     info.OfaCount,
		}
		for _, pl := range placements {
			mp := MIGPlacement{Start: int(pl.Start), Size: int(pl.Size)}
			p.Placements = append(p.Placements, mp)
			l.MemorySlices = max(l.MemorySlices, mp.End())
		}
		if len(p.Placements) == 0 {
			continue
		}
		sort.Slice(p.Placements, func(a, b int) bool { return p.Placements[a].Start < p.Placements[b].Start })
		l.Profiles = append(l.Profiles, p)
	}
	return l, nil
}

// modeSwitchable tells whether GPUs of the architecture (Device.Architecture)
// switch MIG mode without a reset.
func modeSwitchable(arch string) bool {
	switch arch {
	case "Hopper", "Blackwell", "Rubin":
		return true
	}
	return false
}

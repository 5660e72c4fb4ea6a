package main

/*
#include "mocknvml.h"
*/
import "C"

import (
	"sort"
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// MIG: modes, MIG device handles, GPU and compute instances and their
// profiles and placements, as the mock machine has them (pkg/mockmachine:
// the -mig machines have GPUs 0 and 1 in MIG mode with instances created).

//export nvmlDeviceGetMigMode
func nvmlDeviceGetMigMode(device C.nvmlDevice_t, currentMode, pendingMode *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetMigMode", &ret)
	d, r := device_("nvmlDeviceGetMigMode", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if currentMode == nil || pendingMode == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	cur, pending, r := d.GetMigMode()
	if r == nvml.SUCCESS {
		*currentMode, *pendingMode = C.uint(cur), C.uint(pending)
	}
	return cret(r)
}

//export nvmlDeviceGetMaxMigDeviceCount
func nvmlDeviceGetMaxMigDeviceCount(device C.nvmlDevice_t, count *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetMaxMigDeviceCount", &ret)
	return cret(deviceUint("nvmlDeviceGetMaxMigDeviceCount", device, false, count, nvml.Device.GetMaxMigDeviceCount))
}

//export nvmlDeviceGetMigDeviceHandleByIndex
func nvmlDeviceGetMigDeviceHandleByIndex(device C.nvmlDevice_t, index C.uint, migDevice *C.nvmlDevice_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetMigDeviceHandleByIndex", &ret)
	d, r := device_("nvmlDeviceGetMigDeviceHandleByIndex", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if migDevice == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	m, r := d.GetMigDeviceHandleByIndex(int(index))
	if r == nvml.SUCCESS {
		*migDevice = C.nvmlDevice_t(migHandle(d, m))
	}
	return cret(r)
}

//export nvmlDeviceIsMigDeviceHandle
func nvmlDeviceIsMigDeviceHandle(device C.nvmlDevice_t, isMigDevice *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceIsMigDeviceHandle", &ret)
	d, r := deviceOf("nvmlDeviceIsMigDeviceHandle", ptr(device), true)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if isMigDevice == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	is, r := d.IsMigDeviceHandle()
	if r == nvml.SUCCESS {
		*isMigDevice = 0
		if is {
			*isMigDevice = 1
		}
	}
	return cret(r)
}

//export nvmlDeviceGetDeviceHandleFromMigDeviceHandle
func nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDevice C.nvmlDevice_t, device *C.nvmlDevice_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", &ret)
	m, r := deviceOf("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", ptr(migDevice), true)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if device == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	parent, r := m.GetDeviceHandleFromMigDeviceHandle()
	if r == nvml.SUCCESS {
		*device = C.nvmlDevice_t(handleOf(parent))
	}
	return cret(r)
}

//export nvmlDeviceGetGpuInstanceId
func nvmlDeviceGetGpuInstanceId(device C.nvmlDevice_t, id *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuInstanceId", &ret)
	return cret(deviceUint("nvmlDeviceGetGpuInstanceId", device, true, id, nvml.Device.GetGpuInstanceId))
}

//export nvmlDeviceGetComputeInstanceId
func nvmlDeviceGetComputeInstanceId(device C.nvmlDevice_t, id *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetComputeInstanceId", &ret)
	return cret(deviceUint("nvmlDeviceGetComputeInstanceId", device, true, id, nvml.Device.GetComputeInstanceId))
}

//export nvmlDeviceGetGpuInstanceProfileInfo
func nvmlDeviceGetGpuInstanceProfileInfo(device C.nvmlDevice_t, profile C.uint, info *C.nvmlGpuInstanceProfileInfo_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuInstanceProfileInfo", &ret)
	d, r := device_("nvmlDeviceGetGpuInstanceProfileInfo", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	p, r := d.GetGpuInstanceProfileInfo(int(profile))
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(info), p)
	}
	return cret(r)
}

// gpuMemoryMB is the memory of d's GPU in MiB, for profile names.
func gpuMemoryMB(d nvml.Device) uint64 {
	if m, r := d.GetMemoryInfo(); r == nvml.SUCCESS {
		return m.Total >> 20
	}
	return 0
}

// gpuInstanceProfileName is NVML's name of the GPU instance profile p at
// index (nvml.GPU_INSTANCE_PROFILE_*), "MIG 1g.10gb".
func gpuInstanceProfileName(d nvml.Device, index int, p nvml.GpuInstanceProfileInfo) string {
	return "MIG " + inventory.MIGProfileName(index, p.SliceCount, 0, p.MemorySizeMB, gpuMemoryMB(d))
}

//export nvmlDeviceGetGpuInstanceProfileInfoV
func nvmlDeviceGetGpuInstanceProfileInfoV(device C.nvmlDevice_t, profile C.uint, info *C.nvmlGpuInstanceProfileInfo_v2_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuInstanceProfileInfoV", &ret)
	d, r := device_("nvmlDeviceGetGpuInstanceProfileInfoV", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	version := info.version
	if version != gpuInstanceProfileInfoV2 && version != gpuInstanceProfileInfoV3 {
		return cret(nvml.ERROR_ARGUMENT_VERSION_MISMATCH)
	}
	p, r := d.GetGpuInstanceProfileInfo(int(profile))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	name := name96(gpuInstanceProfileName(d, int(profile), p))
	if version == gpuInstanceProfileInfoV2 {
		put(unsafe.Pointer(info), nvml.GpuInstanceProfileInfo_v2{
			Version: uint32(version), Id: p.Id, IsP2pSupported: p.IsP2pSupported, SliceCount: p.SliceCount,
			InstanceCount: p.InstanceCount, MultiprocessorCount: p.MultiprocessorCount, CopyEngineCount: p.CopyEngineCount,
			DecoderCount: p.DecoderCount, EncoderCount: p.EncoderCount, JpegCount: p.JpegCount, OfaCount: p.OfaCount,
			MemorySizeMB: p.MemorySizeMB, Name: name,
		})
	} else {
		put(unsafe.Pointer(info), nvml.GpuInstanceProfileInfo_v3{
			Version: uint32(version), Id: p.Id, SliceCount: p.SliceCount,
			InstanceCount: p.InstanceCount, MultiprocessorCount: p.MultiprocessorCount, CopyEngineCount: p.CopyEngineCount,
			DecoderCount: p.DecoderCount, EncoderCount: p.EncoderCount, JpegCount: p.JpegCount, OfaCount: p.OfaCount,
			MemorySizeMB: p.MemorySizeMB, Name: name,
		})
	}
	return cret(nvml.SUCCESS)
}

// giProfileByID is d's GPU instance profile whose unique ID is id
// (GpuInstanceProfileInfo.Id): the C calls other than
// nvmlDeviceGetGpuInstanceProfileInfo(V) take that ID, those two the index
// nvml.GPU_INSTANCE_PROFILE_*. ERROR_INVALID_ARGUMENT when d has no such
// profile; the failure of the profile queries (ERROR_NOT_SUPPORTED) when d
// has no profile at all.
func giProfileByID(d nvml.Device, id uint32) (nvml.GpuInstanceProfileInfo, nvml.Return) {
	_, p, r := giProfileIndexByID(d, id)
	return p, r
}

// giProfileIndexByID is giProfileByID with the profile's index.
func giProfileIndexByID(d nvml.Device, id uint32) (int, nvml.GpuInstanceProfileInfo, nvml.Return) {
	some, first := false, nvml.ERROR_INVALID_ARGUMENT
	for i := 0; i < nvml.GPU_INSTANCE_PROFILE_COUNT; i++ {
		p, r := d.GetGpuInstanceProfileInfo(i)
		switch {
		case r == nvml.SUCCESS && p.Id == id:
			return i, p, nvml.SUCCESS
		case r == nvml.SUCCESS:
			some = true
		case i == 0:
			first = r
		}
	}
	if some {
		first = nvml.ERROR_INVALID_ARGUMENT
	}
	return 0, nvml.GpuInstanceProfileInfo{}, first
}

// gpuInstancePlacements are the placements of the profile of ID id on d.
func gpuInstancePlacements(d nvml.Device, id uint32) (nvml.GpuInstanceProfileInfo, []nvml.GpuInstancePlacement, nvml.Return) {
	p, r := giProfileByID(d, id)
	if r != nvml.SUCCESS {
		return p, nil, r
	}
	pl, r := d.GetGpuInstancePossiblePlacements(&p)
	return p, pl, r
}

//export nvmlDeviceGetGpuInstancePossiblePlacements_v2
func nvmlDeviceGetGpuInstancePossiblePlacements_v2(device C.nvmlDevice_t, profileId C.uint, placements *C.nvmlGpuInstancePlacement_t, count *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuInstancePossiblePlacements_v2", &ret)
	d, r := device_("nvmlDeviceGetGpuInstancePossiblePlacements_v2", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if count == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	_, pl, r := gpuInstancePlacements(d, uint32(profileId))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	*count = C.uint(len(pl))
	if placements != nil && len(pl) > 0 {
		copy(unsafe.Slice((*nvml.GpuInstancePlacement)(unsafe.Pointer(placements)), len(pl)), pl)
	}
	return cret(nvml.SUCCESS)
}

// existingGpuInstances are d's GPU instances (all profiles), by ID.
func existingGpuInstances(d nvml.Device) []nvml.GpuInstanceInfo {
	var out []nvml.GpuInstanceInfo
	for id := 0; id < nvml.GPU_INSTANCE_PROFILE_COUNT; id++ {
		p, r := d.GetGpuInstanceProfileInfo(id)
		if r != nvml.SUCCESS {
			continue
		}
		gis, r := d.GetGpuInstances(&p)
		if r != nvml.SUCCESS {
			continue
		}
		for _, gi := range gis {
			if info, r := gi.GetInfo(); r == nvml.SUCCESS {
				out = append(out, info)
			}
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Id < out[b].Id })
	return out
}

// freeSlots counts how many more instances fit into the free placements:
// the placements that overlap none taken, greedily by end (optimal for
// intervals of one size), at most limit.
func freeSlots[P nvml.GpuInstancePlacement | nvml.ComputeInstancePlacement](possible, taken []P, limit int) int {
	type span struct{ start, end uint32 }
	conv := func(p P) span {
		switch v := any(p).(type) {
		case nvml.GpuInstancePlacement:
			return span{v.Start, v.Start + v.Size}
		case nvml.ComputeInstancePlacement:
			return span{v.Start, v.Start + v.Size}
		}
		return span{}
	}
	var used []span
	for _, t := range taken {
		used = append(used, conv(t))
	}
	cands := make([]span, 0, len(possible))
	for _, p := range possible {
		cands = append(cands, conv(p))
	}
	sort.Slice(cands, func(a, b int) bool { return cands[a].end < cands[b].end })
	n := 0
	for _, c := range cands {
		if n >= limit {
			break
		}
		free := true
		for _, u := range used {
			if c.start < u.end && u.start < c.end {
				free = false
				break
			}
		}
		if free {
			used = append(used, c)
			n++
		}
	}
	return n
}

//export nvmlDeviceGetGpuInstanceRemainingCapacity
func nvmlDeviceGetGpuInstanceRemainingCapacity(device C.nvmlDevice_t, profileId C.uint, count *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuInstanceRemainingCapacity", &ret)
	d, r := device_("nvmlDeviceGetGpuInstanceRemainingCapacity", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if count == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	p, pl, r := gpuInstancePlacements(d, uint32(profileId))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	// The mock machine's own answer when it has one; else the free
	// placements that the existing instances leave.
	if n, r, ok := implemented(func() (int, nvml.Return) { return d.GetGpuInstanceRemainingCapacity(&p) }); ok {
		if r == nvml.SUCCESS {
			*count = C.uint(n)
		}
		return cret(r)
	}
	var taken []nvml.GpuInstancePlacement
	same := 0
	for _, gi := range existingGpuInstances(d) {
		taken = append(taken, gi.Placement)
		if gi.ProfileId == p.Id {
			same++
		}
	}
	*count = C.uint(freeSlots(pl, taken, max(0, int(p.InstanceCount)-same)))
	return cret(nvml.SUCCESS)
}

//export nvmlDeviceGetGpuInstances
func nvmlDeviceGetGpuInstances(device C.nvmlDevice_t, profileId C.uint, gpuInstances *C.nvmlGpuInstance_t, count *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuInstances", &ret)
	d, r := device_("nvmlDeviceGetGpuInstances", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if gpuInstances == nil || count == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	// A failure reports no instances: go-nvml returns as many handles as
	// count says, whatever the return code.
	*count = 0
	p, r := giProfileByID(d, uint32(profileId))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	gis, r := d.GetGpuInstances(&p)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	return cret(putHandles(gpuInstances, count, gis, p.InstanceCount,
		func(gi nvml.GpuInstance) uint32 { info, _ := gi.GetInfo(); return info.Id },
		func(gi nvml.GpuInstance) C.nvmlGpuInstance_t { return C.nvmlGpuInstance_t(giHandle(gi)) }))
}

// putHandles writes the C handles of objs, ordered by id, to out and their
// number to count; ERROR_INSUFFICIENT_SIZE when there are more than limit
// (the profile's InstanceCount, the size of the caller's array).
func putHandles[T, H any](out *H, count *C.uint, objs []T, limit uint32, id func(T) uint32, handle func(T) H) nvml.Return {
	if len(objs) > int(limit) {
		return nvml.ERROR_INSUFFICIENT_SIZE
	}
	sortByID(objs, id)
	dst := unsafe.Slice(out, len(objs))
	for i, o := range objs {
		dst[i] = handle(o)
	}
	*count = C.uint(len(objs))
	return nvml.SUCCESS
}

func sortByID[T any](s []T, id func(T) uint32) {
	sort.SliceStable(s, func(a, b int) bool { return id(s[a]) < id(s[b]) })
}

//export nvmlDeviceGetGpuInstanceById
func nvmlDeviceGetGpuInstanceById(device C.nvmlDevice_t, id C.uint, gpuInstance *C.nvmlGpuInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuInstanceById", &ret)
	d, r := device_("nvmlDeviceGetGpuInstanceById", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if gpuInstance == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	gi, r := d.GetGpuInstanceById(int(id))
	if r == nvml.SUCCESS {
		*gpuInstance = C.nvmlGpuInstance_t(giHandle(gi))
	}
	return cret(r)
}

// gpuInstance starts a call on a GPU instance handle.
func gpuInstance(fn string, h C.nvmlGpuInstance_t) (nvml.GpuInstance, nvml.GpuInstanceInfo, nvml.Return) {
	if r := enter(fn); r != nvml.SUCCESS {
		return nil, nvml.GpuInstanceInfo{}, r
	}
	gi, ok := object[nvml.GpuInstance](unsafe.Pointer(h))
	if !ok {
		return nil, nvml.GpuInstanceInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	info, r := gi.GetInfo()
	if r != nvml.SUCCESS {
		return nil, info, r
	}
	if info.Device != nil && lost(info.Device) {
		return nil, info, nvml.ERROR_GPU_IS_LOST
	}
	return gi, info, nvml.SUCCESS
}

//export nvmlGpuInstanceGetInfo
func nvmlGpuInstanceGetInfo(gpuInstance_ C.nvmlGpuInstance_t, info *C.nvmlGpuInstanceInfo_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceGetInfo", &ret)
	_, gi, r := gpuInstance("nvmlGpuInstanceGetInfo", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	*info = C.nvmlGpuInstanceInfo_t{
		device:    C.nvmlDevice_t(handleOf(gi.Device)),
		id:        C.uint(gi.Id),
		profileId: C.uint(gi.ProfileId),
		placement: C.nvmlGpuInstancePlacement_t{start: C.uint(gi.Placement.Start), size: C.uint(gi.Placement.Size)},
	}
	return cret(nvml.SUCCESS)
}

//export nvmlGpuInstanceGetComputeInstanceProfileInfo
func nvmlGpuInstanceGetComputeInstanceProfileInfo(gpuInstance_ C.nvmlGpuInstance_t, profile, engProfile C.uint, info *C.nvmlComputeInstanceProfileInfo_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceGetComputeInstanceProfileInfo", &ret)
	gi, _, r := gpuInstance("nvmlGpuInstanceGetComputeInstanceProfileInfo", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	p, r := gi.GetComputeInstanceProfileInfo(int(profile), int(engProfile))
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(info), p)
	}
	return cret(r)
}

//export nvmlGpuInstanceGetComputeInstanceProfileInfoV
func nvmlGpuInstanceGetComputeInstanceProfileInfoV(gpuInstance_ C.nvmlGpuInstance_t, profile, engProfile C.uint, info *C.nvmlComputeInstanceProfileInfo_v2_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceGetComputeInstanceProfileInfoV", &ret)
	gi, giInfo, r := gpuInstance("nvmlGpuInstanceGetComputeInstanceProfileInfoV", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	version := info.version
	if version != computeInstanceProfileInfoV2 && version != computeInstanceProfileInfoV3 {
		return cret(nvml.ERROR_ARGUMENT_VERSION_MISMATCH)
	}
	p, r := gi.GetComputeInstanceProfileInfo(int(profile), int(engProfile))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	var name string
	if index, gp, r := giProfileIndexByID(giInfo.Device, giInfo.ProfileId); r == nvml.SUCCESS {
		name = "MIG " + inventory.MIGProfileName(index, gp.SliceCount, p.SliceCount, gp.MemorySizeMB, gpuMemoryMB(giInfo.Device))
	}
	v2 := nvml.ComputeInstanceProfileInfo_v2{
		Version: uint32(version), Id: p.Id, SliceCount: p.SliceCount, InstanceCount: p.InstanceCount,
		MultiprocessorCount: p.MultiprocessorCount, SharedCopyEngineCount: p.SharedCopyEngineCount,
		SharedDecoderCount: p.SharedDecoderCount, SharedEncoderCount: p.SharedEncoderCount,
		SharedJpegCount: p.SharedJpegCount, SharedOfaCount: p.SharedOfaCount, Name: name96(name),
	}
	if version == computeInstanceProfileInfoV2 {
		put(unsafe.Pointer(info), v2)
	} else {
		put(unsafe.Pointer(info), nvml.ComputeInstanceProfileInfo_v3{
			Version: v2.Version, Id: v2.Id, SliceCount: v2.SliceCount, InstanceCount: v2.InstanceCount,
			MultiprocessorCount: v2.MultiprocessorCount, SharedCopyEngineCount: v2.SharedCopyEngineCount,
			SharedDecoderCount: v2.SharedDecoderCount, SharedEncoderCount: v2.SharedEncoderCount,
			SharedJpegCount: v2.SharedJpegCount, SharedOfaCount: v2.SharedOfaCount, Name: v2.Name,
		})
	}
	return cret(nvml.SUCCESS)
}

// computeInstanceProfileAt is the compute instance profile of gi at the
// index (nvml.COMPUTE_INSTANCE_PROFILE_*), with shared engines, the only
// kind the mock machines have.
func computeInstanceProfileAt(gi nvml.GpuInstance, index int) (nvml.ComputeInstanceProfileInfo, nvml.Return) {
	return gi.GetComputeInstanceProfileInfo(index, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
}

// ciProfileByID is gi's compute instance profile whose unique ID is id: the
// profileId that the C calls other than the profile info queries take.
// ERROR_INVALID_ARGUMENT when gi has no such profile; the first failure of
// the profile queries when gi has no profile at all.
func ciProfileByID(gi nvml.GpuInstance, id uint32) (nvml.ComputeInstanceProfileInfo, nvml.Return) {
	some, first := false, nvml.ERROR_INVALID_ARGUMENT
	for i := 0; i < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; i++ {
		p, r := computeInstanceProfileAt(gi, i)
		switch {
		case r == nvml.SUCCESS && p.Id == id:
			return p, nvml.SUCCESS
		case r == nvml.SUCCESS:
			some = true
		case i == 0:
			first = r
		}
	}
	if some {
		first = nvml.ERROR_INVALID_ARGUMENT
	}
	return nvml.ComputeInstanceProfileInfo{}, first
}

//export nvmlGpuInstanceGetComputeInstancePossiblePlacements
func nvmlGpuInstanceGetComputeInstancePossiblePlacements(gpuInstance_ C.nvmlGpuInstance_t, profileId C.uint, placements *C.nvmlComputeInstancePlacement_t, count *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceGetComputeInstancePossiblePlacements", &ret)
	gi, _, r := gpuInstance("nvmlGpuInstanceGetComputeInstancePossiblePlacements", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if count == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	p, r := ciProfileByID(gi, uint32(profileId))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	pl, r := gi.GetComputeInstancePossiblePlacements(&p)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	*count = C.uint(len(pl))
	if placements != nil && len(pl) > 0 {
		copy(unsafe.Slice((*nvml.ComputeInstancePlacement)(unsafe.Pointer(placements)), len(pl)), pl)
	}
	return cret(nvml.SUCCESS)
}

// computeInstanceInfo is ci's info with the placement NVML reports for a
// compute instance created without one (the mock machines create theirs
// so): the first slices of its GPU instance.
func computeInstanceInfo(ci nvml.ComputeInstance) (nvml.ComputeInstanceInfo, nvml.Return) {
	info, r := ci.GetInfo()
	if r != nvml.SUCCESS || info.Placement.Size != 0 || info.GpuInstance == nil {
		return info, r
	}
	if p, r := ciProfileByID(info.GpuInstance, info.ProfileId); r == nvml.SUCCESS {
		info.Placement = nvml.ComputeInstancePlacement{Start: 0, Size: p.SliceCount}
	}
	return info, nvml.SUCCESS
}

// existingComputeInstances are gi's compute instances (all profiles).
func existingComputeInstances(gi nvml.GpuInstance) []nvml.ComputeInstanceInfo {
	var out []nvml.ComputeInstanceInfo
	for id := 0; id < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; id++ {
		p, r := computeInstanceProfileAt(gi, id)
		if r != nvml.SUCCESS {
			continue
		}
		cis, r := gi.GetComputeInstances(&p)
		if r != nvml.SUCCESS {
			continue
		}
		for _, ci := range cis {
			if info, r := computeInstanceInfo(ci); r == nvml.SUCCESS {
				out = append(out, info)
			}
		}
	}
	return out
}

//export nvmlGpuInstanceGetComputeInstanceRemainingCapacity
func nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gpuInstance_ C.nvmlGpuInstance_t, profileId C.uint, count *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceGetComputeInstanceRemainingCapacity", &ret)
	gi, _, r := gpuInstance("nvmlGpuInstanceGetComputeInstanceRemainingCapacity", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if count == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	p, r := ciProfileByID(gi, uint32(profileId))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if n, r, ok := implemented(func() (int, nvml.Return) { return gi.GetComputeInstanceRemainingCapacity(&p) }); ok {
		if r == nvml.SUCCESS {
			*count = C.uint(n)
		}
		return cret(r)
	}
	pl, r := gi.GetComputeInstancePossiblePlacements(&p)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	var taken []nvml.ComputeInstancePlacement
	same := 0
	for _, ci := range existingComputeInstances(gi) {
		taken = append(taken, ci.Placement)
		if ci.ProfileId == p.Id {
			same++
		}
	}
	*count = C.uint(freeSlots(pl, taken, max(0, int(p.InstanceCount)-same)))
	return cret(nvml.SUCCESS)
}

//export nvmlGpuInstanceGetComputeInstances
func nvmlGpuInstanceGetComputeInstances(gpuInstance_ C.nvmlGpuInstance_t, profileId C.uint, computeInstances *C.nvmlComputeInstance_t, count *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceGetComputeInstances", &ret)
	gi, _, r := gpuInstance("nvmlGpuInstanceGetComputeInstances", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if computeInstances == nil || count == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	// A failure reports no instances: go-nvml returns as many handles as
	// count says, whatever the return code.
	*count = 0
	p, r := ciProfileByID(gi, uint32(profileId))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	cis, r := gi.GetComputeInstances(&p)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	return cret(putHandles(computeInstances, count, cis, p.InstanceCount,
		func(ci nvml.ComputeInstance) uint32 { info, _ := ci.GetInfo(); return info.Id },
		func(ci nvml.ComputeInstance) C.nvmlComputeInstance_t { return C.nvmlComputeInstance_t(ciHandle(ci)) }))
}

//export nvmlGpuInstanceGetComputeInstanceById
func nvmlGpuInstanceGetComputeInstanceById(gpuInstance_ C.nvmlGpuInstance_t, id C.uint, computeInstance *C.nvmlComputeInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceGetComputeInstanceById", &ret)
	gi, _, r := gpuInstance("nvmlGpuInstanceGetComputeInstanceById", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if computeInstance == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	ci, r := gi.GetComputeInstanceById(int(id))
	if r == nvml.SUCCESS {
		*computeInstance = C.nvmlComputeInstance_t(ciHandle(ci))
	}
	return cret(r)
}

//export nvmlComputeInstanceGetInfo_v2
func nvmlComputeInstanceGetInfo_v2(computeInstance C.nvmlComputeInstance_t, info *C.nvmlComputeInstanceInfo_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlComputeInstanceGetInfo_v2", &ret)
	ci, _, r := computeInstanceOf("nvmlComputeInstanceGetInfo_v2", computeInstance)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	ciInfo, r := computeInstanceInfo(ci)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	*info = C.nvmlComputeInstanceInfo_t{
		device:      C.nvmlDevice_t(handleOf(ciInfo.Device)),
		gpuInstance: C.nvmlGpuInstance_t(giHandle(ciInfo.GpuInstance)),
		id:          C.uint(ciInfo.Id),
		profileId:   C.uint(ciInfo.ProfileId),
		placement:   C.nvmlComputeInstancePlacement_t{start: C.uint(ciInfo.Placement.Start), size: C.uint(ciInfo.Placement.Size)},
	}
	return cret(nvml.SUCCESS)
}

// computeInstanceOf starts a call on a compute instance handle.
func computeInstanceOf(fn string, h C.nvmlComputeInstance_t) (nvml.ComputeInstance, nvml.ComputeInstanceInfo, nvml.Return) {
	if r := enter(fn); r != nvml.SUCCESS {
		return nil, nvml.ComputeInstanceInfo{}, r
	}
	ci, ok := object[nvml.ComputeInstance](unsafe.Pointer(h))
	if !ok {
		return nil, nvml.ComputeInstanceInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	info, r := ci.GetInfo()
	if r != nvml.SUCCESS {
		return nil, info, r
	}
	if info.Device != nil && lost(info.Device) {
		return nil, info, nvml.ERROR_GPU_IS_LOST
	}
	return ci, info, nvml.SUCCESS
}

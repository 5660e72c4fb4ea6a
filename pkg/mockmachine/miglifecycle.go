package mockmachine

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// MaxMIGDevices is what GetMaxMigDeviceCount answers for a mock GPU in MIG
// mode: a GPU has 7 compute slices and every compute instance takes at
// least one, so no more than 7 MIG devices exist at once.
const MaxMIGDevices = 7

// migMachine is the MIG state of one mock machine, behind the NVML calls
// that installMIGLifecycle sets on its devices: MIG modes, GPU instances
// (GIs) and their compute instances (CIs). mu guards all of it, the
// destroyed flags of handles included; every successful mutation is saved
// (see save) while mu is held, so the state file follows the mutations in
// their order.
type migMachine struct {
	machine, seed string

	mu        sync.Mutex
	gpus      []*migGPU
	statePath string // "": nothing is saved
}

// migGPU is one GPU of a migMachine.
type migGPU struct {
	m        *migMachine
	index    int
	dev      *server.Device
	profiles map[int]nvml.GpuInstanceProfileInfo // by index: d.Config.MIGProfiles.GpuInstanceProfiles
	byID     map[uint32]int                      // profile index by unique profile ID
	// current and pending are the MIG modes (nvml.DEVICE_MIG_*).
	current, pending int
	// creations counts the compute instances ever created on the GPU; it
	// goes into MIG UUIDs so that a re-created instance gets a new one.
	creations uint64
	gis       map[uint32]*migGI // by GI ID
}

// migGI is one GPU instance; handle is what NVML callers get.
type migGI struct {
	gpu       *migGPU
	handle    *server.GpuInstance
	info      nvml.GpuInstanceInfo
	profile   nvml.GpuInstanceProfileInfo
	index     int               // the profile's index (nvml.GPU_INSTANCE_PROFILE_*)
	cis       map[uint32]*migCI // by CI ID
	destroyed bool
}

// migCI is one compute instance and the MIG device it makes.
type migCI struct {
	gi        *migGI
	handle    *server.ComputeInstance
	info      nvml.ComputeInstanceInfo
	profile   nvml.ComputeInstanceProfileInfo
	uuid      string
	mig       nvml.Device
	destroyed bool
}

// installMIGLifecycle gives every device of s the real MIG profile tables
// (migProfileTables) and the MIG calls of a real GPU over one migMachine:
//
//   - GetMigMode, SetMigMode (see migGPU.setMode);
//   - GetGpuInstanceProfileInfo, GetGpuInstancePossiblePlacements,
//     CreateGpuInstance, CreateGpuInstanceWithPlacement, GetGpuInstances,
//     GetGpuInstanceById, GetGpuInstanceRemainingCapacity;
//   - GetMaxMigDeviceCount, GetMigDeviceHandleByIndex: the MIG devices are
//     the compute instances, ordered by (GI ID, CI ID);
//   - on GPU instances: GetInfo, GetComputeInstanceProfileInfo,
//     GetComputeInstancePossiblePlacements, CreateComputeInstance,
//     CreateComputeInstanceWithPlacement, GetComputeInstances,
//     GetComputeInstanceById, GetComputeInstanceRemainingCapacity, Destroy;
//   - on compute instances: GetInfo, Destroy.
//
// Every GPU starts with MIG mode disabled and no instances. The state lives
// in the migMachine, not in server.Device's MigMode and GpuInstances fields
// (which stay unused).
func installMIGLifecycle(s *server.Server, machine, seed string) (*migMachine, error) {
	m := &migMachine{machine: machine, seed: seed}
	for i, h := range s.Devices {
		d := h.(*server.Device)
		tables, err := migProfileTables(d.Config.PciDeviceId)
		if err != nil {
			return nil, fmt.Errorf("mock machine %q: GPU %d: %w", machine, i, err)
		}
		d.Config.MIGProfiles = tables
		g := &migGPU{m: m, index: i, dev: d, profiles: tables.GpuInstanceProfiles, byID: map[uint32]int{},
			current: nvml.DEVICE_MIG_DISABLE, pending: nvml.DEVICE_MIG_DISABLE, gis: map[uint32]*migGI{}}
		for idx, p := range tables.GpuInstanceProfiles {
			g.byID[p.Id] = idx
		}
		m.gpus = append(m.gpus, g)
		g.installDeviceFuncs()
	}
	return m, nil
}

func (g *migGPU) installDeviceFuncs() {
	d, m := g.dev, g.m
	d.GetMigModeFunc = func() (int, int, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return g.current, g.pending, nvml.SUCCESS
	}
	d.SetMigModeFunc = func(mode int) (nvml.Return, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		return g.setMode(mode)
	}
	d.GetGpuInstanceProfileInfoFunc = func(id int) (nvml.GpuInstanceProfileInfo, nvml.Return) {
		if id < 0 || id >= nvml.GPU_INSTANCE_PROFILE_COUNT {
			return nvml.GpuInstanceProfileInfo{}, nvml.ERROR_INVALID_ARGUMENT
		}
		p, ok := g.profiles[id]
		if !ok {
			return nvml.GpuInstanceProfileInfo{}, nvml.ERROR_NOT_SUPPORTED
		}
		return p, nvml.SUCCESS
	}
	d.GetGpuInstancePossiblePlacementsFunc = func(info *nvml.GpuInstanceProfileInfo) ([]nvml.GpuInstancePlacement, nvml.Return) {
		p, ret := g.profile(info)
		if ret != nvml.SUCCESS {
			return nil, ret
		}
		return slices.Clone(d.Config.MIGProfiles.GpuInstancePlacements[int(p.Id)]), nvml.SUCCESS
	}
	d.CreateGpuInstanceFunc = func(info *nvml.GpuInstanceProfileInfo) (nvml.GpuInstance, nvml.Return) {
		return g.createGI(info, nil)
	}
	d.CreateGpuInstanceWithPlacementFunc = func(info *nvml.GpuInstanceProfileInfo, pl *nvml.GpuInstancePlacement) (nvml.GpuInstance, nvml.Return) {
		if pl == nil {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		return g.createGI(info, pl)
	}
	d.GetGpuInstancesFunc = func(info *nvml.GpuInstanceProfileInfo) ([]nvml.GpuInstance, nvml.Return) {
		p, ret := g.profile(info)
		if ret != nvml.SUCCESS {
			return nil, ret
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if g.current != nvml.DEVICE_MIG_ENABLE {
			return nil, nvml.ERROR_NOT_SUPPORTED
		}
		var out []nvml.GpuInstance
		for _, gi := range g.sortedGIs() {
			if gi.profile.Id == p.Id {
				out = append(out, gi.handle)
			}
		}
		return out, nvml.SUCCESS
	}
	d.GetGpuInstanceByIdFunc = func(id int) (nvml.GpuInstance, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if g.current != nvml.DEVICE_MIG_ENABLE {
			return nil, nvml.ERROR_NOT_SUPPORTED
		}
		if gi, ok := g.gis[uint32(id)]; ok && id >= 0 {
			return gi.handle, nvml.SUCCESS
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	d.GetGpuInstanceRemainingCapacityFunc = func(info *nvml.GpuInstanceProfileInfo) (int, nvml.Return) {
		p, ret := g.profile(info)
		if ret != nvml.SUCCESS {
			return 0, ret
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if g.current != nvml.DEVICE_MIG_ENABLE {
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		return g.remainingGIs(p), nvml.SUCCESS
	}
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if g.current != nvml.DEVICE_MIG_ENABLE {
			return 0, nvml.SUCCESS
		}
		return MaxMIGDevices, nvml.SUCCESS
	}
	d.GetMigDeviceHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if g.current != nvml.DEVICE_MIG_ENABLE || i < 0 || i >= MaxMIGDevices {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		var all []*migCI
		for _, gi := range g.sortedGIs() {
			all = append(all, gi.sortedCIs()...)
		}
		if i >= len(all) {
			return nil, nvml.ERROR_NOT_FOUND
		}
		return all[i].mig, nvml.SUCCESS
	}
}

// setMode is SetMigMode; it returns (activation status, ret) like go-nvml.
// On Hopper and later a change takes effect at once (current = pending =
// mode) on a GPU without GPU instances, and is refused with activation
// status ERROR_IN_USE on one with instances. On Ampere a change only
// becomes pending (activation status ERROR_RESET_REQUIRED, current mode
// unchanged) as on a real A100, which needs a GPU reset; disabling is
// refused with ERROR_IN_USE while GPU instances exist. A mode equal to the
// present one changes nothing. A change that cannot be saved is undone and
// fails with ERROR_UNKNOWN. m.mu must be held.
func (g *migGPU) setMode(mode int) (nvml.Return, nvml.Return) {
	if mode != nvml.DEVICE_MIG_ENABLE && mode != nvml.DEVICE_MIG_DISABLE {
		return nvml.ERROR_INVALID_ARGUMENT, nvml.ERROR_INVALID_ARGUMENT
	}
	oldCurrent, oldPending := g.current, g.pending
	immediate := g.dev.Config.Architecture >= nvml.DEVICE_ARCH_HOPPER
	switch {
	case immediate && mode == g.current && mode == g.pending:
		return nvml.SUCCESS, nvml.SUCCESS
	case !immediate && mode == g.pending:
		if g.pending != g.current {
			return nvml.ERROR_RESET_REQUIRED, nvml.SUCCESS
		}
		return nvml.SUCCESS, nvml.SUCCESS
	case len(g.gis) > 0 && (immediate || mode == nvml.DEVICE_MIG_DISABLE):
		return nvml.ERROR_IN_USE, nvml.SUCCESS
	}
	g.pending = mode
	if immediate {
		g.current = mode
	}
	if err := g.m.save(); err != nil {
		g.current, g.pending = oldCurrent, oldPending
		return nvml.ERROR_UNKNOWN, nvml.ERROR_UNKNOWN
	}
	if g.current != g.pending {
		return nvml.ERROR_RESET_REQUIRED, nvml.SUCCESS
	}
	return nvml.SUCCESS, nvml.SUCCESS
}

// profile returns the GPU's GPU instance profile with info's unique ID, as
// NVML takes a profile (info as GetGpuInstanceProfileInfo returns it).
func (g *migGPU) profile(info *nvml.GpuInstanceProfileInfo) (nvml.GpuInstanceProfileInfo, nvml.Return) {
	if info == nil {
		return nvml.GpuInstanceProfileInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	idx, ok := g.byID[info.Id]
	if !ok {
		return nvml.GpuInstanceProfileInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	return g.profiles[idx], nvml.SUCCESS
}

// createGI creates a GPU instance of info's profile at pl, or at the first
// free placement when pl is nil, and saves the state. Errors:
// ERROR_NOT_SUPPORTED when MIG mode is not (currently) enabled,
// ERROR_INVALID_ARGUMENT for an unknown profile or a placement not among
// the profile's, ERROR_INSUFFICIENT_RESOURCES when the placement overlaps
// an existing GPU instance (or none is free) or the profile's InstanceCount
// is reached, ERROR_UNKNOWN when the state cannot be saved.
func (g *migGPU) createGI(info *nvml.GpuInstanceProfileInfo, pl *nvml.GpuInstancePlacement) (nvml.GpuInstance, nvml.Return) {
	p, ret := g.profile(info)
	if ret != nvml.SUCCESS {
		return nil, ret
	}
	g.m.mu.Lock()
	defer g.m.mu.Unlock()
	if g.current != nvml.DEVICE_MIG_ENABLE {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	var placement nvml.GpuInstancePlacement
	if pl != nil {
		placement = *pl
	} else {
		free := g.freePlacements(p)
		if len(free) == 0 {
			return nil, nvml.ERROR_INSUFFICIENT_RESOURCES
		}
		placement = free[0]
	}
	gi, ret := g.addGI(p, placement, g.lowestFreeGIID())
	if ret != nvml.SUCCESS {
		return nil, ret
	}
	if err := g.m.save(); err != nil {
		delete(g.gis, gi.info.Id)
		return nil, nvml.ERROR_UNKNOWN
	}
	return gi.handle, nvml.SUCCESS
}

// addGI adds a GPU instance of profile p at pl with ID id, after checking
// the placement (see createGI); m.mu must be held. It does not save.
func (g *migGPU) addGI(p nvml.GpuInstanceProfileInfo, pl nvml.GpuInstancePlacement, id uint32) (*migGI, nvml.Return) {
	if !slices.Contains(g.dev.Config.MIGProfiles.GpuInstancePlacements[int(p.Id)], pl) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	if _, taken := g.gis[id]; taken {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	n := 0
	for _, other := range g.gis {
		if overlaps(pl, other.info.Placement) {
			return nil, nvml.ERROR_INSUFFICIENT_RESOURCES
		}
		if other.profile.Id == p.Id {
			n++
		}
	}
	if n >= int(p.InstanceCount) {
		return nil, nvml.ERROR_INSUFFICIENT_RESOURCES
	}
	gi := &migGI{gpu: g, profile: p, index: g.byID[p.Id], cis: map[uint32]*migCI{},
		info: nvml.GpuInstanceInfo{Device: g.dev, Id: id, ProfileId: p.Id, Placement: pl}}
	gi.handle = server.NewGpuInstanceFromInfo(gi.info, g.dev.Config.MIGProfiles)
	gi.installFuncs()
	g.gis[id] = gi
	return gi, nvml.SUCCESS
}

func overlaps(a, b nvml.GpuInstancePlacement) bool {
	return a.Start < b.Start+b.Size && b.Start < a.Start+a.Size
}

// freePlacements returns the placements of p, in the profile's order, that
// overlap no existing GPU instance; m.mu must be held.
func (g *migGPU) freePlacements(p nvml.GpuInstanceProfileInfo) []nvml.GpuInstancePlacement {
	var out []nvml.GpuInstancePlacement
	for _, pl := range g.dev.Config.MIGProfiles.GpuInstancePlacements[int(p.Id)] {
		free := true
		for _, gi := range g.gis {
			free = free && !overlaps(pl, gi.info.Placement)
		}
		if free {
			out = append(out, pl)
		}
	}
	return out
}

// remainingGIs is how many more GPU instances of p could be created:
// free placements taken greedily in order without overlapping each other,
// at most the profile's InstanceCount less those that exist.
func (g *migGPU) remainingGIs(p nvml.GpuInstanceProfileInfo) int {
	left := int(p.InstanceCount)
	for _, gi := range g.gis {
		if gi.profile.Id == p.Id {
			left--
		}
	}
	var taken []nvml.GpuInstancePlacement
	for _, pl := range g.freePlacements(p) {
		if !slices.ContainsFunc(taken, func(t nvml.GpuInstancePlacement) bool { return overlaps(pl, t) }) {
			taken = append(taken, pl)
		}
	}
	return max(0, min(left, len(taken)))
}

// lowestFreeGIID is the lowest GPU instance ID >= 1 not in use.
func (g *migGPU) lowestFreeGIID() uint32 {
	id := uint32(1)
	for g.gis[id] != nil {
		id++
	}
	return id
}

func (g *migGPU) sortedGIs() []*migGI {
	out := make([]*migGI, 0, len(g.gis))
	for _, gi := range g.gis {
		out = append(out, gi)
	}
	slices.SortFunc(out, func(a, b *migGI) int { return cmp.Compare(a.info.Id, b.info.Id) })
	return out
}

func (gi *migGI) sortedCIs() []*migCI {
	out := make([]*migCI, 0, len(gi.cis))
	for _, ci := range gi.cis {
		out = append(out, ci)
	}
	slices.SortFunc(out, func(a, b *migCI) int { return cmp.Compare(a.info.Id, b.info.Id) })
	return out
}

func (gi *migGI) installFuncs() {
	h, m := gi.handle, gi.gpu.m
	h.GetInfoFunc = func() (nvml.GpuInstanceInfo, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if gi.destroyed {
			return nvml.GpuInstanceInfo{}, nvml.ERROR_INVALID_ARGUMENT
		}
		return gi.info, nvml.SUCCESS
	}
	h.CreateComputeInstanceFunc = func(info *nvml.ComputeInstanceProfileInfo) (nvml.ComputeInstance, nvml.Return) {
		return gi.createCI(info, nil)
	}
	h.CreateComputeInstanceWithPlacementFunc = func(info *nvml.ComputeInstanceProfileInfo, pl *nvml.ComputeInstancePlacement) (nvml.ComputeInstance, nvml.Return) {
		if pl == nil {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		return gi.createCI(info, pl)
	}
	h.GetComputeInstancePossiblePlacementsFunc = func(info *nvml.ComputeInstanceProfileInfo) ([]nvml.ComputeInstancePlacement, nvml.Return) {
		p, ret := gi.ciProfile(info)
		if ret != nvml.SUCCESS {
			return nil, ret
		}
		return slices.Clone(gi.ciPlacements(p)), nvml.SUCCESS
	}
	h.GetComputeInstancesFunc = func(info *nvml.ComputeInstanceProfileInfo) ([]nvml.ComputeInstance, nvml.Return) {
		p, ret := gi.ciProfile(info)
		if ret != nvml.SUCCESS {
			return nil, ret
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if gi.destroyed {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		var out []nvml.ComputeInstance
		for _, ci := range gi.sortedCIs() {
			if ci.profile.Id == p.Id {
				out = append(out, ci.handle)
			}
		}
		return out, nvml.SUCCESS
	}
	h.GetComputeInstanceByIdFunc = func(id int) (nvml.ComputeInstance, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if gi.destroyed {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		if ci, ok := gi.cis[uint32(id)]; ok && id >= 0 {
			return ci.handle, nvml.SUCCESS
		}
		return nil, nvml.ERROR_NOT_FOUND
	}
	h.GetComputeInstanceRemainingCapacityFunc = func(info *nvml.ComputeInstanceProfileInfo) (int, nvml.Return) {
		p, ret := gi.ciProfile(info)
		if ret != nvml.SUCCESS {
			return 0, ret
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if gi.destroyed {
			return 0, nvml.ERROR_INVALID_ARGUMENT
		}
		n := 0
		var taken []nvml.ComputeInstancePlacement
		for _, pl := range gi.freeCIPlacements(p) {
			if !slices.ContainsFunc(taken, func(t nvml.ComputeInstancePlacement) bool { return ciOverlaps(pl, t) }) {
				taken = append(taken, pl)
				n++
			}
		}
		return n, nvml.SUCCESS
	}
	h.DestroyFunc = func() nvml.Return {
		m.mu.Lock()
		defer m.mu.Unlock()
		if gi.destroyed {
			return nvml.ERROR_INVALID_ARGUMENT
		}
		if len(gi.cis) > 0 {
			return nvml.ERROR_IN_USE
		}
		delete(gi.gpu.gis, gi.info.Id)
		if err := m.save(); err != nil {
			gi.gpu.gis[gi.info.Id] = gi
			return nvml.ERROR_UNKNOWN
		}
		gi.destroyed = true
		return nvml.SUCCESS
	}
}

// ciProfile returns the GPU instance's compute instance profile with
// info's ID (engine profile shared).
func (gi *migGI) ciProfile(info *nvml.ComputeInstanceProfileInfo) (nvml.ComputeInstanceProfileInfo, nvml.Return) {
	if info == nil {
		return nvml.ComputeInstanceProfileInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	p, ok := gi.gpu.dev.Config.MIGProfiles.ComputeInstanceProfiles[int(gi.profile.Id)][int(info.Id)]
	if !ok {
		return nvml.ComputeInstanceProfileInfo{}, nvml.ERROR_INVALID_ARGUMENT
	}
	return p, nvml.SUCCESS
}

func (gi *migGI) ciPlacements(p nvml.ComputeInstanceProfileInfo) []nvml.ComputeInstancePlacement {
	return gi.gpu.dev.Config.MIGProfiles.ComputeInstancePlacements[int(gi.profile.Id)][int(p.Id)]
}

func ciOverlaps(a, b nvml.ComputeInstancePlacement) bool {
	return a.Start < b.Start+b.Size && b.Start < a.Start+a.Size
}

// freeCIPlacements returns the placements of p that overlap no compute
// instance of the GPU instance; m.mu must be held.
func (gi *migGI) freeCIPlacements(p nvml.ComputeInstanceProfileInfo) []nvml.ComputeInstancePlacement {
	var out []nvml.ComputeInstancePlacement
	for _, pl := range gi.ciPlacements(p) {
		free := true
		for _, ci := range gi.cis {
			free = free && !ciOverlaps(pl, ci.info.Placement)
		}
		if free {
			out = append(out, pl)
		}
	}
	return out
}

// createCI creates a compute instance of info's profile at pl, or at the
// first free placement when pl is nil, with the lowest free CI ID (from 0)
// and a new MIG UUID, and saves the state. Errors: ERROR_INVALID_ARGUMENT
// for a destroyed GPU instance, an unknown profile or a placement not among
// the profile's, ERROR_INSUFFICIENT_RESOURCES when the compute slices are
// taken, ERROR_UNKNOWN when the state cannot be saved.
func (gi *migGI) createCI(info *nvml.ComputeInstanceProfileInfo, pl *nvml.ComputeInstancePlacement) (nvml.ComputeInstance, nvml.Return) {
	p, ret := gi.ciProfile(info)
	if ret != nvml.SUCCESS {
		return nil, ret
	}
	g := gi.gpu
	g.m.mu.Lock()
	defer g.m.mu.Unlock()
	if gi.destroyed {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	var placement nvml.ComputeInstancePlacement
	if pl != nil {
		placement = *pl
	} else {
		free := gi.freeCIPlacements(p)
		if len(free) == 0 {
			return nil, nvml.ERROR_INSUFFICIENT_RESOURCES
		}
		placement = free[0]
	}
	id := uint32(0)
	for gi.cis[id] != nil {
		id++
	}
	uuid := mockMIGUUID(g.m.machine, g.m.seed, g.index, int(gi.info.Id), int(id), g.creations)
	ci, ret := gi.addCI(p, placement, id, uuid)
	if ret != nvml.SUCCESS {
		return nil, ret
	}
	g.creations++
	if err := g.m.save(); err != nil {
		g.creations--
		delete(gi.cis, id)
		return nil, nvml.ERROR_UNKNOWN
	}
	return ci.handle, nvml.SUCCESS
}

// addCI adds a compute instance of profile p at pl with ID id and MIG UUID
// uuid, after checking the placement (see createCI); m.mu must be held. It
// does not save.
func (gi *migGI) addCI(p nvml.ComputeInstanceProfileInfo, pl nvml.ComputeInstancePlacement, id uint32, uuid string) (*migCI, nvml.Return) {
	if !slices.Contains(gi.ciPlacements(p), pl) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	if _, taken := gi.cis[id]; taken {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	for _, other := range gi.cis {
		if ciOverlaps(pl, other.info.Placement) {
			return nil, nvml.ERROR_INSUFFICIENT_RESOURCES
		}
	}
	ci := &migCI{gi: gi, profile: p, uuid: uuid,
		info: nvml.ComputeInstanceInfo{Device: gi.gpu.dev, GpuInstance: gi.handle, Id: id, ProfileId: p.Id, Placement: pl}}
	ci.handle = server.NewComputeInstanceFromInfo(ci.info)
	ci.installFuncs()
	ci.mig = ci.newMIGHandle()
	gi.cis[id] = ci
	return ci, nvml.SUCCESS
}

func (ci *migCI) installFuncs() {
	m := ci.gi.gpu.m
	ci.handle.GetInfoFunc = func() (nvml.ComputeInstanceInfo, nvml.Return) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if ci.destroyed {
			return nvml.ComputeInstanceInfo{}, nvml.ERROR_INVALID_ARGUMENT
		}
		return ci.info, nvml.SUCCESS
	}
	ci.handle.DestroyFunc = func() nvml.Return {
		m.mu.Lock()
		defer m.mu.Unlock()
		if ci.destroyed {
			return nvml.ERROR_INVALID_ARGUMENT
		}
		delete(ci.gi.cis, ci.info.Id)
		if err := m.save(); err != nil {
			ci.gi.cis[ci.info.Id] = ci
			return nvml.ERROR_UNKNOWN
		}
		ci.destroyed = true
		return nvml.SUCCESS
	}
}

// newMIGHandle returns the NVML handle of the compute instance's MIG
// device with the calls that MIG discovery and CDI generation make on it.
// Once the compute instance is destroyed, they fail with
// ERROR_INVALID_ARGUMENT like those of a stale handle.
func (ci *migCI) newMIGHandle() nvml.Device {
	g := ci.gi.gpu
	parent, m := g.dev, g.m
	giID, ciID := int(ci.gi.info.Id), int(ci.info.Id)
	memMB := ci.gi.profile.MemorySizeMB
	name := parent.Config.Name + " MIG " + inventory.MIGProfileName(ci.gi.index, ci.gi.profile.SliceCount, ci.profile.SliceCount,
		memMB, parent.Config.MemoryMB)
	live := func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return !ci.destroyed
	}
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) {
			if !live() {
				return "", nvml.ERROR_INVALID_ARGUMENT
			}
			return ci.uuid, nvml.SUCCESS
		},
		GetNameFunc: func() (string, nvml.Return) {
			if !live() {
				return "", nvml.ERROR_INVALID_ARGUMENT
			}
			return name, nvml.SUCCESS
		},
		IsMigDeviceHandleFunc: func() (bool, nvml.Return) {
			if !live() {
				return false, nvml.ERROR_INVALID_ARGUMENT
			}
			return true, nvml.SUCCESS
		},
		GetGpuInstanceIdFunc: func() (int, nvml.Return) {
			if !live() {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return giID, nvml.SUCCESS
		},
		GetComputeInstanceIdFunc: func() (int, nvml.Return) {
			if !live() {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return ciID, nvml.SUCCESS
		},
		GetDeviceHandleFromMigDeviceHandleFunc: func() (nvml.Device, nvml.Return) {
			if !live() {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return parent, nvml.SUCCESS
		},
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			if !live() {
				return nvml.Memory{}, nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.Memory{Total: memMB << 20, Free: memMB << 20}, nvml.SUCCESS
		},
	}
}

// mockMIGUUID derives a MIG UUID from the machine, the seed, the GPU index,
// the instance IDs and the GPU's creation counter n (a re-created instance
// gets a new UUID, as on real GPUs).
func mockMIGUUID(machine, seed string, gpu, gi, ci int, n uint64) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d/gi%d/ci%d/n%d", machine, seed, gpu, gi, ci, n))
	return fmt.Sprintf("MIG-%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}

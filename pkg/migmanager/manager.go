// Package migmanager creates and destroys the MIG devices of dynamic MIG
// through NVML: a GPU instance at a given placement with one compute
// instance spanning it, and switches a GPU's MIG mode when it must be used
// whole or partitioned.
//
// Contracts:
//   - Operations on one GPU are serialized (NVML's MIG calls are not meant
//     to race on a GPU); operations on different GPUs run in parallel.
//   - Create either returns an instance that exists, with its UUID, or
//     leaves nothing behind: a GPU instance whose compute instance cannot
//     be made is destroyed before Create returns.
//   - Destroy is idempotent: no instance at the placement is success.
//   - A MIG mode switch that does not take effect at once (the GPU needs a
//     reset, or is in use) is undone, reported as a *ModeError, and passed
//     to Options.OnModeError; the GPU is never left with a pending mode.
//   - The Manager keeps no state of its own besides NVML's: what exists is
//     read from NVML each time, so a restarted process sees what the last
//     one left (the claim checkpoint records what it was for).
package migmanager

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// Spec is a MIG device to create: a GPU instance profile at a placement,
// with the compute instance profile that spans it.
type Spec struct {
	ParentUUID string
	// GPUInstanceProfileIndex is the profile's index in NVML's profile
	// enumeration (nvml.GPU_INSTANCE_PROFILE_*), GPUInstanceProfileID the
	// ID its info reports (inventory.MIGProfile).
	GPUInstanceProfileIndex  int
	GPUInstanceProfileID     int
	ComputeInstanceProfileID int
	Placement                inventory.MIGPlacement
}

func (s Spec) String() string {
	return fmt.Sprintf("GPU instance profile %d at memory slices %d-%d of GPU %s", s.GPUInstanceProfileID,
		s.Placement.Start, s.Placement.End()-1, s.ParentUUID)
}

// Instance is a MIG device that exists.
type Instance struct {
	Spec
	GPUInstanceID     int
	ComputeInstanceID int
	// UUID is the MIG device's UUID, "MIG-...".
	UUID string
}

// GPUInstance is a GPU instance that exists on a GPU, whoever made it.
type GPUInstance struct {
	ID        int
	ProfileID int
	Placement inventory.MIGPlacement
	// ComputeInstances are the IDs of its compute instances.
	ComputeInstances []int
}

// ModeError is a MIG mode switch of a GPU that did not take effect.
type ModeError struct {
	ParentUUID string
	// Enable tells the mode that was asked: MIG on (true) or off.
	Enable bool
	// Status is NVML's activation status, or the reason the switch was
	// not tried.
	Status nvml.Return
}

func (e *ModeError) Error() string {
	want, other := "on", "off"
	if !e.Enable {
		want, other = "off", "on"
	}
	reason := nvml.ErrorString(e.Status)
	switch e.Status {
	case nvml.ERROR_RESET_REQUIRED:
		reason = "the GPU needs a reset for it"
	case nvml.ERROR_IN_USE:
		reason = "the GPU is in use"
	}
	return fmt.Sprintf("GPU %s: switching MIG mode %s did not take effect (%s), so it was left %s: "+
		"stop the processes using the GPU and reset it (nvidia-smi -r), or set its MIG mode once for good "+
		"(nvidia-smi -i <index> -mig 1 or 0, then a reset) and restart the plugin", e.ParentUUID, want, reason, other)
}

// Options configure a Manager.
type Options struct {
	// OnModeError, when set, is told of every MIG mode switch that did not
	// take effect (for a taint and an event). It is called with the GPU's
	// lock held: it must not call the Manager.
	OnModeError func(ctx context.Context, err *ModeError)
	// LeaveMIGModeWhenEmpty lists, by UUID, the GPUs that Destroy switches
	// out of MIG mode once their last GPU instance is gone, so that they
	// are back to what they are without dynamic MIG: those that switch
	// without a reset. A failed switch is logged, never an error of
	// Destroy (the next whole-GPU prepare switches again).
	LeaveMIGModeWhenEmpty map[string]bool
}

// Manager creates and destroys dynamic MIG devices. Create it with New.
type Manager struct {
	lib  nvml.Interface
	opts Options

	mu   sync.Mutex
	gpus map[string]*sync.Mutex // by parent UUID
}

// New returns a Manager over lib, which the caller keeps initialized.
func New(lib nvml.Interface, opts Options) *Manager {
	return &Manager{lib: lib, opts: opts, gpus: map[string]*sync.Mutex{}}
}

func (m *Manager) lock(uuid string) func() {
	m.mu.Lock()
	l, ok := m.gpus[uuid]
	if !ok {
		l = &sync.Mutex{}
		m.gpus[uuid] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (m *Manager) device(uuid string) (nvml.Device, error) {
	h, ret := m.lib.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("GPU %s: getting its NVML handle: %w", uuid, ret)
	}
	return h, nil
}

// Create makes the MIG device of spec: MIG mode on first when the GPU is
// out of it, then the GPU instance at the placement and the compute
// instance spanning it. See the package contracts.
func (m *Manager) Create(ctx context.Context, spec Spec) (Instance, error) {
	defer m.lock(spec.ParentUUID)()
	h, err := m.device(spec.ParentUUID)
	if err != nil {
		return Instance{}, err
	}
	if err := m.switchMode(ctx, h, spec.ParentUUID, true); err != nil {
		return Instance{}, err
	}
	giProfile, ret := h.GetGpuInstanceProfileInfo(spec.GPUInstanceProfileIndex)
	if ret != nvml.SUCCESS {
		return Instance{}, fmt.Errorf("%s: reading the profile: %w", spec, ret)
	}
	placement := nvml.GpuInstancePlacement{Start: uint32(spec.Placement.Start), Size: uint32(spec.Placement.Size)}
	gi, ret := h.CreateGpuInstanceWithPlacement(&giProfile, &placement)
	if ret == nvml.ERROR_INSUFFICIENT_RESOURCES {
		return Instance{}, fmt.Errorf("%s: creating the GPU instance: %w: its memory slices are taken by another MIG device "+
			"(one made outside the driver, e.g. by nvidia-smi or mig-parted, on a GPU the driver partitions on demand): destroy it", spec, ret)
	}
	if ret != nvml.SUCCESS {
		return Instance{}, fmt.Errorf("%s: creating the GPU instance: %w", spec, ret)
	}
	inst, err := m.completeInstance(h, gi, spec)
	if err != nil {
		if ret := gi.Destroy(); ret != nvml.SUCCESS {
			err = errors.Join(err, fmt.Errorf("%s: destroying the half-made GPU instance: %w", spec, ret))
		}
		return Instance{}, err
	}
	klog.FromContext(ctx).V(2).Info("Created MIG device", "parent", spec.ParentUUID, "giProfile", spec.GPUInstanceProfileID,
		"placementStart", spec.Placement.Start, "gpuInstance", inst.GPUInstanceID, "computeInstance", inst.ComputeInstanceID, "uuid", inst.UUID)
	return inst, nil
}

// completeInstance creates the compute instance spanning gi and reads the
// MIG device's identity.
func (m *Manager) completeInstance(h nvml.Device, gi nvml.GpuInstance, spec Spec) (Instance, error) {
	giInfo, ret := gi.GetInfo()
	if ret != nvml.SUCCESS {
		return Instance{}, fmt.Errorf("%s: reading the new GPU instance: %w", spec, ret)
	}
	ciProfile, ret := gi.GetComputeInstanceProfileInfo(spec.ComputeInstanceProfileID, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if ret != nvml.SUCCESS {
		return Instance{}, fmt.Errorf("%s: reading compute instance profile %d: %w", spec, spec.ComputeInstanceProfileID, ret)
	}
	ci, ret := gi.CreateComputeInstance(&ciProfile)
	if ret != nvml.SUCCESS {
		return Instance{}, fmt.Errorf("%s: creating the compute instance: %w", spec, ret)
	}
	ciInfo, ret := ci.GetInfo()
	if ret != nvml.SUCCESS {
		ci.Destroy()
		return Instance{}, fmt.Errorf("%s: reading the new compute instance: %w", spec, ret)
	}
	inst := Instance{Spec: spec, GPUInstanceID: int(giInfo.Id), ComputeInstanceID: int(ciInfo.Id)}
	uuid, err := migUUID(h, inst.GPUInstanceID, inst.ComputeInstanceID)
	if err != nil {
		ci.Destroy()
		return Instance{}, fmt.Errorf("%s: %w", spec, err)
	}
	inst.UUID = uuid
	return inst, nil
}

// migUUID finds the UUID of the MIG device of GPU instance gi, compute
// instance ci among the GPU's MIG device handles.
func migUUID(h nvml.Device, gi, ci int) (string, error) {
	count, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return "", fmt.Errorf("counting MIG devices: %w", ret)
	}
	for i := 0; i < count; i++ {
		mh, ret := h.GetMigDeviceHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		g, ret1 := mh.GetGpuInstanceId()
		c, ret2 := mh.GetComputeInstanceId()
		if ret1 != nvml.SUCCESS || ret2 != nvml.SUCCESS || g != gi || c != ci {
			continue
		}
		uuid, ret := mh.GetUUID()
		if ret != nvml.SUCCESS {
			return "", fmt.Errorf("reading the UUID of MIG device gi %d ci %d: %w", gi, ci, ret)
		}
		return uuid, nil
	}
	return "", fmt.Errorf("the MIG device of GPU instance %d, compute instance %d is not among the GPU's MIG devices", gi, ci)
}

// Destroy destroys the GPU instance of spec's profile at spec's placement
// and its compute instances. See the package contracts.
func (m *Manager) Destroy(ctx context.Context, spec Spec) error {
	defer m.lock(spec.ParentUUID)()
	h, err := m.device(spec.ParentUUID)
	if err != nil {
		return err
	}
	gi, found, err := findGPUInstance(h, spec)
	if err != nil || !found {
		return err
	}
	if err := destroyGPUInstance(gi); err != nil {
		return fmt.Errorf("%s: %w", spec, err)
	}
	logger := klog.FromContext(ctx)
	logger.V(2).Info("Destroyed MIG device", "parent", spec.ParentUUID, "giProfile", spec.GPUInstanceProfileID, "placementStart", spec.Placement.Start)
	if m.opts.LeaveMIGModeWhenEmpty[spec.ParentUUID] {
		if left, err := listGPUInstances(h, spec.ParentUUID); err == nil && len(left) == 0 {
			if err := m.switchMode(ctx, h, spec.ParentUUID, false); err != nil {
				logger.Error(err, "Leaving MIG mode after the GPU's last MIG device failed; the next whole-GPU prepare tries again", "gpu", spec.ParentUUID)
			}
		}
	}
	return nil
}

func findGPUInstance(h nvml.Device, spec Spec) (nvml.GpuInstance, bool, error) {
	profile, ret := h.GetGpuInstanceProfileInfo(spec.GPUInstanceProfileIndex)
	if ret != nvml.SUCCESS {
		return nil, false, fmt.Errorf("%s: reading the profile: %w", spec, ret)
	}
	gis, ret := h.GetGpuInstances(&profile)
	if ret == nvml.ERROR_NOT_SUPPORTED {
		return nil, false, nil // MIG mode off: no instances
	}
	if ret != nvml.SUCCESS {
		return nil, false, fmt.Errorf("%s: listing GPU instances: %w", spec, ret)
	}
	for _, gi := range gis {
		info, ret := gi.GetInfo()
		if ret != nvml.SUCCESS {
			return nil, false, fmt.Errorf("%s: reading a GPU instance: %w", spec, ret)
		}
		if int(info.Placement.Start) == spec.Placement.Start && int(info.Placement.Size) == spec.Placement.Size {
			return gi, true, nil
		}
	}
	return nil, false, nil
}

// computeInstances returns the compute instances of gi, of every profile.
func computeInstances(gi nvml.GpuInstance) []nvml.ComputeInstance {
	var out []nvml.ComputeInstance
	for id := 0; id < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; id++ {
		profile, ret := gi.GetComputeInstanceProfileInfo(id, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
		if ret != nvml.SUCCESS {
			continue
		}
		if cis, ret := gi.GetComputeInstances(&profile); ret == nvml.SUCCESS {
			out = append(out, cis...)
		}
	}
	return out
}

// destroyGPUInstance destroys gi's compute instances, then gi.
func destroyGPUInstance(gi nvml.GpuInstance) error {
	for _, ci := range computeInstances(gi) {
		if ret := ci.Destroy(); ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_FOUND && ret != nvml.ERROR_INVALID_ARGUMENT {
			return fmt.Errorf("destroying a compute instance: %w", ret)
		}
	}
	if ret := gi.Destroy(); ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_FOUND && ret != nvml.ERROR_INVALID_ARGUMENT {
		if ret == nvml.ERROR_IN_USE {
			return fmt.Errorf("destroying the GPU instance: %w: a process still uses the MIG device; it is destroyed once the process is gone (the kubelet retries the unprepare)", ret)
		}
		return fmt.Errorf("destroying the GPU instance: %w", ret)
	}
	return nil
}

// GPUInstances lists the GPU instances that exist on the GPU, whoever made
// them, ordered by ID; none when the GPU is out of MIG mode.
func (m *Manager) GPUInstances(parentUUID string) ([]GPUInstance, error) {
	defer m.lock(parentUUID)()
	h, err := m.device(parentUUID)
	if err != nil {
		return nil, err
	}
	return listGPUInstances(h, parentUUID)
}

func listGPUInstances(h nvml.Device, parentUUID string) ([]GPUInstance, error) {
	var out []GPUInstance
	for id := 0; id < nvml.GPU_INSTANCE_PROFILE_COUNT; id++ {
		profile, ret := h.GetGpuInstanceProfileInfo(id)
		if ret != nvml.SUCCESS {
			continue
		}
		gis, ret := h.GetGpuInstances(&profile)
		if ret == nvml.ERROR_NOT_SUPPORTED {
			return nil, nil
		}
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("GPU %s: listing the GPU instances of profile %d: %w", parentUUID, id, ret)
		}
		for _, gi := range gis {
			info, ret := gi.GetInfo()
			if ret != nvml.SUCCESS {
				return nil, fmt.Errorf("GPU %s: reading a GPU instance: %w", parentUUID, ret)
			}
			g := GPUInstance{ID: int(info.Id), ProfileID: int(info.ProfileId),
				Placement: inventory.MIGPlacement{Start: int(info.Placement.Start), Size: int(info.Placement.Size)}}
			for _, ci := range computeInstances(gi) {
				if info, ret := ci.GetInfo(); ret == nvml.SUCCESS {
					g.ComputeInstances = append(g.ComputeInstances, int(info.Id))
				}
			}
			out = append(out, g)
		}
	}
	sortInstances(out)
	return out, nil
}

// UseWhole makes the GPU usable as a whole: MIG mode off when it is on.
// It fails, changing nothing, while the GPU holds GPU instances.
func (m *Manager) UseWhole(ctx context.Context, parentUUID string) error {
	defer m.lock(parentUUID)()
	h, err := m.device(parentUUID)
	if err != nil {
		return err
	}
	current, _, ret := h.GetMigMode()
	if ret == nvml.ERROR_NOT_SUPPORTED || (ret == nvml.SUCCESS && current == nvml.DEVICE_MIG_DISABLE) {
		return nil
	}
	if ret != nvml.SUCCESS {
		return fmt.Errorf("GPU %s: reading its MIG mode: %w", parentUUID, ret)
	}
	gis, err := listGPUInstances(h, parentUUID)
	if err != nil {
		return err
	}
	if len(gis) > 0 {
		return fmt.Errorf("GPU %s: it holds %d MIG devices, so it cannot be used whole: a claim of one of its MIG devices was not unprepared yet, "+
			"or MIG devices were made outside the driver (destroy them)", parentUUID, len(gis))
	}
	return m.switchMode(ctx, h, parentUUID, false)
}

// switchMode puts the GPU in MIG mode (enable) or out of it. A switch that
// does not take effect is undone and reported (see ModeError). The caller
// holds the GPU's lock.
func (m *Manager) switchMode(ctx context.Context, h nvml.Device, uuid string, enable bool) error {
	want := nvml.DEVICE_MIG_DISABLE
	if enable {
		want = nvml.DEVICE_MIG_ENABLE
	}
	current, pending, ret := h.GetMigMode()
	if ret != nvml.SUCCESS {
		return fmt.Errorf("GPU %s: reading its MIG mode: %w", uuid, ret)
	}
	if current == want && pending == want {
		return nil
	}
	fail := func(status nvml.Return) error {
		err := &ModeError{ParentUUID: uuid, Enable: enable, Status: status}
		if m.opts.OnModeError != nil {
			m.opts.OnModeError(ctx, err)
		}
		return err
	}
	if current != pending {
		// A switch waits for a reset already: say so, change nothing.
		return fail(nvml.ERROR_RESET_REQUIRED)
	}
	activation, ret := h.SetMigMode(want)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("GPU %s: switching MIG mode: %w", uuid, ret)
	}
	if current, pending, ret = h.GetMigMode(); ret == nvml.SUCCESS && current == want && pending == want {
		klog.FromContext(ctx).Info("Switched MIG mode", "gpu", uuid, "migEnabled", enable)
		return nil
	}
	if activation == nvml.SUCCESS {
		activation = nvml.ERROR_RESET_REQUIRED
	}
	// Undo the pending change so that no reset flips the GPU behind the
	// driver's back.
	if pending == want {
		h.SetMigMode(current)
	}
	return fail(activation)
}

func sortInstances(gis []GPUInstance) {
	sort.Slice(gis, func(a, b int) bool { return gis[a].ID < gis[b].ID })
	for i := range gis {
		sort.Ints(gis[i].ComputeInstances)
	}
}

// Lookup returns the MIG device of spec when its GPU instance exists at the
// placement with a compute instance: its IDs and UUID (the first compute
// instance's).
func (m *Manager) Lookup(ctx context.Context, spec Spec) (Instance, bool, error) {
	defer m.lock(spec.ParentUUID)()
	h, err := m.device(spec.ParentUUID)
	if err != nil {
		return Instance{}, false, err
	}
	gi, found, err := findGPUInstance(h, spec)
	if err != nil || !found {
		return Instance{}, false, err
	}
	info, ret := gi.GetInfo()
	if ret != nvml.SUCCESS {
		return Instance{}, false, fmt.Errorf("%s: reading its GPU instance: %w", spec, ret)
	}
	ciProfile, ret := gi.GetComputeInstanceProfileInfo(spec.ComputeInstanceProfileID, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
	if ret != nvml.SUCCESS {
		return Instance{}, false, fmt.Errorf("%s: reading compute instance profile %d: %w", spec, spec.ComputeInstanceProfileID, ret)
	}
	cis, ret := gi.GetComputeInstances(&ciProfile)
	if ret != nvml.SUCCESS {
		return Instance{}, false, fmt.Errorf("%s: listing its compute instances: %w", spec, ret)
	}
	if len(cis) == 0 {
		return Instance{}, false, nil
	}
	ciInfo, ret := cis[0].GetInfo()
	if ret != nvml.SUCCESS {
		return Instance{}, false, fmt.Errorf("%s: reading its compute instance: %w", spec, ret)
	}
	inst := Instance{Spec: spec, GPUInstanceID: int(info.Id), ComputeInstanceID: int(ciInfo.Id)}
	if inst.UUID, err = migUUID(h, inst.GPUInstanceID, inst.ComputeInstanceID); err != nil {
		return Instance{}, false, fmt.Errorf("%s: %w", spec, err)
	}
	return inst, true, nil
}

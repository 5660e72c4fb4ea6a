// Package devices names the node's preparable devices: the full GPUs and
// the MIG devices that the driver publishes in its ResourceSlices and
// prepares for claims. It is the one vocabulary that slices, claim state,
// sharing and health use for a device: its name, its kind, its UUID and,
// for a MIG device, its parent GPU.
//
// A GPU in MIG mode is not preparable as a whole: its MIG devices are. Each
// preparable device has its own UUID ("GPU-..." or "MIG-...") and belongs to
// one physical GPU (itself, or the MIG device's parent), whose health it
// shares.
//
// The package is pure: it reads an inventory and touches nothing else.
package devices

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// Kind is what a preparable device is; its values are those of the
// ResourceSlice attribute "type".
type Kind string

const (
	// KindGPU is a full GPU (not in MIG mode).
	KindGPU Kind = "gpu"
	// KindMIG is a MIG device of a GPU in MIG mode.
	KindMIG Kind = "mig"
)

// GPUName returns the full GPU's device name in the ResourceSlice,
// "gpu-<index>". It is a DNS label and, because NVML indexes are unique on
// a node, unique in the node's pool. The name is stable across plugin
// restarts as long as NVML enumerates the GPU at the same index.
func GPUName(d inventory.Device) string {
	return "gpu-" + strconv.Itoa(d.Index)
}

// MIGName returns the MIG device's name in the ResourceSlice:
// "gpu-<parent index>-mig-<profile>-<GPU instance ID>", e.g.
// "gpu-0-mig-1g10gb-0", with "-<compute instance ID>" appended when the
// compute instance is not the first of its GPU instance. The profile keeps
// only its letters and digits, so the name is a DNS label; it is unique on
// the node because instance IDs are unique per GPU, and stable for as long
// as the MIG device exists.
func MIGName(m inventory.MIGDevice) string {
	var profile strings.Builder
	for _, r := range strings.ToLower(m.Profile) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			profile.WriteRune(r)
		}
	}
	name := fmt.Sprintf("gpu-%d-mig-%s-%d", m.ParentIndex, profile.String(), m.GPUInstanceID)
	if m.ComputeInstanceID != 0 {
		name += fmt.Sprintf("-%d", m.ComputeInstanceID)
	}
	return name
}

// Device is one preparable device of the node.
type Device struct {
	// Name is the device's name in the ResourceSlice: GPUName or MIGName.
	Name string
	// Kind is KindGPU or KindMIG.
	Kind Kind
	// UUID is the device's own UUID: "GPU-..." for a full GPU, "MIG-..."
	// for a MIG device.
	UUID string
	// ParentUUID is the UUID of the GPU a MIG device belongs to; empty for
	// a full GPU.
	ParentUUID string
	// GPU is the physical GPU: the device itself, or the MIG device's
	// parent.
	GPU inventory.Device
	// MIG is the MIG device; nil for a full GPU and for a dynamic MIG
	// device. It points into the Set and must not be modified.
	MIG *inventory.MIGDevice
	// Dynamic is the MIG device that the driver creates when a claim is
	// prepared and destroys when it is unprepared (a partition of a
	// partitionable GPU); nil otherwise. Such a device has no UUID until
	// it exists. It points into the Set and must not be modified.
	Dynamic *DynamicMIG
	// Partitionable tells, for a full GPU, that the GPU is published with
	// its partitions (Dynamic devices): the GPU and its partitions share
	// the GPU's counters, so a claim gets either the whole GPU or
	// partitions of it.
	Partitionable bool
}

// DynamicMIG is a MIG device that can be created on demand: a GPU instance
// profile at one placement, with one compute instance spanning it.
type DynamicMIG struct {
	Profile   inventory.MIGProfile
	Placement inventory.MIGPlacement
	// MemorySlices is the parent GPU's number of memory slices.
	MemorySlices int
}

// DynamicMIGName returns the name of the dynamic MIG device of GPU gpu
// with profile p at placement pl: "gpu-<index>-mig-<profile>-<GPU
// instance profile ID>-<placement start>", e.g. "gpu-0-mig-1g10gb-19-0" or
// "gpu-0-mig-1g10gb-me-20-6": the form of NVIDIA's reference driver, whose
// profile part drops the dots and turns other characters that a DNS label
// cannot hold into "-". The name is a DNS label, unique on the node and
// stable for as long as the GPU keeps its index.
func DynamicMIGName(gpu inventory.Device, p inventory.MIGProfile, pl inventory.MIGPlacement) string {
	var profile strings.Builder
	for _, r := range strings.ToLower(p.Name) {
		switch {
		case r == '.':
		case (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			profile.WriteRune(r)
		default:
			profile.WriteRune('-')
		}
	}
	return fmt.Sprintf("gpu-%d-mig-%s-%d-%d", gpu.Index, strings.Trim(profile.String(), "-"), p.GPUInstanceProfileID, pl.Start)
}

// Options tune FromInventoryWith.
type Options struct {
	// Partitionable are the MIG layouts, by GPU UUID, of the GPUs to
	// publish partitionable (dynamic MIG). Such a GPU is published as
	// its whole self (unless it is in MIG mode and cannot leave it
	// without a reset: inventory.MIGLayout.ModeSwitchable) and one Dynamic
	// device per profile and placement (unless it is out of MIG mode and
	// cannot enter it without a reset); its existing MIG devices are not
	// published (they are the driver's own, made for claims). Other GPUs
	// are published as by FromInventory.
	Partitionable map[string]inventory.MIGLayout
}

// GPUUUID returns the UUID of the physical GPU: the parent's for a MIG
// device, the device's own for a full GPU.
func (d Device) GPUUUID() string {
	if d.ParentUUID != "" {
		return d.ParentUUID
	}
	return d.UUID
}

// UnusableName returns the name under which the unusable GPU u is
// published (tainted, never preparable): "gpu-<index>", the name it has
// while it works (GPUName).
func UnusableName(u inventory.UnusableDevice) string {
	return "gpu-" + strconv.Itoa(u.Index)
}

// Set is the node's preparable devices. It is immutable, and safe for
// concurrent use. Build it with FromInventory.
type Set struct {
	all    []Device
	byName map[string]int // index in all
	// unusable are the GPUs NVML cannot use (inventory.Inventory.Unusable)
	// by UnusableName: known, never preparable.
	unusable map[string]inventory.UnusableDevice
}

// FromInventory returns the preparable devices of inv in publication order:
// the GPUs not in MIG mode in inv.Devices order, then the MIG devices in
// inv.MIGDevices order. A MIG device whose parent is not in inv.Devices is
// left out (Discover never returns one). The unusable GPUs of inv are not
// preparable; Unusable names them. A nil inv gives an empty Set. The Set
// copies what it keeps of inv.
func FromInventory(inv *inventory.Inventory) *Set {
	return FromInventoryWith(inv, Options{})
}

// FromInventoryWith is FromInventory with options. The devices of a
// partitionable GPU come in its place among the GPUs: the whole GPU, then
// its partitions by GPU instance profile in layout order, each profile's
// placements from the highest memory slice down (first-fit allocation then
// packs small partitions at the top, leaving the low slices that the
// large profiles need).
func FromInventoryWith(inv *inventory.Inventory, opts Options) *Set {
	s := &Set{byName: map[string]int{}, unusable: map[string]inventory.UnusableDevice{}}
	if inv == nil {
		return s
	}
	for _, u := range inv.Unusable {
		s.unusable[UnusableName(u)] = u
	}
	s.all = make([]Device, 0, len(inv.Devices)+len(inv.MIGDevices))
	for _, d := range inv.Devices {
		if l, ok := opts.Partitionable[d.UUID]; ok {
			s.addPartitionable(d, l)
			continue
		}
		if d.MIGEnabled {
			continue // preparable through its MIG devices
		}
		s.add(Device{Name: GPUName(d), Kind: KindGPU, UUID: d.UUID, GPU: d})
	}
	for _, m := range inv.MIGDevices {
		parent, ok := inv.DeviceByUUID(m.ParentUUID)
		if _, dynamic := opts.Partitionable[m.ParentUUID]; !ok || dynamic {
			continue
		}
		mig := m
		s.add(Device{Name: MIGName(m), Kind: KindMIG, UUID: m.UUID, ParentUUID: m.ParentUUID, GPU: parent, MIG: &mig})
	}
	return s
}

func (s *Set) addPartitionable(d inventory.Device, l inventory.MIGLayout) {
	if !d.MIGEnabled || l.ModeSwitchable {
		s.add(Device{Name: GPUName(d), Kind: KindGPU, UUID: d.UUID, GPU: d, Partitionable: true})
	}
	if !d.MIGEnabled && !l.ModeSwitchable {
		return
	}
	for _, p := range l.Profiles {
		for i := len(p.Placements) - 1; i >= 0; i-- {
			pl := p.Placements[i]
			s.add(Device{Name: DynamicMIGName(d, p, pl), Kind: KindMIG, ParentUUID: d.UUID, GPU: d,
				Dynamic: &DynamicMIG{Profile: p, Placement: pl, MemorySlices: l.MemorySlices}})
		}
	}
}

func (s *Set) add(d Device) {
	s.byName[d.Name] = len(s.all)
	s.all = append(s.all, d)
}

// Get returns the device with the given ResourceSlice name.
func (s *Set) Get(name string) (Device, bool) {
	i, ok := s.byName[name]
	if !ok {
		return Device{}, false
	}
	return s.all[i], true
}

// Unusable returns the GPU published under name that the node has but NVML
// cannot use (inventory.Inventory.Unusable). Get never returns it: a claim
// allocated it fails with an error that says so (see UnusableDevice.Fix).
func (s *Set) Unusable(name string) (inventory.UnusableDevice, bool) {
	u, ok := s.unusable[name]
	return u, ok
}

// All returns the devices in publication order, in a new slice.
func (s *Set) All() []Device {
	return append([]Device(nil), s.all...)
}

// Names returns the devices' names in publication order.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.all))
	for _, d := range s.all {
		out = append(out, d.Name)
	}
	return out
}

// OfGPU returns the preparable devices of the physical GPU with the given
// UUID, in publication order: the GPU itself, or its MIG devices when it is
// in MIG mode. They share the GPU's health. An unknown UUID gives none.
func (s *Set) OfGPU(gpuUUID string) []Device {
	var out []Device
	for _, d := range s.all {
		if d.GPUUUID() == gpuUUID {
			out = append(out, d)
		}
	}
	return out
}

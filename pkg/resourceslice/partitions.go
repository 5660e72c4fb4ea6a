package resourceslice

import (
	"strconv"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// Partitionable GPUs (dynamic MIG) are published in the form of NVIDIA's
// reference DRA driver ("DynamicMIG"), so that the scheduler's allocator
// (DRAPartitionableDevices) arbitrates between a GPU's whole self and its
// partitions:
//
//   - each partitionable GPU has one counter set, CounterSetName(gpu)
//     ("gpu-0-counter-set"), with the counters CounterMemory (bytes),
//     CounterMultiprocessors, CounterCopyEngines, CounterDecoders,
//     CounterEncoders, CounterJPEGEngines, CounterOFAEngines (each the
//     largest value among the GPU's profiles, i.e. the full-size
//     profile's; memory at least the GPU's framebuffer) and
//     MemorySliceCounter(i) = 1 for every memory slice i of the GPU;
//   - the whole GPU consumes every counter of its set entirely: allocating
//     it leaves nothing for a partition, and one allocated partition keeps
//     it from being allocated;
//   - a partition (devices.DynamicMIG) consumes its profile's memory,
//     multiprocessors and engines, and MemorySliceCounter(i) = 1 for each
//     memory slice i of its placement: partitions whose placements overlap
//     exclude each other, and partitions together never exceed the GPU.
//
// A partition is published with its parent's attributes, like a MIG device
// that exists (migDevice), except those that only a created MIG device has
// (uuid, gpuInstanceID, computeInstanceID): type "mig", parentUUID,
// profile; its capacities are its profile's.

// Names of the counters of a partitionable GPU's counter set. Counter
// names are DNS labels.
const (
	CounterMemory          = "memory"
	CounterMultiprocessors = "multiprocessors"
	CounterCopyEngines     = "copy-engines"
	CounterDecoders        = "decoders"
	CounterEncoders        = "encoders"
	CounterJPEGEngines     = "jpeg-engines"
	CounterOFAEngines      = "ofa-engines"
)

// MemorySliceCounter returns the name of the counter of the GPU's memory
// slice i, "memory-slice-<i>"; its value is 1.
func MemorySliceCounter(i int) string {
	return "memory-slice-" + strconv.Itoa(i)
}

// CounterSetName returns the name of the counter set of the partitionable
// GPU gpu, "<devices.GPUName(gpu)>-counter-set", e.g. "gpu-0-counter-set":
// a DNS label, unique in the node's pool.
func CounterSetName(gpu inventory.Device) string {
	return devices.GPUName(gpu) + "-counter-set"
}

// CounterSets returns the counter sets of the partitionable GPUs of set,
// one per GPU that has at least one partition (devices.DynamicMIG) in set,
// in the order of the GPUs' first partitions in set's publication order
// (for devices.FromInventoryWith: NVML index order). A GPU that set publishes partitionable without partitions
// has no counter set, and its whole self consumes none. A nil set, or one
// without partitions, gives an empty, non-nil result. Each call returns
// fresh values.
//
// A counter set holds 7 + the GPU's memory slices counters (15 on a GPU
// with 8 memory slices, as A100, H100, H200 and B200 have); the API allows
// 32.
func CounterSets(set *devices.Set) []resourceapi.CounterSet {
	if set == nil {
		return []resourceapi.CounterSet{}
	}
	counters, order := partitionCounters(set.All())
	out := make([]resourceapi.CounterSet, 0, len(order))
	for _, uuid := range order {
		c := counters[uuid]
		out = append(out, resourceapi.CounterSet{Name: c.setName, Counters: c.all()})
	}
	return out
}

// gpuCounters are the totals of one partitionable GPU's counter set.
type gpuCounters struct {
	setName                                                       string
	memoryBytes                                                   uint64
	multiprocessors, copyEngines, decoders, encoders, jpegs, ofas uint32
	memorySlices                                                  int
}

// partitionCounters returns the counters of the GPUs that have partitions
// among ds, by GPU UUID, and those UUIDs in the order of their first
// partitions in ds.
func partitionCounters(ds []devices.Device) (map[string]gpuCounters, []string) {
	out := map[string]gpuCounters{}
	var order []string
	for _, d := range ds {
		if d.Dynamic == nil {
			continue
		}
		uuid := d.GPU.UUID
		c, ok := out[uuid]
		if !ok {
			c = gpuCounters{setName: CounterSetName(d.GPU), memoryBytes: d.GPU.MemoryBytes}
			order = append(order, uuid)
		}
		p := d.Dynamic.Profile
		c.memoryBytes = max(c.memoryBytes, p.MemoryBytes)
		c.multiprocessors = max(c.multiprocessors, p.Multiprocessors)
		c.copyEngines = max(c.copyEngines, p.CopyEngines)
		c.decoders = max(c.decoders, p.Decoders)
		c.encoders = max(c.encoders, p.Encoders)
		c.jpegs = max(c.jpegs, p.JPEGs)
		c.ofas = max(c.ofas, p.OFAs)
		// Every memory slice a partition consumes exists in the set, even
		// where the layout's MemorySlices is short of a placement's end.
		c.memorySlices = max(c.memorySlices, d.Dynamic.MemorySlices, d.Dynamic.Placement.End())
		out[uuid] = c
	}
	return out, order
}

// all returns every counter of the set at its full value: the set's
// counters, and what the whole GPU consumes.
func (c gpuCounters) all() map[string]resourceapi.Counter {
	return counterMap(c.memoryBytes, c.multiprocessors, c.copyEngines, c.decoders, c.encoders, c.jpegs, c.ofas,
		inventory.MIGPlacement{Start: 0, Size: c.memorySlices})
}

// counterMap returns the counters for the given memory and engines and one
// memory-slice counter per slice of slices.
func counterMap(memoryBytes uint64, multiprocessors, copyEngines, decoders, encoders, jpegs, ofas uint32, slices inventory.MIGPlacement) map[string]resourceapi.Counter {
	count := func(n uint32) resourceapi.Counter {
		return resourceapi.Counter{Value: *resource.NewQuantity(int64(n), resource.DecimalSI)}
	}
	m := make(map[string]resourceapi.Counter, 7+slices.Size)
	m[CounterMemory] = resourceapi.Counter{Value: *resource.NewQuantity(clampInt64(memoryBytes), resource.BinarySI)}
	m[CounterMultiprocessors] = count(multiprocessors)
	m[CounterCopyEngines] = count(copyEngines)
	m[CounterDecoders] = count(decoders)
	m[CounterEncoders] = count(encoders)
	m[CounterJPEGEngines] = count(jpegs)
	m[CounterOFAEngines] = count(ofas)
	for i := slices.Start; i < slices.End(); i++ {
		m[MemorySliceCounter(i)] = count(1)
	}
	return m
}

// dynamicMIGDevice returns the published device of the partition d of the
// GPU whose counter set is named setName.
func dynamicMIGDevice(d devices.Device, setName string, v driverVersions, opts Options) resourceapi.Device {
	p, pl := d.Dynamic.Profile, d.Dynamic.Placement
	attrs := gpuAttributes(d.GPU, v, opts)
	delete(attrs, AttrMIGCapable)
	delete(attrs, AttrUUID) // the MIG device has no UUID until it is created
	putString(attrs, AttrType, string(devices.KindMIG))
	putString(attrs, AttrParentUUID, d.ParentUUID)
	putString(attrs, AttrProfile, p.Name)
	return resourceapi.Device{
		Name:       d.Name,
		Attributes: attrs,
		Capacity:   migCapacity(p.MemoryBytes, p.Multiprocessors, p.CopyEngines, p.Decoders, p.Encoders, p.JPEGs, p.OFAs),
		ConsumesCounters: []resourceapi.DeviceCounterConsumption{{
			CounterSet: setName,
			Counters:   counterMap(p.MemoryBytes, p.Multiprocessors, p.CopyEngines, p.Decoders, p.Encoders, p.JPEGs, p.OFAs, pl),
		}},
	}
}

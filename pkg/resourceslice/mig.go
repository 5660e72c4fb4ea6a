package resourceslice

import (
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpudra/gpudra/pkg/devices"
)

// Attributes that only MIG devices have.
const (
	// AttrParentUUID is the UUID of the GPU that holds the MIG device.
	AttrParentUUID resourceapi.QualifiedName = "parentUUID"
	// AttrProfile is the MIG profile, e.g. "1g.10gb".
	AttrProfile resourceapi.QualifiedName = "profile"
	// AttrGPUInstanceID and AttrComputeInstanceID are the MIG instance IDs.
	AttrGPUInstanceID     resourceapi.QualifiedName = "gpuInstanceID"
	AttrComputeInstanceID resourceapi.QualifiedName = "computeInstanceID"
)

// Capacities of MIG devices besides CapacityMemory: the engines of their
// profile.
const (
	CapacityMultiprocessors resourceapi.QualifiedName = "multiprocessors"
	CapacityCopyEngines     resourceapi.QualifiedName = "copyEngines"
	CapacityDecoders        resourceapi.QualifiedName = "decoders"
	CapacityEncoders        resourceapi.QualifiedName = "encoders"
	CapacityJPEGEngines     resourceapi.QualifiedName = "jpegEngines"
	CapacityOFAEngines      resourceapi.QualifiedName = "ofaEngines"
)

// migDevice returns the published device of the MIG device d. It has its
// parent GPU's attributes (product, architecture, versions, index, minor,
// PCI), except type "mig" and its own uuid, plus parentUUID, profile and
// the instance IDs; its capacities are those of its profile.
func migDevice(d devices.Device, v driverVersions, opts Options) resourceapi.Device {
	m := d.MIG
	attrs := gpuAttributes(d.GPU, v, opts)
	delete(attrs, AttrMIGCapable)
	putString(attrs, AttrType, string(devices.KindMIG))
	putString(attrs, AttrUUID, d.UUID)
	putString(attrs, AttrParentUUID, d.ParentUUID)
	putString(attrs, AttrProfile, m.Profile)
	attrs[AttrGPUInstanceID] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(m.GPUInstanceID))}
	attrs[AttrComputeInstanceID] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(m.ComputeInstanceID))}
	return resourceapi.Device{
		Name:       d.Name,
		Attributes: attrs,
		Capacity:   migCapacity(m.MemoryBytes, m.Multiprocessors, m.CopyEngines, m.Decoders, m.Encoders, m.JPEGs, m.OFAs),
	}
}

// migCapacity returns the capacities of a MIG device with the given memory
// and engines.
func migCapacity(memoryBytes uint64, multiprocessors, copyEngines, decoders, encoders, jpegs, ofas uint32) map[resourceapi.QualifiedName]resourceapi.DeviceCapacity {
	count := func(n uint32) resourceapi.DeviceCapacity {
		return resourceapi.DeviceCapacity{Value: *resource.NewQuantity(int64(n), resource.DecimalSI)}
	}
	return map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
		CapacityMemory:          {Value: *resource.NewQuantity(clampInt64(memoryBytes), resource.BinarySI)},
		CapacityMultiprocessors: count(multiprocessors),
		CapacityCopyEngines:     count(copyEngines),
		CapacityDecoders:        count(decoders),
		CapacityEncoders:        count(encoders),
		CapacityJPEGEngines:     count(jpegs),
		CapacityOFAEngines:      count(ofas),
	}
}

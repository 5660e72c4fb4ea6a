package resourceslice

import (
	"fmt"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// MIGDeviceType is the value of the AttrType attribute of a MIG device.
const MIGDeviceType = "mig"

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

// MIGDeviceName returns the MIG device's name in the ResourceSlice:
// "gpu-<parent index>-mig-<profile>-<GPU instance ID>", e.g.
// "gpu-0-mig-1g10gb-0", with "-<compute instance ID>" appended when the
// compute instance is not the first of its GPU instance. The profile keeps
// only its letters and digits, so the name is a DNS label; it is unique on
// the node because instance IDs are unique per GPU, and stable for as long
// as the MIG device exists.
func MIGDeviceName(m inventory.MIGDevice) string {
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

// migDevices returns one device per MIG device of inv. A MIG device has its
// parent GPU's attributes (product, architecture, versions, index, minor,
// PCI), except type "mig" and its own uuid, plus parentUUID, profile and
// the instance IDs; its capacities are those of its profile.
func migDevices(inv *inventory.Inventory, opts Options) []resourceapi.Device {
	out := make([]resourceapi.Device, 0, len(inv.MIGDevices))
	for _, m := range inv.MIGDevices {
		parent, ok := inv.DeviceByUUID(m.ParentUUID)
		if !ok {
			continue // Discover never returns a MIG device without its GPU
		}
		parent.MIGEnabled = false
		base := Devices(&inventory.Inventory{
			DriverVersion:     inv.DriverVersion,
			CUDADriverVersion: inv.CUDADriverVersion,
			Devices:           []inventory.Device{parent},
		}, opts)[0]
		attrs := base.Attributes
		delete(attrs, AttrMIGCapable)
		putString(attrs, AttrType, MIGDeviceType)
		putString(attrs, AttrUUID, m.UUID)
		putString(attrs, AttrParentUUID, m.ParentUUID)
		putString(attrs, AttrProfile, m.Profile)
		attrs[AttrGPUInstanceID] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(m.GPUInstanceID))}
		attrs[AttrComputeInstanceID] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(m.ComputeInstanceID))}
		count := func(n uint32) resourceapi.DeviceCapacity {
			return resourceapi.DeviceCapacity{Value: *resource.NewQuantity(int64(n), resource.DecimalSI)}
		}
		out = append(out, resourceapi.Device{
			Name:       MIGDeviceName(m),
			Attributes: attrs,
			Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
				CapacityMemory:          {Value: *resource.NewQuantity(clampInt64(m.MemoryBytes), resource.BinarySI)},
				CapacityMultiprocessors: count(m.Multiprocessors),
				CapacityCopyEngines:     count(m.CopyEngines),
				CapacityDecoders:        count(m.Decoders),
				CapacityEncoders:        count(m.Encoders),
				CapacityJPEGEngines:     count(m.JPEGs),
				CapacityOFAEngines:      count(m.OFAs),
			},
		})
	}
	return out
}

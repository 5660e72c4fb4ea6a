package resourceslice

import (
	"fmt"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// TaintKeyName is the name part of the health taint key; the key is
// "<driver name>/unhealthy", e.g. "gpu.nvidia.com/unhealthy".
const TaintKeyName = "unhealthy"

// TaintKey returns the key of the health taints of driverName's devices.
// A driver name is a DNS subdomain, so the key is a valid label name.
func TaintKey(driverName string) string { return driverName + "/" + TaintKeyName }

// ParseTaintEffect accepts the taint effects a health taint may have,
// NoSchedule (the default for "") and NoExecute.
func ParseTaintEffect(s string) (resourceapi.DeviceTaintEffect, error) {
	switch resourceapi.DeviceTaintEffect(s) {
	case "", resourceapi.DeviceTaintEffectNoSchedule:
		return resourceapi.DeviceTaintEffectNoSchedule, nil
	case resourceapi.DeviceTaintEffectNoExecute:
		return resourceapi.DeviceTaintEffectNoExecute, nil
	}
	return "", fmt.Errorf("taint effect %q: use %s (keep running pods, schedule no new ones) or %s (also evict the pods using the device)",
		s, resourceapi.DeviceTaintEffectNoSchedule, resourceapi.DeviceTaintEffectNoExecute)
}

// HealthTaint is the taint of an unhealthy device: key TaintKey(driverName),
// value reason (what happened, e.g. "xid-79", "double-bit-ecc",
// "gpu-lost", "unmonitored": it must be a valid label value), the effect,
// and TimeAdded since, rounded to the second (what the API server stores),
// so that republishing the same problem does not change the slice. A zero
// since leaves TimeAdded for the API server to fill in.
func HealthTaint(driverName, reason string, effect resourceapi.DeviceTaintEffect, since time.Time) resourceapi.DeviceTaint {
	t := resourceapi.DeviceTaint{Key: TaintKey(driverName), Value: reason, Effect: effect}
	if !since.IsZero() {
		t.TimeAdded = &metav1.Time{Time: since.Round(time.Second)}
	}
	return t
}

// WithTaints returns a copy of devices in which the device named n carries
// taints[n] after its own taints; devices is not modified. Devices that
// carry taints lower the per-slice limit of DriverResources to
// MaxDevicesPerSliceWithTaintsOrCounters.
func WithTaints(devices []resourceapi.Device, taints map[string][]resourceapi.DeviceTaint) []resourceapi.Device {
	out := make([]resourceapi.Device, len(devices))
	for i, d := range devices {
		if extra := taints[d.Name]; len(extra) > 0 {
			d.Taints = append(append(make([]resourceapi.DeviceTaint, 0, len(d.Taints)+len(extra)), d.Taints...), extra...)
		}
		out[i] = d
	}
	return out
}

// Taint values of the GPUs that NVML cannot use (UnusableDevices).
const (
	// TaintGPULost is the value for a GPU that NVML reports lost
	// (ERROR_GPU_IS_LOST): it fell off the bus. The health monitor uses the
	// same value for a GPU lost while the plugin runs.
	TaintGPULost = "gpu-lost"
	// TaintUnusable is the value for a GPU that fails otherwise.
	TaintUnusable = "unusable"
)

// UnusableTaint is the taint of the unusable GPU u: the health taint key,
// value TaintGPULost or TaintUnusable, NoSchedule (it runs nothing that
// could be evicted: it was never prepared by this plugin), TimeAdded left
// for the API server to fill in.
func UnusableTaint(driverName string, u inventory.UnusableDevice) resourceapi.DeviceTaint {
	reason := TaintUnusable
	if u.Lost() {
		reason = TaintGPULost
	}
	return HealthTaint(driverName, reason, resourceapi.DeviceTaintEffectNoSchedule, time.Time{})
}

// UnusableDevices returns one device per GPU of inv that NVML cannot use
// (inv.Unusable), so that operators and the scheduler see it: named
// devices.UnusableName(u) ("gpu-<index>", as when it works), with the
// attributes that are known (type "gpu", index, driverVersion,
// cudaDriverVersion; uuid, minor, productName, pciBusID and pcieRoot when
// NVML could read them), no capacity, and UnusableTaint. The claim state
// never prepares it (devices.Set.Unusable). Put these devices after the
// preparable ones (Devices): the allocator is first-fit, and where the API
// server drops device taints (DRADeviceTaints off) only the prepare
// refuses them.
func UnusableDevices(inv *inventory.Inventory, driverName string, opts Options) []resourceapi.Device {
	if inv == nil {
		return []resourceapi.Device{}
	}
	var v driverVersions
	v.driver, v.driverOK = semverOf(inv.DriverVersion)
	v.cuda, v.cudaOK = semverOf(inv.CUDADriverVersion)
	out := make([]resourceapi.Device, 0, len(inv.Unusable))
	for _, u := range inv.Unusable {
		attrs := make(map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, 9)
		putString(attrs, AttrType, string(devices.KindGPU))
		putString(attrs, AttrUUID, u.UUID)
		putString(attrs, AttrProductName, u.ProductName)
		if v.driverOK {
			putVersion(attrs, AttrDriverVersion, v.driver)
		}
		if v.cudaOK {
			putVersion(attrs, AttrCUDADriverVersion, v.cuda)
		}
		attrs[AttrIndex] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(u.Index))}
		if u.Minor >= 0 {
			attrs[AttrMinor] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(u.Minor))}
		}
		putBusAttributes(attrs, u.PCIBusID, opts)
		out = append(out, resourceapi.Device{
			Name:       devices.UnusableName(u),
			Attributes: attrs,
			Taints:     []resourceapi.DeviceTaint{UnusableTaint(driverName, u)},
		})
	}
	return out
}

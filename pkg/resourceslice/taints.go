package resourceslice

import (
	"fmt"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

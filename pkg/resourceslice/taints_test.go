package resourceslice

import (
	"strconv"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
)

func TestHealthTaintIsValid(t *testing.T) {
	since := time.Date(2026, 5, 1, 10, 0, 0, 700_000_000, time.UTC)
	for _, reason := range []string{"xid-79", "xid-4294967295", "double-bit-ecc", "gpu-lost", "unmonitored"} {
		taint := HealthTaint("gpu.nvidia.com", reason, resourceapi.DeviceTaintEffectNoSchedule, since)
		if taint.Key != "gpu.nvidia.com/unhealthy" || taint.Value != reason || taint.Effect != resourceapi.DeviceTaintEffectNoSchedule {
			t.Errorf("taint = %+v", taint)
		}
		if errs := validation.IsQualifiedName(taint.Key); len(errs) > 0 {
			t.Errorf("key %q: %v", taint.Key, errs)
		}
		if errs := validation.IsValidLabelValue(taint.Value); len(errs) > 0 {
			t.Errorf("value %q: %v", taint.Value, errs)
		}
		if taint.TimeAdded == nil || !taint.TimeAdded.Time.Equal(since.Round(time.Second)) {
			t.Errorf("TimeAdded = %v, want %v rounded to the second", taint.TimeAdded, since)
		}
	}
	if taint := HealthTaint("gpu.example.com", "x", resourceapi.DeviceTaintEffectNoExecute, time.Time{}); taint.TimeAdded != nil || taint.Key != "gpu.example.com/unhealthy" {
		t.Errorf("taint without a time = %+v", taint)
	}
}

func TestParseTaintEffect(t *testing.T) {
	for in, want := range map[string]resourceapi.DeviceTaintEffect{"": "NoSchedule", "NoSchedule": "NoSchedule", "NoExecute": "NoExecute"} {
		if got, err := ParseTaintEffect(in); err != nil || got != want {
			t.Errorf("ParseTaintEffect(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"None", "noschedule", "PreferNoSchedule"} {
		if _, err := ParseTaintEffect(bad); err == nil {
			t.Errorf("ParseTaintEffect(%q) succeeded", bad)
		}
	}
}

func TestWithTaintsCopiesAndSplitsSlices(t *testing.T) {
	devices := make([]resourceapi.Device, 100)
	for i := range devices {
		devices[i].Name = "gpu-" + strconv.Itoa(i)
	}
	devices[3].Taints = []resourceapi.DeviceTaint{{Key: "example.com/own", Effect: resourceapi.DeviceTaintEffectNoSchedule}}
	taint := HealthTaint("gpu.nvidia.com", "xid-79", resourceapi.DeviceTaintEffectNoExecute, time.Now())

	tainted := WithTaints(devices, map[string][]resourceapi.DeviceTaint{"gpu-3": {taint}, "gpu-70": {taint}, "gpu-nope": {taint}})
	if len(devices[3].Taints) != 1 || devices[70].Taints != nil {
		t.Fatalf("WithTaints modified its input: %v / %v", devices[3].Taints, devices[70].Taints)
	}
	if got := tainted[3].Taints; len(got) != 2 || got[0].Key != "example.com/own" || got[1].Value != "xid-79" {
		t.Errorf("gpu-3 taints = %+v, want its own then the health taint", got)
	}
	for i, d := range tainted {
		if d.Name != devices[i].Name {
			t.Fatalf("device %d is %s, want %s: order changed", i, d.Name, devices[i].Name)
		}
		if want := i == 3 || i == 70; want != (len(d.Taints) > 0) {
			t.Errorf("%s taints = %v", d.Name, d.Taints)
		}
	}

	// The same devices fill one slice untainted, but slices of at most 64
	// devices once a health taint is on any of them.
	if got := sliceSizes(DriverResources("node-a", WithTaints(devices[4:], nil), nil)); len(got) != 1 || got[0] != 96 {
		t.Errorf("untainted slice sizes = %v, want [96]", got)
	}
	if got := sliceSizes(DriverResources("node-a", tainted, nil)); len(got) != 2 || got[0] != 64 || got[1] != 36 {
		t.Errorf("tainted slice sizes = %v, want [64 36]", got)
	}
}

func sliceSizes(r draresourceslice.DriverResources) []int {
	var sizes []int
	for _, s := range r.Pools["node-a"].Slices {
		sizes = append(sizes, len(s.Devices))
	}
	return sizes
}

package resourceslice

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
)

func TestParseConsumableCapacity(t *testing.T) {
	for _, tc := range []struct {
		in        string
		want      ConsumableCapacity
		canonical string
	}{
		{"", ConsumableCapacity{}, "disabled"},
		{"disabled", ConsumableCapacity{}, "disabled"},
		{"unlimited", ConsumableCapacity{Mode: ConsumableUnlimited}, "unlimited"},
		{"memory", ConsumableCapacity{Mode: ConsumableMemory}, "memory"},
		{"1", ConsumableCapacity{Mode: ConsumableShares, Shares: 1}, "1"},
		{"4", ConsumableCapacity{Mode: ConsumableShares, Shares: 4}, "4"},
		{"1000", ConsumableCapacity{Mode: ConsumableShares, Shares: 1000}, "1000"},
	} {
		got, err := ParseConsumableCapacity(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseConsumableCapacity(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		if s := got.String(); s != tc.canonical {
			t.Errorf("%q: String() = %q, want %q", tc.in, s, tc.canonical)
		}
		if again, err := ParseConsumableCapacity(got.String()); err != nil || again != got {
			t.Errorf("%q: String() %q does not parse back: %+v, %v", tc.in, got.String(), again, err)
		}
		if got.Enabled() != (tc.canonical != "disabled") {
			t.Errorf("%q: Enabled() = %v", tc.in, got.Enabled())
		}
		var v ConsumableCapacity
		if err := v.Set(tc.in); err != nil || v != tc.want {
			t.Errorf("Set(%q) = %v, value %+v", tc.in, err, v)
		}
	}

	for _, bad := range []string{"0", "-1", "1001", "99999999999999999999", "04", "+4", " 4", "4 ", "1.5", "1e3",
		"Memory", "UNLIMITED", "none", "off", "true", "shares", "memory,4"} {
		got, err := ParseConsumableCapacity(bad)
		if err == nil {
			t.Errorf("ParseConsumableCapacity(%q) = %+v, want an error", bad, got)
			continue
		}
		for _, want := range []string{fmt.Sprintf("%q", bad), `"disabled"`, `"unlimited"`, `"memory"`, "1 to 1000"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseConsumableCapacity(%q): error %q does not mention %s", bad, err, want)
			}
		}
		v := ConsumableCapacity{Mode: ConsumableMemory}
		if err := v.Set(bad); err == nil || v != (ConsumableCapacity{Mode: ConsumableMemory}) {
			t.Errorf("Set(%q) = %v and changed the value to %+v", bad, err, v)
		}
	}

	// Values that the parser never returns are neither enabled nor printed
	// as a valid option value.
	for _, invalid := range []ConsumableCapacity{
		{Mode: ConsumableShares}, {Mode: ConsumableShares, Shares: 1001}, {Mode: ConsumableShares, Shares: -1},
		{Mode: ConsumableMemory, Shares: 4}, {Mode: ConsumableMode(42)},
	} {
		if invalid.Enabled() {
			t.Errorf("%+v is enabled", invalid)
		}
		if _, err := ParseConsumableCapacity(invalid.String()); err == nil {
			t.Errorf("%+v prints as %q, which parses", invalid, invalid.String())
		}
	}
}

// checkRequestPolicies returns what the API server's validation of a
// device's capacities would reject (k8s.io/kubernetes is not a dependency,
// so its rules are restated here), plus the rule that Default and Max are
// multiples of Step themselves.
func checkRequestPolicies(d resourceapi.Device) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, d.Name+": "+fmt.Sprintf(format, args...)) }
	multiAlloc := d.AllowMultipleAllocations != nil && *d.AllowMultipleAllocations
	for name, c := range d.Capacity {
		if c.Value.Sign() < 0 {
			bad("%s: negative value %s", name, c.Value.String())
		}
		p := c.RequestPolicy
		if p == nil {
			continue
		}
		if !multiAlloc {
			bad("%s: a request policy without allowMultipleAllocations", name)
		}
		if len(p.ValidValues) > 0 && p.ValidRange != nil {
			bad("%s: both validValues and validRange", name)
		}
		if (len(p.ValidValues) > 0 || p.ValidRange != nil) && p.Default == nil {
			bad("%s: no default", name)
			continue
		}
		r := p.ValidRange
		if r == nil {
			continue
		}
		if r.Min == nil {
			bad("%s: validRange without min", name)
			continue
		}
		def := *p.Default
		if r.Min.Sign() < 0 || r.Min.Cmp(c.Value) > 0 {
			bad("%s: min %s outside [0, %s]", name, r.Min.String(), c.Value.String())
		}
		if def.Cmp(*r.Min) < 0 {
			bad("%s: default %s below min %s", name, def.String(), r.Min.String())
		}
		if r.Max != nil {
			if r.Min.Cmp(*r.Max) > 0 || r.Max.Cmp(c.Value) > 0 {
				bad("%s: max %s outside [min %s, value %s]", name, r.Max.String(), r.Min.String(), c.Value.String())
			}
			if def.Cmp(*r.Max) > 0 {
				bad("%s: default %s above max %s", name, def.String(), r.Max.String())
			}
		}
		if r.Step == nil {
			continue
		}
		if r.Step.Sign() <= 0 {
			bad("%s: step %s is not positive", name, r.Step.String())
			continue
		}
		sum := r.Min.DeepCopy()
		sum.Add(*r.Step)
		if sum.Cmp(c.Value) > 0 {
			bad("%s: min %s + step %s exceeds the value %s", name, r.Min.String(), r.Step.String(), c.Value.String())
		}
		step, lo := r.Step.Value(), r.Min.Value()
		for what, q := range map[string]*resource.Quantity{"default": &def, "max": r.Max} {
			if q == nil {
				continue
			}
			if (q.Value()-lo)%step != 0 {
				bad("%s: %s %s is not min %s plus a multiple of step %s", name, what, q.String(), r.Min.String(), r.Step.String())
			}
			if q.Value()%step != 0 {
				bad("%s: %s %s is not a multiple of step %s", name, what, q.String(), r.Step.String())
			}
		}
	}
	return errs
}

func TestCheckRequestPoliciesRejects(t *testing.T) {
	q := func(s string) *resource.Quantity { return ptrTo(resource.MustParse(s)) }
	dev := func(value string, p resourceapi.CapacityRequestPolicy) resourceapi.Device {
		return resourceapi.Device{Name: "d", AllowMultipleAllocations: ptrTo(true),
			Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{"memory": {Value: resource.MustParse(value), RequestPolicy: &p}}}
	}
	rng := func(def, minimum, maximum, step string) resourceapi.CapacityRequestPolicy {
		p := resourceapi.CapacityRequestPolicy{Default: q(def), ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: q(minimum), Max: q(maximum)}}
		if step != "" {
			p.ValidRange.Step = q(step)
		}
		return p
	}
	if errs := checkRequestPolicies(dev("8Gi", rng("8Gi", "1Mi", "8Gi", "1Mi"))); len(errs) != 0 {
		t.Errorf("a valid policy is rejected: %v", errs)
	}
	noMulti := dev("8Gi", rng("0", "0", "8Gi", "1Mi"))
	noMulti.AllowMultipleAllocations = nil
	for name, d := range map[string]resourceapi.Device{
		"default above max":          dev("8Gi", rng("9Gi", "0", "8Gi", "1Mi")),
		"default below min":          dev("8Gi", rng("0", "1Mi", "8Gi", "1Mi")),
		"max above value":            dev("8Gi", rng("0", "0", "9Gi", "1Mi")),
		"min above value":            dev("8Gi", rng("9Gi", "9Gi", "9Gi", "")),
		"max off step":               dev("8Gi", rng("0", "0", "4097Ki", "1Mi")),
		"default off step":           dev("8Gi", rng("1536Ki", "0", "8Gi", "1Mi")),
		"min plus step above value":  dev("1", rng("1", "1", "1", "1")),
		"no default":                 dev("8Gi", resourceapi.CapacityRequestPolicy{ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: q("0")}}),
		"policy without multi alloc": noMulti,
	} {
		if errs := checkRequestPolicies(d); len(errs) == 0 {
			t.Errorf("%s: not rejected", name)
		}
	}
}

// wantMemoryPolicy is the memory capacity of a shared mock H100 (81920Mi)
// in mode c.
func wantMemoryPolicy(c ConsumableCapacity) resourceapi.DeviceCapacity {
	q := func(s string) *resource.Quantity { return ptrTo(resource.MustParse(s)) }
	p := &resourceapi.CapacityRequestPolicy{Default: q("0"), ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: q("0"), Max: q("81920Mi"), Step: q("1Mi")}}
	if c.Mode == ConsumableMemory {
		p.Default, p.ValidRange.Min = q("81920Mi"), q("1Mi")
	}
	return resourceapi.DeviceCapacity{Value: resource.MustParse("81920Mi"), RequestPolicy: p}
}

// sameCapacity compares capacities by value (Quantity.Cmp).
func sameCapacity(t *testing.T, what string, got, want resourceapi.DeviceCapacity) {
	t.Helper()
	eq := func(a, b *resource.Quantity) bool { return (a == nil) == (b == nil) && (a == nil || a.Cmp(*b) == 0) }
	str := func(a *resource.Quantity) string {
		if a == nil {
			return "<nil>"
		}
		return a.String()
	}
	if got.Value.Cmp(want.Value) != 0 {
		t.Errorf("%s: value %s, want %s", what, got.Value.String(), want.Value.String())
	}
	g, w := got.RequestPolicy, want.RequestPolicy
	if (g == nil) != (w == nil) {
		t.Fatalf("%s: request policy %+v, want %+v", what, g, w)
	}
	if g == nil {
		return
	}
	if !eq(g.Default, w.Default) || len(g.ValidValues) != 0 || (g.ValidRange == nil) != (w.ValidRange == nil) {
		t.Fatalf("%s: request policy default %s, validValues %v, validRange %+v; want default %s, range %+v",
			what, str(g.Default), g.ValidValues, g.ValidRange, str(w.Default), w.ValidRange)
	}
	gr, wr := g.ValidRange, w.ValidRange
	if !eq(gr.Min, wr.Min) || !eq(gr.Max, wr.Max) || !eq(gr.Step, wr.Step) {
		t.Errorf("%s: range {min %s, max %s, step %s}, want {min %s, max %s, step %s}",
			what, str(gr.Min), str(gr.Max), str(gr.Step), str(wr.Min), str(wr.Max), str(wr.Step))
	}
}

// TestDevicesConsumableH100: every GPU of the mock H100 machine is
// published shared, with the capacities and policies of each mode, which
// the API accepts; nothing else about the device changes.
func TestDevicesConsumableH100(t *testing.T) {
	inv := mockInventory(t, "dgxh100", "node-1")
	set := devices.FromInventory(inv)
	plain := Devices(inv, set, Options{PCIeRoot: fakePCIeRoot})
	for _, mode := range []string{"disabled", "unlimited", "memory", "4", "1", "1000"} {
		t.Run(mode, func(t *testing.T) {
			c, err := ParseConsumableCapacity(mode)
			if err != nil {
				t.Fatal(err)
			}
			devs := Devices(inv, set, Options{PCIeRoot: fakePCIeRoot, ConsumableCapacity: c})
			if mode == "disabled" {
				if !reflect.DeepEqual(devs, plain) {
					t.Error("disabled consumable capacity changes the devices")
				}
				return
			}
			if len(devs) != 8 {
				t.Fatalf("%d devices, want 8", len(devs))
			}
			for i, d := range devs {
				if inv.Devices[i].MemoryBytes != 81920*mib {
					t.Fatalf("mock GPU %d has %d bytes, want 81920Mi", i, inv.Devices[i].MemoryBytes)
				}
				if d.AllowMultipleAllocations == nil || !*d.AllowMultipleAllocations {
					t.Errorf("%s: allowMultipleAllocations %v", d.Name, d.AllowMultipleAllocations)
				}
				sameCapacity(t, d.Name+" memory", d.Capacity[CapacityMemory], wantMemoryPolicy(c))
				if d.Capacity[CapacityMemory].Value.Format != resource.BinarySI {
					t.Errorf("%s: memory is not a binary-SI quantity", d.Name)
				}
				wantCaps := 1
				if c.Mode == ConsumableShares {
					wantCaps = 2
					n := fmt.Sprint(c.Shares)
					want := resourceapi.DeviceCapacity{Value: resource.MustParse(n), RequestPolicy: &resourceapi.CapacityRequestPolicy{
						Default: ptrTo(resource.MustParse("1")),
						ValidRange: &resourceapi.CapacityRequestPolicyRange{
							Min: ptrTo(resource.MustParse("1")), Max: ptrTo(resource.MustParse(n)), Step: ptrTo(resource.MustParse("1")),
						},
					}}
					if c.Shares == 1 {
						// min 1 + step 1 would exceed the value 1.
						want.RequestPolicy.ValidRange.Step = nil
					}
					sameCapacity(t, d.Name+" shares", d.Capacity[CapacityShares], want)
				}
				if len(d.Capacity) != wantCaps {
					t.Errorf("%s: capacities %v, want %d", d.Name, d.Capacity, wantCaps)
				}
				for _, e := range checkRequestPolicies(d) {
					t.Error(e)
				}
				checkAPILimits(t, d)
				// Everything else is as without sharing.
				p := plain[i]
				p.AllowMultipleAllocations, p.Capacity = d.AllowMultipleAllocations, d.Capacity
				if !reflect.DeepEqual(d, p) {
					t.Errorf("%s differs from the unshared device beyond sharing:\n%+v\n%+v", d.Name, d, plain[i])
				}
			}
			// Shared devices do not lower the per-slice limit.
			res := DriverResources("node-a", devs, nil)
			if got := sliceSizes(res); !slices.Equal(got, []int{8}) {
				t.Errorf("slice sizes %v", got)
			}
			checkPoolIsValid(t, res)
		})
	}
}

// TestDevicesConsumableOnlyPlainGPUs: MIG devices, partitionable GPUs and
// their partitions and unusable GPUs are published as without sharing; a
// GPU's memory is rounded down to a whole MiB, and one too small for a
// valid policy is not shared.
func TestDevicesConsumableOnlyPlainGPUs(t *testing.T) {
	inv, opts := h100Node(5)
	// gpu-0: partitionable. gpu-1: in MIG mode with one MIG device.
	inv.Devices[1].MIGEnabled = true
	delete(opts.Partitionable, inv.Devices[1].UUID)
	inv.MIGDevices = []inventory.MIGDevice{{UUID: "MIG-1", ParentIndex: 1, ParentUUID: inv.Devices[1].UUID, Profile: "3g.40gb",
		GPUInstanceID: 1, MemoryBytes: 40448 * mib, Multiprocessors: 60}}
	// gpu-2: plain, memory not a whole MiB. gpu-3: plain, 2Mi - 1 byte.
	// gpu-4: plain, 3Mi - 1 byte: 2Mi after rounding, the least shared.
	inv.Devices[2].MemoryBytes = 80<<30 + 12345
	inv.Devices[3].MemoryBytes = 2*mib - 1
	inv.Devices[4].MemoryBytes = 3*mib - 1
	for _, uuid := range []string{inv.Devices[2].UUID, inv.Devices[3].UUID, inv.Devices[4].UUID} {
		delete(opts.Partitionable, uuid)
	}
	inv.Unusable = []inventory.UnusableDevice{{Index: 5, Minor: -1, UUID: "GPU-lost"}}
	set := devices.FromInventoryWith(inv, opts)

	for _, mode := range []string{"memory", "unlimited", "3"} {
		t.Run(mode, func(t *testing.T) {
			c, _ := ParseConsumableCapacity(mode)
			plain := Devices(inv, set, Options{})
			shared := Devices(inv, set, Options{ConsumableCapacity: c})
			if len(plain) != len(shared) {
				t.Fatalf("%d devices shared, %d not", len(shared), len(plain))
			}
			var sharedNames []string
			for i, d := range shared {
				if d.AllowMultipleAllocations == nil {
					if !reflect.DeepEqual(d, plain[i]) {
						t.Errorf("%s is not shared but differs from its unshared self", d.Name)
					}
					continue
				}
				sharedNames = append(sharedNames, d.Name)
				for _, e := range checkRequestPolicies(d) {
					t.Error(e)
				}
			}
			if !slices.Equal(sharedNames, []string{"gpu-2", "gpu-4"}) {
				t.Errorf("shared devices %v, want gpu-2 and gpu-4", sharedNames)
			}
			byName := map[string]resourceapi.Device{}
			for _, d := range shared {
				byName[d.Name] = d
			}
			if got := byName["gpu-2"].Capacity[CapacityMemory]; got.Value.Cmp(resource.MustParse("80Gi")) != 0 ||
				got.RequestPolicy.ValidRange.Max.Cmp(resource.MustParse("80Gi")) != 0 {
				t.Errorf("gpu-2: memory %s, max %s, want both 80Gi", got.Value.String(), got.RequestPolicy.ValidRange.Max.String())
			}
			if got := byName["gpu-4"].Capacity[CapacityMemory].Value; got.Cmp(resource.MustParse("2Mi")) != 0 {
				t.Errorf("gpu-4: memory %s, want 2Mi", got.String())
			}
			for _, name := range []string{"gpu-0", "gpu-1-mig-3g40gb-1", "gpu-0-mig-7g80gb-0-0"} {
				if _, ok := byName[name]; !ok {
					t.Errorf("%s missing", name)
				}
			}
			un := UnusableDevices(inv, driverName, Options{ConsumableCapacity: c})
			if want := UnusableDevices(inv, driverName, Options{}); !reflect.DeepEqual(un, want) || un[0].AllowMultipleAllocations != nil {
				t.Errorf("unusable devices with sharing %+v, want %+v", un, want)
			}
			checkPoolIsValid(t, DriverResources("node-a", append(shared, un...), CounterSets(set)))
		})
	}
}

// TestDriverResourcesSharedDevicesKeepTheLimit: allowMultipleAllocations
// is not one of the features that lower the per-slice device limit.
func TestDriverResourcesSharedDevicesKeepTheLimit(t *testing.T) {
	devs := syntheticDevices(200)
	c := ConsumableCapacity{Mode: ConsumableShares, Shares: 4}
	for i := range devs {
		c.makeConsumable(&devs[i], 80<<30)
		if devs[i].AllowMultipleAllocations == nil {
			t.Fatal("not shared")
		}
	}
	if got := checkPool(t, "n", devs, devs, MaxDevicesPerSlice); !slices.Equal(got, []int{128, 72}) {
		t.Errorf("slice sizes %v, want [128 72]", got)
	}
}

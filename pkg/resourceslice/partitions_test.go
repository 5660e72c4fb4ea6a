package resourceslice

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

const mib = 1 << 20

// h100Layout is the MIG layout of an H100 80GB HBM3 as NVML reports it.
func h100Layout(uuid string) inventory.MIGLayout {
	pl := func(size int, starts ...int) []inventory.MIGPlacement {
		var out []inventory.MIGPlacement
		for _, s := range starts {
			out = append(out, inventory.MIGPlacement{Start: s, Size: size})
		}
		return out
	}
	p := func(id int, name string, slices uint32, memMiB uint64, sm, ce, dec, jpeg, ofa uint32, placements []inventory.MIGPlacement) inventory.MIGProfile {
		ci, _ := inventory.ComputeInstanceProfileFor(slices)
		return inventory.MIGProfile{Name: name, GPUInstanceProfileID: id, ComputeInstanceProfileID: ci, Slices: slices,
			MemoryBytes: memMiB * mib, Multiprocessors: sm, CopyEngines: ce, Decoders: dec, JPEGs: jpeg, OFAs: ofa,
			Placements: placements}
	}
	return inventory.MIGLayout{
		ParentUUID:     uuid,
		MemorySlices:   8,
		ModeSwitchable: true,
		Profiles: []inventory.MIGProfile{
			p(0, "7g.80gb", 7, 81152, 132, 8, 7, 7, 1, pl(8, 0)),
			p(5, "4g.40gb", 4, 40448, 64, 4, 4, 4, 0, pl(4, 0)),
			p(9, "3g.40gb", 3, 40448, 60, 3, 3, 3, 0, pl(4, 0, 4)),
			p(14, "2g.20gb", 2, 20096, 32, 2, 2, 2, 0, pl(2, 0, 2, 4)),
			p(15, "1g.20gb", 1, 20096, 26, 1, 1, 1, 0, pl(2, 0, 2, 4, 6)),
			p(19, "1g.10gb", 1, 9984, 16, 1, 1, 1, 0, pl(1, 0, 1, 2, 3, 4, 5, 6)),
			p(20, "1g.10gb+me", 1, 9984, 16, 1, 1, 1, 1, pl(1, 0, 1, 2, 3, 4, 5, 6)),
		},
	}
}

// h100Node returns an inventory of n H100 GPUs out of MIG mode and the
// options that make every one of them partitionable.
func h100Node(n int) (*inventory.Inventory, devices.Options) {
	inv := &inventory.Inventory{DriverVersion: "580.65.06", CUDADriverVersion: "13.0"}
	opts := devices.Options{Partitionable: map[string]inventory.MIGLayout{}}
	for i := range n {
		d := inventory.Device{
			Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%08d-h100", i),
			ProductName: "NVIDIA H100 80GB HBM3", Brand: "Nvidia", Architecture: "Hopper",
			CUDAComputeCapability: "9.0", MemoryBytes: 80 << 30,
			PCIBusID: fmt.Sprintf("0000:%02x:00.0", 0x18+i), MIGCapable: true,
		}
		inv.Devices = append(inv.Devices, d)
		opts.Partitionable[d.UUID] = h100Layout(d.UUID)
	}
	return inv, opts
}

func count(n int64) resourceapi.Counter {
	return resourceapi.Counter{Value: *resource.NewQuantity(n, resource.DecimalSI)}
}

func bytesCounter(n int64) resourceapi.Counter {
	return resourceapi.Counter{Value: *resource.NewQuantity(n, resource.BinarySI)}
}

// wantH100Counters are the counters of an H100's counter set.
func wantH100Counters() map[string]resourceapi.Counter {
	want := map[string]resourceapi.Counter{
		"memory":          bytesCounter(80 << 30), // the GPU's 80Gi is more than 7g.80gb's 81152Mi
		"multiprocessors": count(132),
		"copy-engines":    count(8),
		"decoders":        count(7),
		"encoders":        count(0),
		"jpeg-engines":    count(7),
		"ofa-engines":     count(1),
	}
	for i := range 8 {
		want[fmt.Sprintf("memory-slice-%d", i)] = count(1)
	}
	return want
}

// sameCounters compares counter maps by value (Quantity.Cmp), so that
// equal quantities in different internal forms compare equal.
func sameCounters(t *testing.T, what string, got, want map[string]resourceapi.Counter) {
	t.Helper()
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: counter %q missing", what, name)
			continue
		}
		if g.Value.Cmp(w.Value) != 0 {
			t.Errorf("%s: counter %q = %s, want %s", what, name, g.Value.String(), w.Value.String())
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: unexpected counter %q = %s", what, name, ptrTo(got[name].Value).String())
		}
	}
}

func TestCounterSetsH100(t *testing.T) {
	inv, opts := h100Node(2)
	sets := CounterSets(devices.FromInventoryWith(inv, opts))
	if len(sets) != 2 || sets[0].Name != "gpu-0-counter-set" || sets[1].Name != "gpu-1-counter-set" {
		t.Fatalf("counter sets %v, want gpu-0-counter-set and gpu-1-counter-set", counterSetNames(sets))
	}
	for _, s := range sets {
		sameCounters(t, s.Name, s.Counters, wantH100Counters())
		if got := s.Counters[CounterMemory].Value.Format; got != resource.BinarySI {
			t.Errorf("%s: memory in %s, want BinarySI", s.Name, got)
		}
	}
	if CounterSetName(inv.Devices[1]) != "gpu-1-counter-set" || MemorySliceCounter(7) != "memory-slice-7" {
		t.Errorf("names: %q, %q", CounterSetName(inv.Devices[1]), MemorySliceCounter(7))
	}

	// Fresh values on every call.
	sets[0].Counters[CounterMemory] = count(1)
	again := CounterSets(devices.FromInventoryWith(inv, opts))
	sameCounters(t, "second call", again[0].Counters, wantH100Counters())

	// No partitions, no counter sets.
	for name, set := range map[string]*devices.Set{
		"nil":                nil,
		"not partitionable":  devices.FromInventory(inv),
		"empty":              devices.FromInventory(nil),
		"without partitions": devices.FromInventoryWith(inv, devices.Options{Partitionable: map[string]inventory.MIGLayout{inv.Devices[0].UUID: {}}}),
	} {
		if got := CounterSets(set); got == nil || len(got) != 0 {
			t.Errorf("%s: CounterSets = %#v, want empty non-nil", name, got)
		}
	}
}

func counterSetNames(sets []resourceapi.CounterSet) []string {
	var out []string
	for _, s := range sets {
		out = append(out, s.Name)
	}
	return out
}

func TestDevicesPartitionableH100(t *testing.T) {
	inv, opts := h100Node(1)
	gpu := inv.Devices[0]
	devs := Devices(inv, devices.FromInventoryWith(inv, opts), Options{PCIeRoot: fakePCIeRoot})
	if len(devs) != 26 {
		t.Fatalf("%d devices, want the GPU and 25 partitions: %v", len(devs), deviceNamesOf(devs))
	}
	plain := Devices(inv, devices.FromInventory(inv), Options{PCIeRoot: fakePCIeRoot})[0]

	// The whole GPU: as published when not partitionable, and it consumes
	// all of its counter set.
	whole := devs[0]
	if whole.Name != "gpu-0" || !reflect.DeepEqual(whole.Attributes, plain.Attributes) || !reflect.DeepEqual(whole.Capacity, plain.Capacity) {
		t.Errorf("whole GPU %+v differs from the non-partitionable %+v", whole, plain)
	}
	if len(whole.ConsumesCounters) != 1 || whole.ConsumesCounters[0].CounterSet != "gpu-0-counter-set" {
		t.Fatalf("whole GPU consumes %+v, want one consumption of gpu-0-counter-set", whole.ConsumesCounters)
	}
	sameCounters(t, "whole GPU", whole.ConsumesCounters[0].Counters, wantH100Counters())
	if len(plain.ConsumesCounters) != 0 {
		t.Errorf("a non-partitionable GPU consumes counters: %+v", plain.ConsumesCounters)
	}

	type want struct {
		profile                   string
		memMiB                    int64
		sm, ce, dec, enc, jpg, of int64
		slices                    []int
	}
	wants := map[string]want{
		"gpu-0-mig-7g80gb-0-0":     {"7g.80gb", 81152, 132, 8, 7, 0, 7, 1, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		"gpu-0-mig-4g40gb-5-0":     {"4g.40gb", 40448, 64, 4, 4, 0, 4, 0, []int{0, 1, 2, 3}},
		"gpu-0-mig-3g40gb-9-4":     {"3g.40gb", 40448, 60, 3, 3, 0, 3, 0, []int{4, 5, 6, 7}},
		"gpu-0-mig-3g40gb-9-0":     {"3g.40gb", 40448, 60, 3, 3, 0, 3, 0, []int{0, 1, 2, 3}},
		"gpu-0-mig-2g20gb-14-2":    {"2g.20gb", 20096, 32, 2, 2, 0, 2, 0, []int{2, 3}},
		"gpu-0-mig-1g20gb-15-6":    {"1g.20gb", 20096, 26, 1, 1, 0, 1, 0, []int{6, 7}},
		"gpu-0-mig-1g10gb-19-0":    {"1g.10gb", 9984, 16, 1, 1, 0, 1, 0, []int{0}},
		"gpu-0-mig-1g10gb-19-6":    {"1g.10gb", 9984, 16, 1, 1, 0, 1, 0, []int{6}},
		"gpu-0-mig-1g10gb-me-20-3": {"1g.10gb+me", 9984, 16, 1, 1, 0, 1, 1, []int{3}},
	}
	profiles := map[string]int{}
	for _, d := range devs[1:] {
		checkAPILimits(t, d)
		if errs := validation.IsDNS1123Label(d.Name); len(errs) > 0 {
			t.Errorf("%s: not a DNS label: %v", d.Name, errs)
		}
		// Attributes: the parent's, type mig, parentUUID and profile;
		// nothing that only a created MIG device has.
		wantAttrs := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{}
		for name, a := range plain.Attributes {
			wantAttrs[name] = a
		}
		delete(wantAttrs, AttrUUID)
		delete(wantAttrs, AttrMIGCapable)
		wantAttrs[AttrType] = resourceapi.DeviceAttribute{StringValue: ptrTo("mig")}
		wantAttrs[AttrParentUUID] = resourceapi.DeviceAttribute{StringValue: ptrTo(gpu.UUID)}
		profile := stringAttr(t, d, AttrProfile)
		wantAttrs[AttrProfile] = resourceapi.DeviceAttribute{StringValue: ptrTo(profile)}
		if !reflect.DeepEqual(d.Attributes, wantAttrs) {
			t.Errorf("%s: attributes %v, want %v", d.Name, d.Attributes, wantAttrs)
		}
		profiles[profile]++

		if len(d.ConsumesCounters) != 1 || d.ConsumesCounters[0].CounterSet != "gpu-0-counter-set" {
			t.Fatalf("%s consumes %+v, want one consumption of gpu-0-counter-set", d.Name, d.ConsumesCounters)
		}
		w, ok := wants[d.Name]
		if !ok {
			continue
		}
		if profile != w.profile {
			t.Errorf("%s: profile %q, want %q", d.Name, profile, w.profile)
		}
		dec := func(n int64) resourceapi.DeviceCapacity {
			return resourceapi.DeviceCapacity{Value: *resource.NewQuantity(n, resource.DecimalSI)}
		}
		wantCap := map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			CapacityMemory:          {Value: *resource.NewQuantity(w.memMiB*mib, resource.BinarySI)},
			CapacityMultiprocessors: dec(w.sm), CapacityCopyEngines: dec(w.ce), CapacityDecoders: dec(w.dec),
			CapacityEncoders: dec(w.enc), CapacityJPEGEngines: dec(w.jpg), CapacityOFAEngines: dec(w.of),
		}
		if !reflect.DeepEqual(d.Capacity, wantCap) {
			t.Errorf("%s: capacity %v, want %v", d.Name, d.Capacity, wantCap)
		}
		wantCounters := map[string]resourceapi.Counter{
			"memory": bytesCounter(w.memMiB * mib), "multiprocessors": count(w.sm), "copy-engines": count(w.ce),
			"decoders": count(w.dec), "encoders": count(w.enc), "jpeg-engines": count(w.jpg), "ofa-engines": count(w.of),
		}
		for _, s := range w.slices {
			wantCounters[MemorySliceCounter(s)] = count(1)
		}
		sameCounters(t, d.Name, d.ConsumesCounters[0].Counters, wantCounters)
		delete(wants, d.Name)
	}
	if len(wants) != 0 {
		t.Errorf("partitions not published: %v", wants)
	}
	wantProfiles := map[string]int{"7g.80gb": 1, "4g.40gb": 1, "3g.40gb": 2, "2g.20gb": 3, "1g.20gb": 4, "1g.10gb": 7, "1g.10gb+me": 7}
	if !reflect.DeepEqual(profiles, wantProfiles) {
		t.Errorf("partitions per profile %v, want %v", profiles, wantProfiles)
	}

	// Independent values: a caller may modify one device's counters.
	devs[1].ConsumesCounters[0].Counters[CounterMemory] = count(0)
	if mem := devs[0].ConsumesCounters[0].Counters[CounterMemory]; mem.Value.IsZero() {
		t.Error("devices share their counter maps")
	}
}

// TestDevicesMixedPartitionable: only the GPUs the set makes partitionable
// change; the others, static MIG devices and unusable GPUs are published
// as without partitions.
func TestDevicesMixedPartitionable(t *testing.T) {
	inv, opts := h100Node(4)
	// gpu-1: in MIG mode, not partitionable, one static MIG device.
	inv.Devices[1].MIGEnabled = true
	delete(opts.Partitionable, inv.Devices[1].UUID)
	inv.MIGDevices = []inventory.MIGDevice{{UUID: "MIG-1", ParentIndex: 1, ParentUUID: inv.Devices[1].UUID, Profile: "3g.40gb",
		GPUInstanceID: 1, MemoryBytes: 40448 * mib, Multiprocessors: 60}}
	// gpu-2: not partitionable.
	delete(opts.Partitionable, inv.Devices[2].UUID)
	// gpu-3: in MIG mode and unable to leave it: partitions only.
	inv.Devices[3].MIGEnabled = true
	l := opts.Partitionable[inv.Devices[3].UUID]
	l.ModeSwitchable = false
	opts.Partitionable[inv.Devices[3].UUID] = l
	inv.Unusable = []inventory.UnusableDevice{{Index: 4, Minor: -1}}

	plain := Devices(inv, devices.FromInventory(inv), Options{})
	mixed := Devices(inv, devices.FromInventoryWith(inv, opts), Options{})
	byName := map[string]resourceapi.Device{}
	for _, d := range mixed {
		byName[d.Name] = d
	}
	for _, name := range []string{"gpu-2", "gpu-1-mig-3g40gb-1"} {
		i := slices.IndexFunc(plain, func(d resourceapi.Device) bool { return d.Name == name })
		if i < 0 || !reflect.DeepEqual(byName[name], plain[i]) {
			t.Errorf("%s published differently with partitionable GPUs:\n%+v\nwant\n%+v", name, byName[name], plain[i])
		}
	}
	if _, ok := byName["gpu-3"]; ok {
		t.Error("gpu-3 cannot leave MIG mode but is published whole")
	}
	if n := len(mixed); n != 26+1+25+1 {
		t.Errorf("%d devices, want 53: %v", n, deviceNamesOf(mixed))
	}
	sets := CounterSets(devices.FromInventoryWith(inv, opts))
	if got := counterSetNames(sets); !slices.Equal(got, []string{"gpu-0-counter-set", "gpu-3-counter-set"}) {
		t.Errorf("counter sets %v, want those of gpu-0 and gpu-3", got)
	}
	for _, d := range mixed {
		if c := d.ConsumesCounters; len(c) > 0 && !strings.HasPrefix(d.Name, "gpu-0") && !strings.HasPrefix(d.Name, "gpu-3-") {
			t.Errorf("%s consumes counters %+v", d.Name, c)
		}
	}
	unusable := UnusableDevices(inv, driverName, Options{})
	if len(unusable) != 1 || len(unusable[0].ConsumesCounters) != 0 {
		t.Errorf("unusable devices %+v", unusable)
	}
	checkPoolIsValid(t, DriverResources("node-a", append(mixed, unusable...), sets))
}

func TestDriverResourcesWithCounters(t *testing.T) {
	inv, opts := h100Node(8)
	set := devices.FromInventoryWith(inv, opts)
	devs, sets := Devices(inv, set, Options{PCIeRoot: fakePCIeRoot}), CounterSets(set)
	if len(devs) != 208 || len(sets) != 8 {
		t.Fatalf("%d devices and %d counter sets, want 208 and 8", len(devs), len(sets))
	}
	res := DriverResources("node-a", devs, sets)
	checkPoolIsValid(t, res)
	pool := res.Pools["node-a"]
	if got := shape(pool); got != "[c8 d64 d64 d64 d16]" {
		t.Errorf("slices %s, want [c8 d64 d64 d64 d16]", got)
	}
	var names []string
	for _, s := range pool.Slices {
		names = append(names, deviceNamesOf(s.Devices)...)
	}
	if !slices.Equal(names, deviceNamesOf(devs)) {
		t.Error("the slices do not hold the devices in their order")
	}
	if !slices.Equal(counterSetNames(pool.Slices[0].SharedCounters), counterSetNames(sets)) {
		t.Error("the counter sets are not in their order")
	}
	if again := DriverResources("node-a", devs, sets); !reflect.DeepEqual(again, res) {
		t.Error("two calls with the same input differ")
	}

	for _, tc := range []struct {
		name     string
		devices  int
		counters int
		want     string
	}{
		{"nothing", 0, 0, "[d0]"},
		{"counters only", 0, 3, "[c3]"},
		{"nine counter sets", 1, 9, "[c8 c1 d1]"},
		{"sixteen counter sets", 0, 16, "[c8 c8]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cs []resourceapi.CounterSet
			for i := range tc.counters {
				cs = append(cs, resourceapi.CounterSet{Name: fmt.Sprintf("gpu-%d-counter-set", i), Counters: map[string]resourceapi.Counter{"memory": count(1)}})
			}
			ds := syntheticDevices(tc.devices)
			if len(ds) > 0 && len(cs) > 0 {
				ds[0].ConsumesCounters = []resourceapi.DeviceCounterConsumption{{CounterSet: cs[0].Name, Counters: map[string]resourceapi.Counter{"memory": count(1)}}}
			}
			res := DriverResources("node-a", ds, cs)
			if got := shape(res.Pools["node-a"]); got != tc.want {
				t.Errorf("slices %s, want %s", got, tc.want)
			}
			checkPoolIsValid(t, res)
		})
	}
}

// shape describes the pool's slices: "c<n>" for one of n counter sets,
// "d<n>" for one of n devices.
func shape(pool draresourceslice.Pool) string {
	var out []string
	for _, s := range pool.Slices {
		if len(s.SharedCounters) > 0 {
			out = append(out, fmt.Sprintf("c%d", len(s.SharedCounters)))
		} else {
			out = append(out, fmt.Sprintf("d%d", len(s.Devices)))
		}
	}
	return fmt.Sprint(out)
}

// checkPoolIsValid applies the API server's ResourceSlice validation that
// concerns devices and counters (k8s.io/kubernetes is not a dependency),
// and the pool-wide checks of the resourceslice controller and the
// allocator, to every pool of res.
func checkPoolIsValid(t *testing.T, res draresourceslice.DriverResources) {
	t.Helper()
	for poolName, pool := range res.Pools {
		sets := map[string]resourceapi.CounterSet{}
		for i, s := range pool.Slices {
			if len(s.Devices) > 0 && len(s.SharedCounters) > 0 {
				t.Errorf("pool %s slice %d has both devices and counter sets", poolName, i)
			}
			if len(s.SharedCounters) > resourceapi.ResourceSliceMaxCounterSets {
				t.Errorf("pool %s slice %d: %d counter sets", poolName, i, len(s.SharedCounters))
			}
			for _, cs := range s.SharedCounters {
				if errs := validation.IsDNS1123Label(cs.Name); len(errs) > 0 {
					t.Errorf("counter set %q: %v", cs.Name, errs)
				}
				if _, dup := sets[cs.Name]; dup {
					t.Errorf("counter set %q twice in pool %s", cs.Name, poolName)
				}
				sets[cs.Name] = cs
				if len(cs.Counters) == 0 || len(cs.Counters) > resourceapi.ResourceSliceMaxCountersPerCounterSet {
					t.Errorf("counter set %q: %d counters", cs.Name, len(cs.Counters))
				}
				for name, c := range cs.Counters {
					if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
						t.Errorf("counter set %q: counter %q: %v", cs.Name, name, errs)
					}
					if c.Value.Sign() < 0 {
						t.Errorf("counter set %q: counter %q is negative", cs.Name, name)
					}
				}
			}
		}
		seen := map[string]bool{}
		for i, s := range pool.Slices {
			limit := resourceapi.ResourceSliceMaxDevices
			if slices.ContainsFunc(s.Devices, func(d resourceapi.Device) bool { return len(d.Taints) > 0 || len(d.ConsumesCounters) > 0 }) {
				limit = resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures
			}
			if len(s.Devices) > limit {
				t.Errorf("pool %s slice %d: %d devices, limit %d", poolName, i, len(s.Devices), limit)
			}
			for _, d := range s.Devices {
				checkAPILimits(t, d)
				if errs := validation.IsDNS1123Label(d.Name); len(errs) > 0 {
					t.Errorf("device %q: %v", d.Name, errs)
				}
				if seen[d.Name] {
					t.Errorf("device %q twice in pool %s", d.Name, poolName)
				}
				seen[d.Name] = true
				if len(d.ConsumesCounters) > resourceapi.ResourceSliceMaxDeviceCounterConsumptionsPerDevice {
					t.Errorf("%s: %d counter consumptions", d.Name, len(d.ConsumesCounters))
				}
				for _, c := range d.ConsumesCounters {
					cs, ok := sets[c.CounterSet]
					if !ok {
						t.Errorf("%s consumes from the unknown counter set %q", d.Name, c.CounterSet)
						continue
					}
					if len(c.Counters) == 0 || len(c.Counters) > resourceapi.ResourceSliceMaxCountersPerDeviceCounterConsumption {
						t.Errorf("%s: %d counters consumed from %s", d.Name, len(c.Counters), c.CounterSet)
					}
					for name, v := range c.Counters {
						total, ok := cs.Counters[name]
						if !ok {
							t.Errorf("%s consumes the unknown counter %q of %s", d.Name, name, c.CounterSet)
							continue
						}
						if v.Value.Sign() < 0 || v.Value.Cmp(total.Value) > 0 {
							t.Errorf("%s consumes %s of %s/%s, which holds %s", d.Name, v.Value.String(), c.CounterSet, name, total.Value.String())
						}
					}
				}
			}
		}
	}
}

// TestCounterSetsFromMockLayouts: the layouts that inventory discovers on
// the mock H100 machine (NVML's real profile tables) give the counters of
// the hand-built layout, on every GPU.
func TestCounterSetsFromMockLayouts(t *testing.T) {
	lib, err := mockmachine.New("dgxh100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Shutdown() })
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	layouts, errs := inventory.DiscoverMIGLayouts(lib, inv)
	if len(errs) > 0 || len(layouts) != 8 {
		t.Fatalf("%d layouts, errors %v", len(layouts), errs)
	}
	set := devices.FromInventoryWith(inv, devices.Options{Partitionable: layouts})
	sets := CounterSets(set)
	if len(sets) != 8 {
		t.Fatalf("%d counter sets, want 8", len(sets))
	}
	for i, s := range sets {
		if want := fmt.Sprintf("gpu-%d-counter-set", i); s.Name != want {
			t.Errorf("counter set %d is %q, want %q", i, s.Name, want)
		}
		sameCounters(t, s.Name, s.Counters, wantH100Counters())
	}
	devs := Devices(inv, set, Options{})
	if len(devs) != 8*26 {
		t.Errorf("%d devices, want 208", len(devs))
	}
	checkPoolIsValid(t, DriverResources("node-a", devs, sets))
}

package resourceslice

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/blang/semver/v4"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// mockInventory discovers the GPUs of a go-nvml mock machine.
func mockInventory(tb testing.TB, machine, seed string) *inventory.Inventory {
	tb.Helper()
	lib, err := mockmachine.New(machine, seed)
	if err != nil {
		tb.Fatalf("NewMock(%q): %v", machine, err)
	}
	tb.Cleanup(func() { lib.Shutdown() })
	inv, err := inventory.Discover(lib)
	if err != nil {
		tb.Fatalf("Discover(%q): %v", machine, err)
	}
	return inv
}

// fakePCIeRoot puts buses below 0x80 under one root complex and the others
// under a second one, like a two-socket server.
func fakePCIeRoot(busID string) (string, error) {
	if len(busID) != len("0000:18:00.0") {
		return "", fmt.Errorf("bad bus ID %q", busID)
	}
	if busID[5:7] < "80" {
		return "pci0000:00", nil
	}
	return "pci0000:80", nil
}

// cIdentifier is what an unqualified attribute or capacity name must be.
var cIdentifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func stringAttr(t *testing.T, d resourceapi.Device, name resourceapi.QualifiedName) string {
	t.Helper()
	a, ok := d.Attributes[name]
	if !ok {
		t.Fatalf("%s: attribute %s missing", d.Name, name)
	}
	if a.StringValue == nil || a.IntValue != nil || a.BoolValue != nil || a.VersionValue != nil {
		t.Fatalf("%s: attribute %s is not exactly a string: %+v", d.Name, name, a)
	}
	return *a.StringValue
}

func versionAttr(t *testing.T, d resourceapi.Device, name resourceapi.QualifiedName) string {
	t.Helper()
	a, ok := d.Attributes[name]
	if !ok {
		t.Fatalf("%s: attribute %s missing", d.Name, name)
	}
	if a.VersionValue == nil || a.IntValue != nil || a.BoolValue != nil || a.StringValue != nil {
		t.Fatalf("%s: attribute %s is not exactly a version: %+v", d.Name, name, a)
	}
	v := *a.VersionValue
	// blang/semver is what the API server and the CEL library parse
	// versions with; Parse is strict semver 2.0.0.
	parsed, err := semver.Parse(v)
	if err != nil {
		t.Fatalf("%s: attribute %s = %q is not valid semver: %v", d.Name, name, v, err)
	}
	if parsed.String() != v {
		t.Fatalf("%s: attribute %s = %q does not round-trip (%q)", d.Name, name, v, parsed.String())
	}
	return v
}

func intAttr(t *testing.T, d resourceapi.Device, name resourceapi.QualifiedName) int64 {
	t.Helper()
	a, ok := d.Attributes[name]
	if !ok {
		t.Fatalf("%s: attribute %s missing", d.Name, name)
	}
	if a.IntValue == nil || a.StringValue != nil || a.BoolValue != nil || a.VersionValue != nil {
		t.Fatalf("%s: attribute %s is not exactly an int: %+v", d.Name, name, a)
	}
	return *a.IntValue
}

func boolAttr(t *testing.T, d resourceapi.Device, name resourceapi.QualifiedName) bool {
	t.Helper()
	a, ok := d.Attributes[name]
	if !ok {
		t.Fatalf("%s: attribute %s missing", d.Name, name)
	}
	if a.BoolValue == nil || a.StringValue != nil || a.IntValue != nil || a.VersionValue != nil {
		t.Fatalf("%s: attribute %s is not exactly a bool: %+v", d.Name, name, a)
	}
	return *a.BoolValue
}

// wantVersions holds what the go-nvml mock machines report, in semver form.
var wantVersions = map[string]struct{ driver, cuda, cc, arch, product string }{
	"dgxa100":      {"550.54.15", "12.4.0", "8.0.0", "Ampere", "Mock NVIDIA A100-SXM4-40GB"},
	"dgxa100-80gb": {"550.54.15", "12.4.0", "8.0.0", "Ampere", "NVIDIA A100-SXM4-80GB"},
	"dgxh100":      {"550.54.15", "12.4.0", "9.0.0", "Hopper", "NVIDIA H100 80GB HBM3"},
	"dgxh200":      {"550.54.15", "12.4.0", "9.0.0", "Hopper", "NVIDIA H200 141GB HBM3e"},
	// The B200 mock reports driver "560.28.03": the leading zero is not
	// valid semver and must be stripped.
	"dgxb200": {"560.28.3", "12.6.0", "10.0.0", "Blackwell", "NVIDIA B200 180GB HBM3e"},
}

func TestDevicesOnMockMachines(t *testing.T) {
	for _, machine := range mockmachine.Names() {
		t.Run(machine, func(t *testing.T) {
			want, ok := wantVersions[machine]
			if !ok {
				t.Fatalf("no expectations for mock machine %q", machine)
			}
			inv := mockInventory(t, machine, "node-1")
			devs := Devices(inv, devices.FromInventory(inv), Options{PCIeRoot: fakePCIeRoot})
			if len(devs) != len(inv.Devices) || len(devs) != 8 {
				t.Fatalf("got %d devices for %d GPUs, want 8", len(devs), len(inv.Devices))
			}
			names := map[string]bool{}
			for i, d := range devs {
				gpu := inv.Devices[i]
				if d.Name != devices.GPUName(gpu) || d.Name != fmt.Sprintf("gpu-%d", gpu.Index) {
					t.Errorf("device %d: name %q, want gpu-%d", i, d.Name, gpu.Index)
				}
				if errs := validation.IsDNS1123Label(d.Name); len(errs) > 0 {
					t.Errorf("name %q is not a DNS label: %v", d.Name, errs)
				}
				if names[d.Name] {
					t.Errorf("duplicate device name %q", d.Name)
				}
				names[d.Name] = true

				if got := stringAttr(t, d, AttrType); got != "gpu" {
					t.Errorf("%s: type %q", d.Name, got)
				}
				if got := stringAttr(t, d, AttrUUID); got != gpu.UUID || !strings.HasPrefix(got, "GPU-") {
					t.Errorf("%s: uuid %q, want %q", d.Name, got, gpu.UUID)
				}
				if got := stringAttr(t, d, AttrProductName); got != want.product {
					t.Errorf("%s: productName %q, want %q", d.Name, got, want.product)
				}
				if got := stringAttr(t, d, AttrBrand); got != gpu.Brand || got == "" {
					t.Errorf("%s: brand %q, want %q", d.Name, got, gpu.Brand)
				}
				if got := stringAttr(t, d, AttrArchitecture); got != want.arch {
					t.Errorf("%s: architecture %q, want %q", d.Name, got, want.arch)
				}
				if got := versionAttr(t, d, AttrCUDAComputeCapability); got != want.cc {
					t.Errorf("%s: cudaComputeCapability %q, want %q", d.Name, got, want.cc)
				}
				if got := versionAttr(t, d, AttrDriverVersion); got != want.driver {
					t.Errorf("%s: driverVersion %q, want %q", d.Name, got, want.driver)
				}
				if got := versionAttr(t, d, AttrCUDADriverVersion); got != want.cuda {
					t.Errorf("%s: cudaDriverVersion %q, want %q", d.Name, got, want.cuda)
				}
				if got := intAttr(t, d, AttrIndex); got != int64(gpu.Index) || got != int64(i) {
					t.Errorf("%s: index %d, want %d", d.Name, got, gpu.Index)
				}
				if got := intAttr(t, d, AttrMinor); got != int64(gpu.Minor) {
					t.Errorf("%s: minor %d, want %d", d.Name, got, gpu.Minor)
				}
				if got := boolAttr(t, d, AttrMIGCapable); got != gpu.MIGCapable {
					t.Errorf("%s: migCapable %v, want %v", d.Name, got, gpu.MIGCapable)
				}
				if got := stringAttr(t, d, "resource.kubernetes.io/pciBusID"); got != gpu.PCIBusID || got == "" {
					t.Errorf("%s: pciBusID %q, want %q", d.Name, got, gpu.PCIBusID)
				}
				wantRoot, _ := fakePCIeRoot(gpu.PCIBusID)
				if got := stringAttr(t, d, "resource.kubernetes.io/pcieRoot"); got != wantRoot {
					t.Errorf("%s: pcieRoot %q, want %q", d.Name, got, wantRoot)
				}
				if wantN := 13 + topologyAttributeCount(gpu); len(d.Attributes) != wantN {
					t.Errorf("%s: %d attributes, want %d: %v", d.Name, len(d.Attributes), wantN, d.Attributes)
				}

				mem, ok := d.Capacity[CapacityMemory]
				if !ok {
					t.Fatalf("%s: no memory capacity", d.Name)
				}
				if mem.Value.Value() != int64(gpu.MemoryBytes) || mem.Value.Format != resource.BinarySI {
					t.Errorf("%s: memory %s (%s), want %d bytes BinarySI", d.Name, mem.Value.String(), mem.Value.Format, gpu.MemoryBytes)
				}
				if mem.RequestPolicy != nil {
					t.Errorf("%s: memory must not be consumable capacity", d.Name)
				}
				if len(d.Capacity) != 1 {
					t.Errorf("%s: capacities %v, want only memory", d.Name, d.Capacity)
				}

				checkAPILimits(t, d)
			}
		})
	}
}

// checkAPILimits checks the per-device rules of ResourceSlice validation
// that Devices can break.
func checkAPILimits(t *testing.T, d resourceapi.Device) {
	t.Helper()
	if n := len(d.Attributes) + len(d.Capacity); n > resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice {
		t.Errorf("%s: %d attributes and capacities, limit %d", d.Name, n, resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice)
	}
	checkName := func(name resourceapi.QualifiedName) {
		domain, id, qualified := strings.Cut(string(name), "/")
		if !qualified {
			id = domain
		} else if errs := validation.IsDNS1123Subdomain(domain); len(errs) > 0 {
			t.Errorf("%s: %q: bad domain: %v", d.Name, name, errs)
		}
		if !cIdentifier.MatchString(id) || len(id) > resourceapi.DeviceMaxIDLength {
			t.Errorf("%s: %q: bad identifier", d.Name, name)
		}
	}
	for name, a := range d.Attributes {
		checkName(name)
		set := 0
		for _, isSet := range []bool{a.IntValue != nil, a.BoolValue != nil, a.StringValue != nil, a.VersionValue != nil} {
			if isSet {
				set++
			}
		}
		if set != 1 || a.IntValues != nil || a.BoolValues != nil || a.StringValues != nil || a.VersionValues != nil {
			t.Errorf("%s: attribute %s must have exactly one scalar value: %+v", d.Name, name, a)
		}
		if a.StringValue != nil && len(*a.StringValue) > resourceapi.DeviceAttributeMaxValueLength {
			t.Errorf("%s: attribute %s too long", d.Name, name)
		}
		if a.VersionValue != nil {
			if _, err := semver.Parse(*a.VersionValue); err != nil {
				t.Errorf("%s: attribute %s: %v", d.Name, name, err)
			}
		}
	}
	for name := range d.Capacity {
		checkName(name)
	}
}

func TestDevicesPCIAttributes(t *testing.T) {
	inv := mockInventory(t, "dgxh100", "node-1")

	t.Run("nil resolver leaves pcieRoot out", func(t *testing.T) {
		for _, d := range Devices(inv, devices.FromInventory(inv), Options{}) {
			if _, ok := d.Attributes[AttrPCIeRoot]; ok {
				t.Errorf("%s: pcieRoot published without a resolver", d.Name)
			}
			if _, ok := d.Attributes[AttrPCIBusID]; !ok {
				t.Errorf("%s: pciBusID missing", d.Name)
			}
		}
	})

	t.Run("resolver errors and empty results leave pcieRoot out", func(t *testing.T) {
		calls := 0
		opts := Options{PCIeRoot: func(busID string) (string, error) {
			calls++
			if busID == inv.Devices[0].PCIBusID {
				return "", nil
			}
			if busID == inv.Devices[1].PCIBusID {
				return "pci0000:00", nil
			}
			return "ignored", errors.New("not in sysfs")
		}}
		devs := Devices(inv, devices.FromInventory(inv), opts)
		if calls != len(inv.Devices) {
			t.Errorf("resolver called %d times, want once per device (%d)", calls, len(inv.Devices))
		}
		for i, d := range devs {
			_, has := d.Attributes[AttrPCIeRoot]
			if has != (i == 1) {
				t.Errorf("%s: pcieRoot present=%v", d.Name, has)
			}
		}
	})

	t.Run("unknown or malformed bus ID leaves both out", func(t *testing.T) {
		inv := &inventory.Inventory{
			DriverVersion:     "550.54.15",
			CUDADriverVersion: "12.4",
			Devices: []inventory.Device{
				{Index: 0, UUID: "GPU-a", PCIBusID: ""},
				{Index: 1, UUID: "GPU-b", PCIBusID: "00000000:18:00.0"},
				{Index: 2, UUID: "GPU-c", PCIBusID: "0000:18:00.0"},
			},
		}
		called := map[string]bool{}
		devs := Devices(inv, devices.FromInventory(inv), Options{PCIeRoot: func(busID string) (string, error) {
			called[busID] = true
			return "pci0000:00", nil
		}})
		for _, d := range devs[:2] {
			if _, ok := d.Attributes[AttrPCIBusID]; ok {
				t.Errorf("%s: pciBusID published for an unknown/malformed bus ID", d.Name)
			}
			if _, ok := d.Attributes[AttrPCIeRoot]; ok {
				t.Errorf("%s: pcieRoot published for an unknown/malformed bus ID", d.Name)
			}
		}
		if got := stringAttr(t, devs[2], AttrPCIBusID); got != "0000:18:00.0" {
			t.Errorf("pciBusID %q", got)
		}
		if got := stringAttr(t, devs[2], AttrPCIeRoot); got != "pci0000:00" {
			t.Errorf("pcieRoot %q", got)
		}
		if len(called) != 1 || !called["0000:18:00.0"] {
			t.Errorf("resolver called for %v, want only the valid bus ID", called)
		}
	})

	t.Run("sysfs resolver", func(t *testing.T) {
		// The mock bus IDs may or may not exist on the test host; only
		// check that the default never publishes something invalid.
		for _, d := range Devices(inv, devices.FromInventory(inv), DefaultOptions()) {
			if a, ok := d.Attributes[AttrPCIeRoot]; ok && !strings.HasPrefix(*a.StringValue, "pci") {
				t.Errorf("%s: pcieRoot %q", d.Name, *a.StringValue)
			}
			checkAPILimits(t, d)
		}
		if _, err := PCIeRootResolver(DefaultSysfsRoot)("not-a-bus-id"); err == nil {
			t.Error("the sysfs resolver accepted a malformed bus ID")
		}
	})
}

func TestSemverOf(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" means rejected
	}{
		{"550.54.15", "550.54.15"},
		{"560.28", "560.28.0"},
		{"535.04.01", "535.4.1"},
		{"560.28.03", "560.28.3"},
		{"00.00.00", "0.0.0"},
		{"9.0", "9.0.0"},
		{"12.4", "12.4.0"},
		{"10.0", "10.0.0"},
		{"12", "12.0.0"},
		{"", ""},
		{"1.2.3.4", ""},
		{"1..2", ""},
		{".1", ""},
		{"1.", ""},
		{"1.2-beta", ""},
		{"+1.2", ""},
		{"-1.2", ""},
		{" 1.2", ""},
		{"v1.2.3", ""},
		{"1.٣.2", ""}, // non-ASCII digit
		{"99999999999999999999.0", ""},
	} {
		got, ok := semverOf(tc.in)
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("semverOf(%q) = %q, %v; want %q", tc.in, got, ok, tc.want)
			continue
		}
		if ok {
			if v, err := semver.Parse(got); err != nil || v.String() != got {
				t.Errorf("semverOf(%q) = %q: not strict semver: %v", tc.in, got, err)
			}
		}
	}
}

func TestDevicesDriverVersions(t *testing.T) {
	gpus := []inventory.Device{{Index: 0, UUID: "GPU-0", CUDAComputeCapability: "9.0"}}
	for _, tc := range []struct {
		driver, cuda         string
		wantDriver, wantCUDA string // "" means left out
	}{
		{"550.54.15", "12.4", "550.54.15", "12.4.0"},
		{"560.28", "12.6", "560.28.0", "12.6.0"},
		{"535.04.01", "12.2", "535.4.1", "12.2.0"},
		{"garbage", "", "", ""},
	} {
		inv := &inventory.Inventory{DriverVersion: tc.driver, CUDADriverVersion: tc.cuda, Devices: gpus}
		d := Devices(inv, devices.FromInventory(inv), Options{})[0]
		for _, c := range []struct {
			name resourceapi.QualifiedName
			want string
		}{{AttrDriverVersion, tc.wantDriver}, {AttrCUDADriverVersion, tc.wantCUDA}} {
			if c.want == "" {
				if a, ok := d.Attributes[c.name]; ok {
					t.Errorf("%q/%q: %s published as %+v, want it left out", tc.driver, tc.cuda, c.name, a)
				}
				continue
			}
			if got := versionAttr(t, d, c.name); got != c.want {
				t.Errorf("%q/%q: %s = %q, want %q", tc.driver, tc.cuda, c.name, got, c.want)
			}
		}
		// The rest of the device is published regardless.
		if got := stringAttr(t, d, AttrUUID); got != "GPU-0" {
			t.Errorf("uuid %q", got)
		}
		checkAPILimits(t, d)
	}
}

func TestDevicesEdgeCases(t *testing.T) {
	if got := Devices(nil, devices.FromInventory(nil), Options{}); got == nil || len(got) != 0 {
		t.Errorf("Devices(nil) = %#v, want empty non-nil", got)
	}
	if got := Devices(&inventory.Inventory{}, devices.FromInventory(&inventory.Inventory{}), Options{}); got == nil || len(got) != 0 {
		t.Errorf("Devices(empty) = %#v, want empty non-nil", got)
	}
	h100, _ := h100Node(2)
	if got := Devices(h100, nil, Options{}); got == nil || len(got) != 0 {
		t.Errorf("Devices(inv, nil) = %#v, want empty non-nil", got)
	}
	// Without the inventory, the driver-wide attributes are unknown.
	for _, d := range Devices(nil, devices.FromInventory(h100), Options{}) {
		_, driver := d.Attributes[AttrDriverVersion]
		_, cuda := d.Attributes[AttrCUDADriverVersion]
		if driver || cuda || d.Attributes[AttrUUID].StringValue == nil {
			t.Errorf("Devices(nil, set): %s has attributes %v", d.Name, d.Attributes)
		}
	}

	// Empty and over-long strings are left out instead of making the
	// whole slice invalid.
	inv := &inventory.Inventory{Devices: []inventory.Device{{
		Index:       3,
		ProductName: strings.Repeat("x", resourceapi.DeviceAttributeMaxValueLength+1),
	}}}
	d := Devices(inv, devices.FromInventory(inv), Options{})[0]
	for _, name := range []resourceapi.QualifiedName{AttrUUID, AttrProductName, AttrBrand, AttrArchitecture, AttrCUDAComputeCapability, AttrPCIBusID} {
		if _, ok := d.Attributes[name]; ok {
			t.Errorf("%s published for an unknown or invalid value", name)
		}
	}
	if d.Name != "gpu-3" || stringAttr(t, d, AttrType) != "gpu" || intAttr(t, d, AttrIndex) != 3 {
		t.Errorf("unexpected device %+v", d)
	}
	if mem := d.Capacity[CapacityMemory]; !mem.Value.IsZero() {
		t.Errorf("memory %s, want 0", mem.Value.String())
	}
	checkAPILimits(t, d)
}

func TestDevicesAreIndependent(t *testing.T) {
	inv := mockInventory(t, "dgxh100", "node-1")
	devs := Devices(inv, devices.FromInventory(inv), Options{})
	*devs[0].Attributes[AttrDriverVersion].VersionValue = "1.2.3"
	*devs[0].Attributes[AttrType].StringValue = "changed"
	devs[0].Attributes[AttrUUID] = resourceapi.DeviceAttribute{}
	if got := versionAttr(t, devs[1], AttrDriverVersion); got != "550.54.15" {
		t.Errorf("devices share the driverVersion value: %q", got)
	}
	if got := stringAttr(t, devs[1], AttrType); got != "gpu" {
		t.Errorf("devices share the type value: %q", got)
	}
	again := Devices(inv, devices.FromInventory(inv), Options{})
	if got := versionAttr(t, again[0], AttrDriverVersion); got != "550.54.15" {
		t.Errorf("Devices calls share values: %q", got)
	}
	if inv.Devices[0].UUID == "" {
		t.Error("the inventory was modified")
	}
}

// syntheticDevices returns n minimal devices named dev-<i>.
func syntheticDevices(n int) []resourceapi.Device {
	out := make([]resourceapi.Device, n)
	for i := range out {
		out[i] = resourceapi.Device{Name: fmt.Sprintf("dev-%d", i)}
	}
	return out
}

// checkPool checks that resources hold exactly one pool, named node, whose
// slices hold every device of want exactly once, in order, with at most
// limit devices per slice, and returns the slice sizes.
func checkPool(t *testing.T, node string, got []resourceapi.Device, want []resourceapi.Device, limit int) []int {
	t.Helper()
	res := DriverResources(node, got, nil)
	if len(res.Pools) != 1 {
		t.Fatalf("%d pools, want 1", len(res.Pools))
	}
	pool, ok := res.Pools[node]
	if !ok {
		t.Fatalf("no pool named %q: %v", node, res.Pools)
	}
	if pool.NodeSelector != nil || pool.AllNodes || pool.Generation != 0 {
		t.Errorf("pool must be a plain node-local pool: %+v", pool)
	}
	var sizes []int
	var flat []string
	for i, s := range pool.Slices {
		if len(s.Devices) > limit {
			t.Errorf("slice %d has %d devices, limit %d", i, len(s.Devices), limit)
		}
		if len(s.SharedCounters) > 0 || s.PerDeviceNodeSelection != nil {
			t.Errorf("slice %d sets fields it should not: %+v", i, s)
		}
		sizes = append(sizes, len(s.Devices))
		for _, d := range s.Devices {
			flat = append(flat, d.Name)
		}
	}
	if len(flat) != len(want) {
		t.Fatalf("%d devices in the slices, want %d", len(flat), len(want))
	}
	seen := map[string]bool{}
	for i, name := range flat {
		if seen[name] {
			t.Errorf("device %q published twice", name)
		}
		seen[name] = true
		if name != want[i].Name {
			t.Fatalf("device %d is %q, want %q: order not kept", i, name, want[i].Name)
		}
	}
	return sizes
}

func TestDriverResources(t *testing.T) {
	t.Run("one DGX fits one slice", func(t *testing.T) {
		inv := mockInventory(t, "dgxh100", "node-1")
		devs := Devices(inv, devices.FromInventory(inv), Options{})
		sizes := checkPool(t, "node-1", devs, devs, MaxDevicesPerSlice)
		if len(sizes) != 1 || sizes[0] != 8 {
			t.Errorf("slice sizes %v, want [8]", sizes)
		}
	})

	for _, tc := range []struct {
		name  string
		n     int
		mark  func([]resourceapi.Device)
		limit int
		sizes []int
	}{
		{"no devices", 0, nil, MaxDevicesPerSlice, []int{0}},
		{"exactly one full slice", 128, nil, MaxDevicesPerSlice, []int{128}},
		{"one over", 129, nil, MaxDevicesPerSlice, []int{128, 1}},
		{"300 devices", 300, nil, MaxDevicesPerSlice, []int{128, 128, 44}},
		{"300 devices, one tainted", 300, func(d []resourceapi.Device) {
			d[299].Taints = []resourceapi.DeviceTaint{{Key: "example.com/unhealthy", Effect: resourceapi.DeviceTaintEffectNoSchedule}}
		}, MaxDevicesPerSliceWithTaintsOrCounters, []int{64, 64, 64, 64, 44}},
		{"100 devices, one consuming counters", 100, func(d []resourceapi.Device) {
			d[0].ConsumesCounters = []resourceapi.DeviceCounterConsumption{{CounterSet: "gpu-0-counters"}}
		}, MaxDevicesPerSliceWithTaintsOrCounters, []int{64, 36}},
		{"100 devices, one with a list attribute", 100, func(d []resourceapi.Device) {
			d[50].Attributes = map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{"numaNodes": {IntValues: []int64{0, 1}}}
		}, MaxDevicesPerSliceWithTaintsOrCounters, []int{64, 36}},
		{"64 tainted devices", 64, func(d []resourceapi.Device) {
			for i := range d {
				d[i].Taints = []resourceapi.DeviceTaint{{Key: "k", Effect: resourceapi.DeviceTaintEffectNoExecute}}
			}
		}, MaxDevicesPerSliceWithTaintsOrCounters, []int{64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devs := syntheticDevices(tc.n)
			if tc.mark != nil {
				tc.mark(devs)
			}
			sizes := checkPool(t, "worker-7", devs, devs, tc.limit)
			if fmt.Sprint(sizes) != fmt.Sprint(tc.sizes) {
				t.Errorf("slice sizes %v, want %v", sizes, tc.sizes)
			}
		})
	}

	t.Run("stable and independent of the input slice", func(t *testing.T) {
		devs := syntheticDevices(200)
		a := DriverResources("n", devs, nil)
		b := DriverResources("n", devs, nil)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Error("two calls with the same input differ")
		}
		devs[0].Name = "renamed"
		if got := a.Pools["n"].Slices[0].Devices[0].Name; got != "dev-0" {
			t.Errorf("the result aliases the input slice: %q", got)
		}
	})
}

func BenchmarkDriverResources(b *testing.B) {
	inv := mockInventory(b, "dgxh100", "bench")
	b.ReportAllocs()
	for b.Loop() {
		res := DriverResources("node-1", Devices(inv, devices.FromInventory(inv), Options{PCIeRoot: fakePCIeRoot}), nil)
		if len(res.Pools["node-1"].Slices[0].Devices) != 8 {
			b.Fatal("wrong device count")
		}
	}
}

package devices

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// node is a node with four GPUs: 0 and 2 in MIG mode (gpu-0 with two MIG
// devices, gpu-2 with one), 1 and 3 whole.
func node() *inventory.Inventory {
	gpus := []inventory.Device{
		{Index: 0, Minor: 0, UUID: "GPU-0", MIGCapable: true, MIGEnabled: true},
		{Index: 1, Minor: 1, UUID: "GPU-1", MIGCapable: true},
		{Index: 2, Minor: 2, UUID: "GPU-2", MIGCapable: true, MIGEnabled: true},
		{Index: 3, Minor: 3, UUID: "GPU-3"},
	}
	return &inventory.Inventory{
		Devices: gpus,
		MIGDevices: []inventory.MIGDevice{
			{UUID: "MIG-0a", ParentIndex: 0, ParentUUID: "GPU-0", Profile: "1g.10gb", GPUInstanceID: 0},
			{UUID: "MIG-0b", ParentIndex: 0, ParentUUID: "GPU-0", Profile: "3g.40gb", GPUInstanceID: 1, ComputeInstanceID: 2},
			{UUID: "MIG-2a", ParentIndex: 2, ParentUUID: "GPU-2", Profile: "7g.80gb", GPUInstanceID: 0},
			// An orphan: its parent is not in the inventory.
			{UUID: "MIG-9a", ParentIndex: 9, ParentUUID: "GPU-9", Profile: "1g.10gb", GPUInstanceID: 0},
		},
	}
}

func TestFromInventoryOrderAndKinds(t *testing.T) {
	inv := node()
	s := FromInventory(inv)
	want := []string{"gpu-1", "gpu-3", "gpu-0-mig-1g10gb-0", "gpu-0-mig-3g40gb-1-2", "gpu-2-mig-7g80gb-0"}
	if got := s.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v (GPUs not in MIG mode, then MIG devices)", got, want)
	}
	for i, d := range s.All() {
		if d.Name != want[i] {
			t.Errorf("All()[%d] = %s, want %s", i, d.Name, want[i])
		}
	}
	g, ok := s.Get("gpu-3")
	if !ok || g.Kind != KindGPU || g.UUID != "GPU-3" || g.ParentUUID != "" || g.GPUUUID() != "GPU-3" || g.GPU.Minor != 3 || g.MIG != nil {
		t.Errorf("gpu-3 = %+v, %v", g, ok)
	}
	m, ok := s.Get("gpu-0-mig-3g40gb-1-2")
	if !ok || m.Kind != KindMIG || m.UUID != "MIG-0b" || m.ParentUUID != "GPU-0" || m.GPUUUID() != "GPU-0" ||
		m.GPU.UUID != "GPU-0" || m.MIG == nil || m.MIG.ComputeInstanceID != 2 {
		t.Errorf("MIG device = %+v, %v", m, ok)
	}
	for _, absent := range []string{"gpu-0", "gpu-2", "gpu-9-mig-1g10gb-0", "gpu-4"} {
		if _, ok := s.Get(absent); ok {
			t.Errorf("%s is preparable: a GPU in MIG mode, a MIG device without parent or an unknown device", absent)
		}
	}
	// The Set copies the inventory.
	inv.Devices[3].UUID = "changed"
	inv.MIGDevices[1].ComputeInstanceID = 7
	if g, _ := s.Get("gpu-3"); g.UUID != "GPU-3" {
		t.Errorf("the Set shares the inventory's GPUs: %+v", g)
	}
	if m, _ := s.Get("gpu-0-mig-3g40gb-1-2"); m.MIG.ComputeInstanceID != 2 {
		t.Errorf("the Set shares the inventory's MIG devices: %+v", m.MIG)
	}
	// All returns a copy.
	all := s.All()
	all[0].Name = "changed"
	if s.All()[0].Name != "gpu-1" {
		t.Error("All() shares the Set's slice")
	}
}

func TestOfGPU(t *testing.T) {
	s := FromInventory(node())
	names := func(ds []Device) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.Name)
		}
		return out
	}
	for uuid, want := range map[string][]string{
		"GPU-0":  {"gpu-0-mig-1g10gb-0", "gpu-0-mig-3g40gb-1-2"},
		"GPU-1":  {"gpu-1"},
		"GPU-2":  {"gpu-2-mig-7g80gb-0"},
		"GPU-9":  nil,
		"MIG-0a": nil,
	} {
		if got := names(s.OfGPU(uuid)); !slices.Equal(got, want) {
			t.Errorf("OfGPU(%s) = %v, want %v", uuid, got, want)
		}
	}
}

func TestEmptySet(t *testing.T) {
	for _, inv := range []*inventory.Inventory{nil, {}} {
		s := FromInventory(inv)
		if len(s.All()) != 0 || len(s.Names()) != 0 || len(s.OfGPU("GPU-0")) != 0 {
			t.Errorf("FromInventory(%v) is not empty", inv)
		}
		if _, ok := s.Get("gpu-0"); ok {
			t.Errorf("FromInventory(%v) has gpu-0", inv)
		}
	}
}

func TestGPUName(t *testing.T) {
	for index, want := range map[int]string{0: "gpu-0", 7: "gpu-7", 12: "gpu-12"} {
		got := GPUName(inventory.Device{Index: index})
		if got != want {
			t.Errorf("GPUName(index %d) = %q, want %q", index, got, want)
		}
		if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
			t.Errorf("GPUName(index %d) = %q: %v", index, got, errs)
		}
	}
}

func TestMIGNameIsDNSLabel(t *testing.T) {
	for _, m := range []inventory.MIGDevice{
		{ParentIndex: 12, Profile: "1c.3g.40gb", GPUInstanceID: 14, ComputeInstanceID: 2},
		{ParentIndex: 0, Profile: "1g.10gb+me", GPUInstanceID: 0},
		{ParentIndex: 3, Profile: "1G.5GB-ME", GPUInstanceID: 1},
	} {
		if errs := validation.IsDNS1123Label(MIGName(m)); len(errs) > 0 {
			t.Errorf("MIGName(%+v) = %q: %v", m, MIGName(m), errs)
		}
	}
	if got := MIGName(inventory.MIGDevice{ParentIndex: 12, Profile: "1c.3g.40gb", GPUInstanceID: 14, ComputeInstanceID: 2}); got != "gpu-12-mig-1c3g40gb-14-2" {
		t.Errorf("name %q", got)
	}
}

func TestUnusableGPUsAreKnownNotPreparable(t *testing.T) {
	inv := node()
	inv.Unusable = []inventory.UnusableDevice{{Index: 4, UUID: "GPU-4", Minor: 4}, {Index: 5, Minor: -1}}
	s := FromInventory(inv)
	for _, name := range []string{"gpu-4", "gpu-5"} {
		if _, ok := s.Get(name); ok {
			t.Errorf("unusable %s is preparable", name)
		}
		if u, ok := s.Unusable(name); !ok || UnusableName(u) != name {
			t.Errorf("Unusable(%s) = %+v, %v", name, u, ok)
		}
	}
	if _, ok := s.Unusable("gpu-1"); ok {
		t.Error("a usable GPU is reported unusable")
	}
	if slices.Contains(s.Names(), "gpu-4") || len(s.OfGPU("GPU-4")) != 0 {
		t.Errorf("unusable GPU among the preparable devices: %v", s.Names())
	}
	if _, ok := FromInventory(nil).Unusable("gpu-4"); ok {
		t.Error("empty set has an unusable GPU")
	}
}

// layout is a small MIG layout: a 1g profile at memory slices 0 and 1 and a
// 2g at 0, with the names NVIDIA gives them.
func layout(uuid string, switchable bool) inventory.MIGLayout {
	return inventory.MIGLayout{ParentUUID: uuid, MemorySlices: 2, ModeSwitchable: switchable, Profiles: []inventory.MIGProfile{
		{Name: "1g.10gb", ProfileIndex: 0, GPUInstanceProfileID: 19, Slices: 1, Placements: []inventory.MIGPlacement{{Start: 0, Size: 1}, {Start: 1, Size: 1}}},
		{Name: "1g.10gb+me", ProfileIndex: 7, GPUInstanceProfileID: 20, Slices: 1, Placements: []inventory.MIGPlacement{{Start: 1, Size: 1}}},
		{Name: "2g.20gb", ProfileIndex: 1, GPUInstanceProfileID: 14, Slices: 2, Placements: []inventory.MIGPlacement{{Start: 0, Size: 2}}},
	}}
}

func TestFromInventoryWithPartitionableGPUs(t *testing.T) {
	inv := node()
	s := FromInventoryWith(inv, Options{Partitionable: map[string]inventory.MIGLayout{
		// In MIG mode, switchable: whole and partitioned; its static MIG
		// devices (the driver's own) are not published.
		"GPU-0": layout("GPU-0", true),
		// Out of MIG mode and not switchable would not be partitionable
		// (the plugin never asks); in MIG mode and not switchable:
		// partitions only.
		"GPU-2": layout("GPU-2", false),
	}})
	want := []string{
		"gpu-0", "gpu-0-mig-1g10gb-19-1", "gpu-0-mig-1g10gb-19-0", "gpu-0-mig-1g10gb-me-20-1", "gpu-0-mig-2g20gb-14-0",
		"gpu-1",
		"gpu-2-mig-1g10gb-19-1", "gpu-2-mig-1g10gb-19-0", "gpu-2-mig-1g10gb-me-20-1", "gpu-2-mig-2g20gb-14-0",
		"gpu-3",
	}
	if got := s.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	whole, _ := s.Get("gpu-0")
	if !whole.Partitionable || whole.Kind != KindGPU || whole.UUID != "GPU-0" {
		t.Errorf("gpu-0 = %+v, want the partitionable whole GPU", whole)
	}
	if g1, _ := s.Get("gpu-1"); g1.Partitionable {
		t.Error("gpu-1 is not partitionable")
	}
	p, _ := s.Get("gpu-0-mig-2g20gb-14-0")
	if p.Kind != KindMIG || p.UUID != "" || p.ParentUUID != "GPU-0" || p.GPUUUID() != "GPU-0" || p.Dynamic == nil ||
		p.Dynamic.Profile.GPUInstanceProfileID != 14 || p.Dynamic.Placement != (inventory.MIGPlacement{Start: 0, Size: 2}) || p.Dynamic.MemorySlices != 2 {
		t.Errorf("partition = %+v", p)
	}
	// A GPU's partitions share its health.
	if got := len(s.OfGPU("GPU-0")); got != 5 {
		t.Errorf("OfGPU(GPU-0) has %d devices, want the whole GPU and 4 partitions", got)
	}
	for _, name := range s.Names() {
		if errs := validation.IsDNS1123Label(name); len(errs) != 0 {
			t.Errorf("%s is not a DNS label: %v", name, errs)
		}
	}
}

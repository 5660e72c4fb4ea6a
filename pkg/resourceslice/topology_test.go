package resourceslice

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/structured"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// topologyAttributeCount is the number of topology attributes that g's
// devices get.
func topologyAttributeCount(g inventory.Device) int {
	n := 0
	if g.HasNUMANode {
		n++
	}
	if g.AddressingMode != "" {
		n++
	}
	if g.ModuleID > 0 {
		n++
	}
	if g.Fabric.Clique() != "" {
		n += 2
	}
	return n
}

// topologyInventory discovers a mock machine as the plugin does, with its
// NUMA layout.
func topologyInventory(t *testing.T, machine, seed string) *inventory.Inventory {
	t.Helper()
	s, err := mockmachine.New(machine, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	_, ctx := ktesting.NewTestContext(t)
	inv, err := inventory.DiscoverWith(ctx, s, inventory.DiscoverOptions{NUMANode: mockmachine.NUMANodes(s)})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// checkTopology checks that d carries the topology of its GPU g.
func checkTopology(t *testing.T, d resourceapi.Device, g inventory.Device, fabric bool, cluster string) {
	t.Helper()
	if got := intAttr(t, d, AttrNUMANode); got != int64(g.Index/4) {
		t.Errorf("%s: numaNode %d, want %d", d.Name, got, g.Index/4)
	}
	if got := intAttr(t, d, AttrGPUModuleID); got != int64(g.Index+1) {
		t.Errorf("%s: gpuModuleID %d, want %d", d.Name, got, g.Index+1)
	}
	if !fabric {
		for _, a := range []resourceapi.QualifiedName{AttrAddressingMode, AttrClusterUUID, AttrCliqueID} {
			if _, ok := d.Attributes[a]; ok {
				t.Errorf("%s: has %s without a fabric", d.Name, a)
			}
		}
		return
	}
	if got := stringAttr(t, d, AttrAddressingMode); got != "HMM" {
		t.Errorf("%s: addressingMode %q", d.Name, got)
	}
	if got := stringAttr(t, d, AttrClusterUUID); got != cluster {
		t.Errorf("%s: clusterUUID %q, want %q", d.Name, got, cluster)
	}
	if got, want := stringAttr(t, d, AttrCliqueID), fmt.Sprintf("%s.%d", cluster, 1+g.Index/4); got != want {
		t.Errorf("%s: cliqueID %q, want %q", d.Name, got, want)
	}
}

// Every device of a GPU, whole, static MIG or dynamic MIG partition, has the
// GPU's topology.
func TestTopologyAttributesOnMockMachines(t *testing.T) {
	for _, machine := range append(mockmachine.Names(), "dgxh100-mig", "dgxa100-mig") {
		t.Run(machine, func(t *testing.T) {
			inv := topologyInventory(t, machine, "node-a")
			fabric := !strings.HasPrefix(machine, "dgxa100")
			cluster := uuid.UUID(mockmachine.FabricClusterUUID(machine, "node-a")).String()
			set := devices.FromInventory(inv)
			devs := Devices(inv, set, Options{})
			for i, d := range set.All() {
				checkTopology(t, devs[i], d.GPU, fabric, cluster)
				checkAPILimits(t, devs[i])
			}
		})
	}
	t.Run("partitionable", func(t *testing.T) {
		inv := topologyInventory(t, "dgxh100", "node-a")
		opts := devices.Options{Partitionable: map[string]inventory.MIGLayout{}}
		for _, g := range inv.Devices[:2] {
			opts.Partitionable[g.UUID] = h100Layout(g.UUID)
		}
		set := devices.FromInventoryWith(inv, opts)
		devs := Devices(inv, set, Options{})
		cluster := uuid.UUID(mockmachine.FabricClusterUUID("dgxh100", "node-a")).String()
		partitions := 0
		for i, d := range set.All() {
			if d.Dynamic != nil {
				partitions++
			}
			checkTopology(t, devs[i], d.GPU, true, cluster)
		}
		if partitions == 0 {
			t.Fatal("no partitions published")
		}
	})
}

// Topology that discovery did not find is not published; a NUMA node out of
// the kernel's range is rejected by the deviceattribute helper.
func TestTopologyAttributesAbsent(t *testing.T) {
	base := inventory.Device{Index: 0, UUID: "GPU-0", ProductName: "NVIDIA H100 80GB HBM3", CUDAComputeCapability: "9.0",
		PCIBusID: "0000:18:00.0", MemoryBytes: 80 << 30}
	for _, tc := range []struct {
		name string
		edit func(*inventory.Device)
		want []resourceapi.QualifiedName
	}{
		{"none", func(*inventory.Device) {}, nil},
		{"NUMA node 0", func(d *inventory.Device) { d.HasNUMANode = true }, []resourceapi.QualifiedName{AttrNUMANode}},
		{"NUMA node not known", func(d *inventory.Device) { d.NUMANode = 1 }, nil},
		{"NUMA node out of range", func(d *inventory.Device) { d.NUMANode, d.HasNUMANode = 4096, true }, nil},
		{"addressing mode", func(d *inventory.Device) { d.AddressingMode = "ATS" }, []resourceapi.QualifiedName{AttrAddressingMode}},
		{"module", func(d *inventory.Device) { d.ModuleID = 3 }, []resourceapi.QualifiedName{AttrGPUModuleID}},
		{"fabric", func(d *inventory.Device) {
			d.Fabric = inventory.Fabric{ClusterUUID: "c0ffee00-0000-4000-8000-000000000001", CliqueID: 0}
		},
			[]resourceapi.QualifiedName{AttrClusterUUID, AttrCliqueID}},
		{"clique without cluster", func(d *inventory.Device) { d.Fabric.CliqueID = 5 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := base
			tc.edit(&g)
			inv := &inventory.Inventory{DriverVersion: "580.65.06", CUDADriverVersion: "13.0", Devices: []inventory.Device{g}}
			d := Devices(inv, devices.FromInventory(inv), Options{})[0]
			var got []resourceapi.QualifiedName
			for _, a := range []resourceapi.QualifiedName{AttrNUMANode, AttrAddressingMode, AttrGPUModuleID, AttrClusterUUID, AttrCliqueID} {
				if _, ok := d.Attributes[a]; ok {
					got = append(got, a)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("topology attributes %v, want %v", got, tc.want)
			}
			if tc.name == "fabric" && stringAttr(t, d, AttrCliqueID) != "c0ffee00-0000-4000-8000-000000000001.0" {
				t.Errorf("cliqueID %q", stringAttr(t, d, AttrCliqueID))
			}
		})
	}
}

// topologyDevices publishes a dgxh100 (fabric) and a dgxa100 (none), as two
// nodes of one cluster.
func topologyDevices(t *testing.T) []celDevice {
	t.Helper()
	var out []celDevice
	for _, machine := range []string{"dgxh100", "dgxa100"} {
		inv := topologyInventory(t, machine, "node-"+machine)
		for i, d := range Devices(inv, devices.FromInventory(inv), Options{}) {
			out = append(out, celDevice{machine: machine, gpu: inv.Devices[i], device: d})
		}
	}
	return out
}

// TestCELTopologySelectors evaluates selectors on the topology attributes
// with the Kubernetes CEL library.
func TestCELTopologySelectors(t *testing.T) {
	devs := topologyDevices(t)
	h100Clique2 := fmt.Sprintf("%s.2", uuid.UUID(mockmachine.FabricClusterUUID("dgxh100", "node-dgxh100")))
	for _, tc := range []struct {
		expr string
		want func(celDevice) bool
	}{
		{`device.attributes["resource.kubernetes.io"].numaNode == 1`, func(d celDevice) bool { return d.gpu.Index >= 4 }},
		{`device.attributes["gpu.nvidia.com"].gpuModuleID <= 2`, func(d celDevice) bool { return d.gpu.Index < 2 }},
		// Attributes only some devices have: guard with "in", or CEL
		// errors on the devices without them.
		{`"addressingMode" in device.attributes["gpu.nvidia.com"] && device.attributes["gpu.nvidia.com"].addressingMode == "HMM"`,
			func(d celDevice) bool { return d.machine == "dgxh100" }},
		{`"cliqueID" in device.attributes["gpu.nvidia.com"]`, func(d celDevice) bool { return d.machine == "dgxh100" }},
		{`"cliqueID" in device.attributes["gpu.nvidia.com"] && device.attributes["gpu.nvidia.com"].cliqueID == "` + h100Clique2 + `"`,
			func(d celDevice) bool { return d.machine == "dgxh100" && d.gpu.Index >= 4 }},
		{`"clusterUUID" in device.attributes["gpu.nvidia.com"] && device.attributes["gpu.nvidia.com"].cliqueID.startsWith(device.attributes["gpu.nvidia.com"].clusterUUID + ".")`,
			func(d celDevice) bool { return d.machine == "dgxh100" }},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			got := selectDevices(t, tc.expr, devs)
			for i, d := range devs {
				if got[i] != tc.want(d) {
					t.Errorf("%s/%s: matched=%v, want %v", d.machine, d.device.Name, got[i], !got[i])
				}
			}
		})
	}
}

// allocateClaim allocates, with the scheduler's allocator, a claim for count
// devices of the driver's class matching selector (none: any) under the
// given matchAttribute constraint (none: unconstrained), and returns the
// devices' names, or nil when the claim does not fit.
func (s *scheduler) allocateClaim(count int64, selector string, match resourceapi.FullyQualifiedName) []string {
	s.t.Helper()
	s.claims++
	req := resourceapi.DeviceRequest{Name: "gpus", Exactly: &resourceapi.ExactDeviceRequest{
		DeviceClassName: driverName, AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: count,
	}}
	if selector != "" {
		req.Exactly.Selectors = []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: selector}}}
	}
	claim := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("claim-%d", s.claims), Namespace: "default", UID: types.UID(fmt.Sprintf("uid-%d", s.claims))},
		Spec:       resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{req}}},
	}
	if match != "" {
		claim.Spec.Devices.Constraints = []resourceapi.DeviceConstraint{{MatchAttribute: &match}}
	}
	ctx := context.Background()
	alloc, err := structured.NewAllocator(ctx, structured.Features{PartitionableDevices: true, DeviceTaints: true},
		structured.AllocatedState{AllocatedDevices: s.inUse.Clone()}, classLister{}, s.slices, s.cache)
	if err != nil {
		s.t.Fatalf("NewAllocator: %v", err)
	}
	results, err := alloc.Allocate(ctx, s.node, []*resourceapi.ResourceClaim{claim})
	if err != nil {
		s.t.Fatalf("Allocate(%d, %q, %q): %v", count, selector, match, err)
	}
	if len(results) == 0 {
		return nil
	}
	var names []string
	for _, r := range results[0].Devices.Results {
		s.use(r.Device)
		names = append(names, r.Device)
	}
	slices.Sort(names)
	return names
}

func topologyScheduler(t *testing.T, machine string) (*scheduler, *inventory.Inventory) {
	inv := topologyInventory(t, machine, "node-a")
	set := devices.FromInventory(inv)
	return newScheduler(t, DriverResources("node-a", Devices(inv, set, Options{}), nil), "node-a"), inv
}

const (
	matchClique resourceapi.FullyQualifiedName = driverName + "/" + resourceapi.FullyQualifiedName(AttrCliqueID)
	matchNUMA   resourceapi.FullyQualifiedName = resourceapi.FullyQualifiedName(AttrNUMANode)
)

// cliqueOf returns the clique number (1 or 2) of a device "gpu-<i>" of an
// 8-GPU mock machine.
func cliqueOf(name string) int {
	var i int
	fmt.Sscanf(name, "gpu-%d", &i)
	return 1 + i/4
}

// TestAllocatorMatchClique proves with the scheduler's allocator that a
// matchAttribute on cliqueID keeps a claim's GPUs in one NVLink domain.
func TestAllocatorMatchClique(t *testing.T) {
	t.Run("two GPUs share a clique", func(t *testing.T) {
		s, _ := topologyScheduler(t, "dgxh100")
		// Leave one free GPU in clique 1 and three in clique 2: two GPUs
		// of one clique are only in clique 2.
		for _, n := range []string{"gpu-0", "gpu-1", "gpu-2", "gpu-4"} {
			s.use(n)
		}
		got := s.allocateClaim(2, "", matchClique)
		if len(got) != 2 || cliqueOf(got[0]) != 2 || cliqueOf(got[1]) != 2 {
			t.Fatalf("allocated %v, want two GPUs of clique 2 (gpu-5..gpu-7)", got)
		}
		// Without the constraint the first free GPUs are taken, across
		// cliques.
		if got := s.allocateClaim(2, "", ""); len(got) != 2 || cliqueOf(got[0]) == cliqueOf(got[1]) {
			t.Fatalf("unconstrained: allocated %v, want gpu-3 and one of clique 2", got)
		}
	})
	t.Run("five GPUs of one clique do not fit", func(t *testing.T) {
		s, _ := topologyScheduler(t, "dgxh100")
		if got := s.allocateClaim(5, "", matchClique); got != nil {
			t.Fatalf("allocated %v: a 4+4 machine has no clique of 5", got)
		}
		if got := s.allocateClaim(4, "", matchClique); len(got) != 4 || cliqueOf(got[0]) != cliqueOf(got[3]) {
			t.Fatalf("allocated %v, want one whole clique", got)
		}
		if got := s.allocateClaim(4, "", matchClique); len(got) != 4 || cliqueOf(got[0]) != cliqueOf(got[3]) {
			t.Fatalf("allocated %v, want the other clique", got)
		}
	})
	t.Run("GPUs without a fabric never match", func(t *testing.T) {
		s, _ := topologyScheduler(t, "dgxa100")
		if got := s.allocateClaim(1, "", matchClique); got != nil {
			t.Fatalf("allocated %v on GPUs without cliqueID", got)
		}
		if got := s.allocateClaim(2, "", ""); len(got) != 2 {
			t.Fatalf("unconstrained: allocated %v", got)
		}
	})
	t.Run("NUMA node", func(t *testing.T) {
		s, _ := topologyScheduler(t, "dgxa100")
		for _, n := range []string{"gpu-0", "gpu-1", "gpu-5"} {
			s.use(n)
		}
		// NUMA node 0 has gpu-2 and gpu-3 left, node 1 has three: three
		// GPUs of one NUMA node are on node 1.
		got := s.allocateClaim(3, "", matchNUMA)
		if fmt.Sprint(got) != "[gpu-4 gpu-6 gpu-7]" {
			t.Fatalf("allocated %v, want gpu-4, gpu-6, gpu-7", got)
		}
		if got := s.allocateClaim(1, `device.attributes["resource.kubernetes.io"].numaNode == 1`, ""); got != nil {
			t.Fatalf("allocated %v on a full NUMA node 1", got)
		}
		if got := s.allocateClaim(2, `device.attributes["resource.kubernetes.io"].numaNode == 0`, ""); fmt.Sprint(got) != "[gpu-2 gpu-3]" {
			t.Fatalf("allocated %v, want gpu-2, gpu-3", got)
		}
	})
}

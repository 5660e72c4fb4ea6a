package benchmark

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	dracel "k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

const (
	driverName = "gpu.nvidia.com"
	nodeName   = "node-a"
	gpus       = 8
	mib        = 1 << 20
)

// h100Layout is the MIG layout of an H100 80GB HBM3 as NVML reports it:
// 25 placements over 8 memory slices.
func h100Layout(uuid string) inventory.MIGLayout {
	p := func(id int, name string, slices uint32, memMiB uint64, sm, ce, dec, jpeg, ofa uint32, size int, starts ...int) inventory.MIGProfile {
		ci, _ := inventory.ComputeInstanceProfileFor(slices)
		prof := inventory.MIGProfile{Name: name, GPUInstanceProfileID: id, ComputeInstanceProfileID: ci, Slices: slices,
			MemoryBytes: memMiB * mib, Multiprocessors: sm, CopyEngines: ce, Decoders: dec, JPEGs: jpeg, OFAs: ofa}
		for _, s := range starts {
			prof.Placements = append(prof.Placements, inventory.MIGPlacement{Start: s, Size: size})
		}
		return prof
	}
	return inventory.MIGLayout{
		ParentUUID: uuid, MemorySlices: 8, ModeSwitchable: true,
		Profiles: []inventory.MIGProfile{
			p(0, "7g.80gb", 7, 81152, 132, 8, 7, 7, 1, 8, 0),
			p(5, "4g.40gb", 4, 40448, 64, 4, 4, 4, 0, 4, 0),
			p(9, "3g.40gb", 3, 40448, 60, 3, 3, 3, 0, 4, 0, 4),
			p(14, "2g.20gb", 2, 20096, 32, 2, 2, 2, 0, 2, 0, 2, 4),
			p(15, "1g.20gb", 1, 20096, 26, 1, 1, 1, 0, 2, 0, 2, 4, 6),
			p(19, "1g.10gb", 1, 9984, 16, 1, 1, 1, 0, 1, 0, 1, 2, 3, 4, 5, 6),
			p(20, "1g.10gb+me", 1, 9984, 16, 1, 1, 1, 1, 1, 0, 1, 2, 3, 4, 5, 6),
		},
	}
}

// node returns the slices the plugin publishes for a node of 8 H100 GPUs,
// partitionable or whole, as the kubeletplugin helper's controller creates
// them.
func node(tb testing.TB, partitionable bool) []*resourceapi.ResourceSlice {
	inv := &inventory.Inventory{DriverVersion: "580.65.06", CUDADriverVersion: "13.0"}
	opts := devices.Options{Partitionable: map[string]inventory.MIGLayout{}}
	for i := range gpus {
		d := inventory.Device{
			Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%08d-h100", i),
			ProductName: "NVIDIA H100 80GB HBM3", Brand: "Nvidia", Architecture: "Hopper",
			CUDAComputeCapability: "9.0", MemoryBytes: 80 << 30,
			PCIBusID: fmt.Sprintf("0000:%02x:00.0", 0x18+i), MIGCapable: true,
		}
		inv.Devices = append(inv.Devices, d)
		if partitionable {
			opts.Partitionable[d.UUID] = h100Layout(d.UUID)
		}
	}
	set := devices.FromInventoryWith(inv, opts)
	devs, counters := resourceslice.Devices(inv, set, resourceslice.Options{}), resourceslice.CounterSets(set)
	want := map[bool][2]int{false: {gpus, 0}, true: {gpus * 26, gpus}}[partitionable]
	if len(devs) != want[0] || len(counters) != want[1] {
		tb.Fatalf("%d devices and %d counter sets, want %v", len(devs), len(counters), want)
	}
	pool := resourceslice.DriverResources(nodeName, devs, counters).Pools[nodeName]
	var out []*resourceapi.ResourceSlice
	for i, s := range pool.Slices {
		out = append(out, &resourceapi.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", nodeName, driverName, i)},
			Spec: resourceapi.ResourceSliceSpec{
				Driver:   driverName,
				Pool:     resourceapi.ResourcePool{Name: nodeName, Generation: 1, ResourceSliceCount: int64(len(pool.Slices))},
				NodeName: ptr(nodeName), Devices: s.Devices, SharedCounters: s.SharedCounters,
			},
		})
	}
	return out
}

func ptr[T any](v T) *T { return &v }

var gpuClass = &resourceapi.DeviceClass{
	ObjectMeta: metav1.ObjectMeta{Name: driverName},
	Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{{
		CEL: &resourceapi.CELDeviceSelector{Expression: `device.driver == "` + driverName + `"`},
	}}},
}

type classLister struct{}

func (classLister) List() ([]*resourceapi.DeviceClass, error) {
	return []*resourceapi.DeviceClass{gpuClass}, nil
}

func (classLister) Get(name string) (*resourceapi.DeviceClass, error) {
	if name != gpuClass.Name {
		return nil, apierrors.NewNotFound(resourceapi.Resource("deviceclasses"), name)
	}
	return gpuClass, nil
}

// Selectors of the claims.
const (
	wholeGPU = `device.attributes["` + driverName + `"].type == "gpu"`
	mig1g    = `device.attributes["` + driverName + `"].type == "mig" && device.attributes["` + driverName + `"].profile == "1g.10gb"`
)

func claim(selector string) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "claim", Namespace: "default", UID: "claim-uid"},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{
			Name: "gpu",
			Exactly: &resourceapi.ExactDeviceRequest{
				DeviceClassName: driverName,
				Selectors:       []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: selector}}},
				AllocationMode:  resourceapi.DeviceAllocationModeExactCount,
				Count:           1,
			},
		}}}},
	}
}

// benchAllocate measures one Allocate of a claim for one device matching
// selector, on an allocator built once over slices with the whole GPUs
// gpu-0 .. gpu-<busy-1> in use (what the scheduler's Filter does per node
// once PreFilter has built the allocator), and checks it lands on want.
func benchAllocate(b *testing.B, slices []*resourceapi.ResourceSlice, selector string, busy int, want string) {
	ctx := context.Background()
	inUse := sets.New[structured.DeviceID]()
	for i := range busy {
		inUse.Insert(structured.MakeDeviceID(driverName, nodeName, fmt.Sprintf("gpu-%d", i)))
	}
	alloc, err := structured.NewAllocator(ctx, structured.Features{PartitionableDevices: true, DeviceTaints: true},
		structured.AllocatedState{AllocatedDevices: inUse}, classLister{}, slices, dracel.NewCache(10, dracel.Features{}))
	if err != nil {
		b.Fatal(err)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}
	claims := []*resourceapi.ResourceClaim{claim(selector)}
	check := func() {
		results, err := alloc.Allocate(ctx, n, claims)
		if err != nil || len(results) != 1 {
			b.Fatalf("Allocate: %v, %v", results, err)
		}
		if got := results[0].Devices.Results[0].Device; got != want {
			b.Fatalf("allocated %s, want %s", got, want)
		}
	}
	check() // compiles the CEL expressions, outside the measurement
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := alloc.Allocate(ctx, n, claims); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocateWholeGPUs: 8 GPUs published whole, a claim for one
// GPU, on an empty node and with 7 GPUs in use.
func BenchmarkAllocateWholeGPUs(b *testing.B) {
	slices := node(b, false)
	b.Run("gpu", func(b *testing.B) { benchAllocate(b, slices, wholeGPU, 0, "gpu-0") })
	b.Run("gpu-7-busy", func(b *testing.B) { benchAllocate(b, slices, wholeGPU, 7, "gpu-7") })
}

// BenchmarkAllocatePartitionable: the same 8 GPUs partitionable, a claim
// for one 1g.10gb partition or one whole GPU, on an empty node and with
// the whole gpu-0 .. gpu-6 in use (which the allocator learns from their
// consumed counters: their partitions are candidates it must reject).
func BenchmarkAllocatePartitionable(b *testing.B) {
	slices := node(b, true)
	b.Run("1g.10gb", func(b *testing.B) { benchAllocate(b, slices, mig1g, 0, "gpu-0-mig-1g10gb-19-6") })
	b.Run("gpu", func(b *testing.B) { benchAllocate(b, slices, wholeGPU, 0, "gpu-0") })
	b.Run("1g.10gb-7-busy", func(b *testing.B) { benchAllocate(b, slices, mig1g, 7, "gpu-7-mig-1g10gb-19-6") })
	b.Run("gpu-7-busy", func(b *testing.B) { benchAllocate(b, slices, wholeGPU, 7, "gpu-7") })
}

package resourceslice

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	dracel "k8s.io/dynamic-resource-allocation/cel"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/dynamic-resource-allocation/structured"

	"github.com/gpudra/gpudra/pkg/devices"
)

// classLister serves one DeviceClass, driverName, that selects the
// driver's devices.
type classLister struct{}

var gpuClass = &resourceapi.DeviceClass{
	ObjectMeta: metav1.ObjectMeta{Name: driverName},
	Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{{
		CEL: &resourceapi.CELDeviceSelector{Expression: `device.driver == "` + driverName + `"`},
	}}},
}

func (classLister) List() ([]*resourceapi.DeviceClass, error) {
	return []*resourceapi.DeviceClass{gpuClass}, nil
}

func (classLister) Get(name string) (*resourceapi.DeviceClass, error) {
	if name != gpuClass.Name {
		return nil, apierrors.NewNotFound(resourceapi.Resource("deviceclasses"), name)
	}
	return gpuClass, nil
}

// apiSlices turns res into the ResourceSlices that the kubeletplugin
// helper's controller creates for node.
func apiSlices(res draresourceslice.DriverResources, node string) []*resourceapi.ResourceSlice {
	var out []*resourceapi.ResourceSlice
	for poolName, pool := range res.Pools {
		for i, s := range pool.Slices {
			out = append(out, &resourceapi.ResourceSlice{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", node, driverName, i)},
				Spec: resourceapi.ResourceSliceSpec{
					Driver:         driverName,
					Pool:           resourceapi.ResourcePool{Name: poolName, Generation: 1, ResourceSliceCount: int64(len(pool.Slices))},
					NodeName:       &node,
					Devices:        s.Devices,
					SharedCounters: s.SharedCounters,
				},
			})
		}
	}
	return out
}

// scheduler allocates claims one after the other with the scheduler's
// structured allocator on one node, keeping the devices it allocated in
// use, as the scheduler does once the claims' allocations are stored.
type scheduler struct {
	t      *testing.T
	node   *corev1.Node
	slices []*resourceapi.ResourceSlice
	inUse  sets.Set[structured.DeviceID]
	cache  *dracel.Cache
	claims int
}

func newScheduler(t *testing.T, res draresourceslice.DriverResources, node string) *scheduler {
	return &scheduler{
		t: t, node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}},
		slices: apiSlices(res, node), inUse: sets.New[structured.DeviceID](),
		cache: dracel.NewCache(10, dracel.Features{}),
	}
}

// allocate places a claim for one device matching selector (a CEL
// expression) and returns the allocated device's name, or "" when the
// claim does not fit.
func (s *scheduler) allocate(selector string) string {
	s.t.Helper()
	s.claims++
	claim := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("claim-%d", s.claims), Namespace: "default", UID: types.UID(fmt.Sprintf("uid-%d", s.claims))},
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
	ctx := context.Background()
	alloc, err := structured.NewAllocator(ctx, structured.Features{PartitionableDevices: true, DeviceTaints: true},
		structured.AllocatedState{AllocatedDevices: s.inUse.Clone()}, classLister{}, s.slices, s.cache)
	if err != nil {
		s.t.Fatalf("NewAllocator: %v", err)
	}
	results, err := alloc.Allocate(ctx, s.node, []*resourceapi.ResourceClaim{claim})
	if err != nil {
		// Also an invalid pool: the allocator reports it only when nothing
		// fits.
		s.t.Fatalf("Allocate(%s): %v", selector, err)
	}
	if len(results) == 0 {
		return ""
	}
	if len(results) != 1 || len(results[0].Devices.Results) != 1 {
		s.t.Fatalf("Allocate(%s) = %+v, want one device", selector, results)
	}
	r := results[0].Devices.Results[0]
	id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
	if s.inUse.Has(id) {
		s.t.Fatalf("Allocate(%s) allocated %s, which is in use", selector, r.Device)
	}
	s.inUse.Insert(id)
	return r.Device
}

// profileSelector selects the MIG devices of a profile. Whole GPUs have no
// profile attribute, so the type comes first: CEL's && skips the error of
// the missing attribute when the type does not match.
// use marks the device named name in use, as if a claim that the
// scheduler allocated earlier held it.
func (s *scheduler) use(name string) {
	s.inUse.Insert(structured.MakeDeviceID(driverName, s.node.Name, name))
}

func profileSelector(profile string) string {
	return `device.attributes["` + driverName + `"].type == "mig" && device.attributes["` + driverName + `"].profile == "` + profile + `"`
}

const wholeGPUSelector = `device.attributes["` + driverName + `"].type == "gpu"`

var h100Profiles = []string{"7g.80gb", "4g.40gb", "3g.40gb", "2g.20gb", "1g.20gb", "1g.10gb", "1g.10gb+me"}

// h100Scheduler returns a scheduler over a node with n partitionable H100
// GPUs, published by Devices, CounterSets and DriverResources.
func h100Scheduler(t *testing.T, n int) *scheduler {
	inv, opts := h100Node(n)
	set := devices.FromInventoryWith(inv, opts)
	res := DriverResources("node-a", Devices(inv, set, Options{}), CounterSets(set))
	checkPoolIsValid(t, res)
	return newScheduler(t, res, "node-a")
}

// TestAllocatorPartitionsH100 proves, with the scheduler's allocator, that
// the published counters let the scheduler place on a partitionable GPU
// exactly what the GPU can hold.
func TestAllocatorPartitionsH100(t *testing.T) {
	t.Run("two 3g.40gb, not three", func(t *testing.T) {
		s := h100Scheduler(t, 1)
		a, b := s.allocate(profileSelector("3g.40gb")), s.allocate(profileSelector("3g.40gb"))
		if a == "" || b == "" || a == b {
			t.Fatalf("two 3g.40gb claims got %q and %q, want two partitions", a, b)
		}
		if got := []string{a, b}; !slices.Equal(got, []string{"gpu-0-mig-3g40gb-9-4", "gpu-0-mig-3g40gb-9-0"}) {
			t.Errorf("allocated %v, want the placements at slices 4 and 0", got)
		}
		if c := s.allocate(profileSelector("3g.40gb")); c != "" {
			t.Errorf("a third 3g.40gb claim got %s", c)
		}
		for _, p := range h100Profiles {
			if got := s.allocate(profileSelector(p)); got != "" {
				t.Errorf("a %s claim got %s on a GPU full of 3g.40gb", p, got)
			}
		}
		if got := s.allocate(wholeGPUSelector); got != "" {
			t.Errorf("a whole-GPU claim got %s on a partitioned GPU", got)
		}
	})

	t.Run("a whole GPU on an empty GPU only", func(t *testing.T) {
		s := h100Scheduler(t, 1)
		if got := s.allocate(profileSelector("1g.10gb")); got != "gpu-0-mig-1g10gb-19-6" {
			t.Fatalf("a 1g.10gb claim got %q, want gpu-0-mig-1g10gb-19-6", got)
		}
		if got := s.allocate(wholeGPUSelector); got != "" {
			t.Errorf("a whole-GPU claim got %s next to a 1g.10gb partition", got)
		}

		s = h100Scheduler(t, 1)
		if got := s.allocate(wholeGPUSelector); got != "gpu-0" {
			t.Fatalf("a whole-GPU claim on an empty GPU got %q, want gpu-0", got)
		}
		for _, p := range h100Profiles {
			if got := s.allocate(profileSelector(p)); got != "" {
				t.Errorf("a %s claim got %s on an allocated whole GPU", p, got)
			}
		}
	})

	t.Run("seven 1g partitions, media extensions included", func(t *testing.T) {
		s := h100Scheduler(t, 1)
		var got []string
		for range 6 {
			got = append(got, s.allocate(profileSelector("1g.10gb")))
		}
		got = append(got, s.allocate(profileSelector("1g.10gb+me")))
		if slices.Contains(got, "") || len(sets.New(got...)) != 7 {
			t.Fatalf("seven 1g claims got %v", got)
		}
		if !strings.HasPrefix(got[6], "gpu-0-mig-1g10gb-me-20-") {
			t.Errorf("the 1g.10gb+me claim got %s", got[6])
		}
		for _, p := range []string{"1g.10gb", "1g.10gb+me", "1g.20gb"} {
			if extra := s.allocate(profileSelector(p)); extra != "" {
				t.Errorf("an eighth 1g claim (%s) got %s", p, extra)
			}
		}
	})

	t.Run("one media extension per GPU", func(t *testing.T) {
		s := h100Scheduler(t, 1)
		if s.allocate(profileSelector("1g.10gb+me")) == "" {
			t.Fatal("no 1g.10gb+me on an empty GPU")
		}
		// The GPU has one OFA engine.
		if got := s.allocate(profileSelector("1g.10gb+me")); got != "" {
			t.Errorf("a second 1g.10gb+me claim got %s", got)
		}
		if got := s.allocate(profileSelector("1g.10gb")); got == "" {
			t.Error("no 1g.10gb next to a 1g.10gb+me")
		}
	})

	t.Run("4g.40gb and 3g.40gb share a GPU", func(t *testing.T) {
		s := h100Scheduler(t, 1)
		if got := s.allocate(profileSelector("4g.40gb")); got != "gpu-0-mig-4g40gb-5-0" {
			t.Fatalf("4g.40gb got %q", got)
		}
		if got := s.allocate(profileSelector("3g.40gb")); got != "gpu-0-mig-3g40gb-9-4" {
			t.Errorf("3g.40gb next to 4g.40gb got %q, want the placement at slice 4", got)
		}
	})

	t.Run("placements exclude each other by memory slice", func(t *testing.T) {
		// A 1g.10gb at memory slice 0 leaves engines and memory enough
		// for a 4g.40gb, but not its only placement, slices 0 to 3.
		s := h100Scheduler(t, 1)
		s.use("gpu-0-mig-1g10gb-19-0")
		for _, p := range []string{"4g.40gb", "7g.80gb"} {
			if got := s.allocate(profileSelector(p)); got != "" {
				t.Errorf("a %s claim got %s, which overlaps the 1g.10gb at slice 0", p, got)
			}
		}
		if got := s.allocate(profileSelector("3g.40gb")); got != "gpu-0-mig-3g40gb-9-4" {
			t.Errorf("a 3g.40gb claim got %q, want the placement at slice 4", got)
		}
		// Slices 1 to 3 are left: one 2g.20gb (at 2) and a 1g.10gb.
		if got := s.allocate(profileSelector("2g.20gb")); got != "gpu-0-mig-2g20gb-14-2" {
			t.Errorf("a 2g.20gb claim got %q, want the placement at slice 2", got)
		}
		if got := s.allocate(profileSelector("2g.20gb")); got != "" {
			t.Errorf("a second 2g.20gb claim got %s", got)
		}
		if got := s.allocate(profileSelector("1g.10gb")); got != "gpu-0-mig-1g10gb-19-1" {
			t.Errorf("a 1g.10gb claim got %q, want the last free slice, 1", got)
		}
	})

	t.Run("eight GPUs", func(t *testing.T) {
		s := h100Scheduler(t, 8)
		if got := s.allocate(profileSelector("7g.80gb")); got != "gpu-0-mig-7g80gb-0-0" {
			t.Fatalf("7g.80gb got %q", got)
		}
		var whole []string
		for range 8 {
			if got := s.allocate(wholeGPUSelector); got != "" {
				whole = append(whole, got)
			}
		}
		if !slices.Equal(whole, []string{"gpu-1", "gpu-2", "gpu-3", "gpu-4", "gpu-5", "gpu-6", "gpu-7"}) {
			t.Errorf("whole GPUs next to a 7g.80gb on gpu-0: %v, want gpu-1 to gpu-7", whole)
		}
	})
}

package resourceslice

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	dracel "k8s.io/dynamic-resource-allocation/cel"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/dynamic-resource-allocation/structured"

	"github.com/gpudra/gpudra/pkg/devices"
)

// sharingFeatures are the allocator features of a 1.37 scheduler with
// consumable capacity (beta, on by default).
var sharingFeatures = structured.Features{ConsumableCapacity: true, PartitionableDevices: true, DeviceTaints: true, PrioritizedList: true}

// sharingScheduler allocates claims one after the other with the
// scheduler's structured allocator on one node and keeps what they got
// allocated as the scheduler does once the allocations are stored: a
// device allocated with a share ID as a shared device, with the capacity
// it consumes added to the device's aggregate, any other as in use.
type sharingScheduler struct {
	t      *testing.T
	node   *corev1.Node
	slices []*resourceapi.ResourceSlice
	state  structured.AllocatedState
	cache  *dracel.Cache
	claims int
}

func newSharingScheduler(t *testing.T, res draresourceslice.DriverResources, node string) *sharingScheduler {
	checkPoolIsValid(t, res)
	return &sharingScheduler{
		t: t, node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, slices: apiSlices(res, node),
		state: structured.AllocatedState{
			AllocatedDevices:         sets.New[structured.DeviceID](),
			AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
			AggregatedCapacity:       structured.NewConsumedCapacityCollection(),
		},
		cache: dracel.NewCache(10, dracel.Features{}),
	}
}

// mockH100Sharing returns a sharing scheduler over the mock H100 machine
// (8 GPUs of 81920Mi) published in consumable capacity mode mode.
func mockH100Sharing(t *testing.T, mode string) *sharingScheduler {
	c, err := ParseConsumableCapacity(mode)
	if err != nil {
		t.Fatal(err)
	}
	inv := mockInventory(t, "dgxh100", "node-a")
	return newSharingScheduler(t, DriverResources("node-a", Devices(inv, devices.FromInventory(inv), Options{ConsumableCapacity: c}), nil), "node-a")
}

// onGPU selects the whole GPU with NVML index i.
func onGPU(i int) string {
	return fmt.Sprintf(`%s && device.attributes["%s"].index == %d`, wholeGPUSelector, driverName, i)
}

// allocate places a claim for one device matching selector with the given
// capacity requests (none for nil) and returns its allocation result, or
// nil when the claim does not fit.
func (s *sharingScheduler) allocate(selector string, requests map[resourceapi.QualifiedName]string) *resourceapi.DeviceRequestAllocationResult {
	s.t.Helper()
	s.claims++
	req := &resourceapi.ExactDeviceRequest{
		DeviceClassName: driverName,
		Selectors:       []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: selector}}},
		AllocationMode:  resourceapi.DeviceAllocationModeExactCount,
		Count:           1,
	}
	if requests != nil {
		req.Capacity = &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{}}
		for name, v := range requests {
			req.Capacity.Requests[name] = resource.MustParse(v)
		}
	}
	claim := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("claim-%d", s.claims), Namespace: "default", UID: types.UID(fmt.Sprintf("uid-%d", s.claims))},
		Spec:       resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{Name: "gpu", Exactly: req}}}},
	}
	ctx := context.Background()
	alloc, err := structured.NewAllocator(ctx, sharingFeatures, structured.AllocatedState{
		AllocatedDevices:         s.state.AllocatedDevices.Clone(),
		AllocatedSharedDeviceIDs: s.state.AllocatedSharedDeviceIDs.Clone(),
		AggregatedCapacity:       s.state.AggregatedCapacity.Clone(),
	}, classLister{}, s.slices, s.cache)
	if err != nil {
		s.t.Fatalf("NewAllocator: %v", err)
	}
	results, err := alloc.Allocate(ctx, s.node, []*resourceapi.ResourceClaim{claim})
	if err != nil {
		s.t.Fatalf("Allocate(%s, %v): %v", selector, requests, err)
	}
	if len(results) == 0 {
		return nil
	}
	if len(results) != 1 || len(results[0].Devices.Results) != 1 {
		s.t.Fatalf("Allocate(%s, %v) = %+v, want one device", selector, requests, results)
	}
	r := results[0].Devices.Results[0]
	id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
	if r.ShareID == nil {
		if s.state.AllocatedDevices.Has(id) {
			s.t.Fatalf("Allocate(%s, %v) allocated %s, which is in use", selector, requests, r.Device)
		}
		s.state.AllocatedDevices.Insert(id)
		return &r
	}
	shared := structured.MakeSharedDeviceID(id, r.ShareID)
	if s.state.AllocatedSharedDeviceIDs.Has(shared) {
		s.t.Fatalf("Allocate(%s, %v): share %s allocated twice", selector, requests, shared)
	}
	s.state.AllocatedSharedDeviceIDs.Insert(shared)
	if r.ConsumedCapacity != nil {
		s.state.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
	}
	return &r
}

// checkShare checks that r is a share of device with a share ID not seen
// in ids (which it adds) that consumes exactly want.
func checkShare(t *testing.T, what string, r *resourceapi.DeviceRequestAllocationResult, device string, want map[resourceapi.QualifiedName]string, ids sets.Set[types.UID]) {
	t.Helper()
	if r == nil {
		t.Fatalf("%s: not allocated, want a share of %s", what, device)
	}
	if r.Device != device {
		t.Errorf("%s: got %s, want %s", what, r.Device, device)
	}
	if r.ShareID == nil || *r.ShareID == "" {
		t.Errorf("%s: no share ID", what)
	} else {
		if ids.Has(*r.ShareID) {
			t.Errorf("%s: share ID %s given twice", what, *r.ShareID)
		}
		ids.Insert(*r.ShareID)
	}
	got := map[resourceapi.QualifiedName]string{}
	for name, q := range r.ConsumedCapacity {
		got[name] = q.String()
	}
	ok := len(got) == len(want)
	for name, w := range want {
		if q, found := r.ConsumedCapacity[name]; !found || q.Cmp(resource.MustParse(w)) != 0 {
			ok = false
		}
	}
	if !ok {
		t.Errorf("%s: consumed capacity %v, want %v", what, got, want)
	}
}

// TestAllocatorSharesMemory: in "memory" mode the scheduler's allocator
// places memory shares on a GPU until its memory is used up, and gives a
// claim without capacity requests the whole GPU.
func TestAllocatorSharesMemory(t *testing.T) {
	const gib20 = "20Gi"
	mem := func(v string) map[resourceapi.QualifiedName]string {
		return map[resourceapi.QualifiedName]string{CapacityMemory: v}
	}

	t.Run("three 20Gi shares pinned to one GPU, then 30Gi does not fit it", func(t *testing.T) {
		s, ids := mockH100Sharing(t, "memory"), sets.New[types.UID]()
		for i := range 3 {
			checkShare(t, fmt.Sprintf("share %d", i), s.allocate(onGPU(3), mem(gib20)), "gpu-3", mem(gib20), ids)
		}
		if r := s.allocate(onGPU(3), mem("30Gi")); r != nil {
			t.Errorf("30Gi next to 60Gi on an 80Gi GPU got %+v", r)
		}
		checkShare(t, "30Gi anywhere", s.allocate(wholeGPUSelector, mem("30Gi")), "gpu-0", mem("30Gi"), ids)
		// 20Gi is exactly what gpu-3 has left, and then nothing is.
		checkShare(t, "the last 20Gi", s.allocate(onGPU(3), mem(gib20)), "gpu-3", mem(gib20), ids)
		if r := s.allocate(onGPU(3), mem("1")); r != nil {
			t.Errorf("one byte more on a full GPU got %+v", r)
		}
	})

	t.Run("the allocator puts three 20Gi on one GPU and 30Gi on another", func(t *testing.T) {
		s, ids := mockH100Sharing(t, "memory"), sets.New[types.UID]()
		first := s.allocate(wholeGPUSelector, mem(gib20))
		if first == nil {
			t.Fatal("no 20Gi share")
		}
		for i := range 2 {
			checkShare(t, fmt.Sprintf("share %d", i+1), s.allocate(wholeGPUSelector, mem(gib20)), first.Device, mem(gib20), ids)
		}
		fourth := s.allocate(wholeGPUSelector, mem("30Gi"))
		if fourth == nil || fourth.Device == first.Device {
			t.Fatalf("30Gi after 3×20Gi on %s got %+v, want another GPU", first.Device, fourth)
		}
		checkShare(t, "30Gi", fourth, fourth.Device, mem("30Gi"), ids)
	})

	t.Run("requests are rounded up to whole MiB", func(t *testing.T) {
		s, ids := mockH100Sharing(t, "memory"), sets.New[types.UID]()
		checkShare(t, "1500Ki", s.allocate(onGPU(0), mem("1500Ki")), "gpu-0", mem("2Mi"), ids)
		checkShare(t, "1 byte", s.allocate(onGPU(0), mem("1")), "gpu-0", mem("1Mi"), ids)
		// 81920Mi - 3Mi are left: 81917Mi fits, 81918Mi does not.
		if r := s.allocate(onGPU(0), mem("81918Mi")); r != nil {
			t.Errorf("81918Mi next to 3Mi got %+v", r)
		}
		checkShare(t, "the rest", s.allocate(onGPU(0), mem("81917Mi")), "gpu-0", mem("81917Mi"), ids)
		if r := s.allocate(wholeGPUSelector, mem("81921Mi")); r != nil {
			t.Errorf("more memory than any GPU has got %+v", r)
		}
	})

	t.Run("a claim without capacity requests takes the whole GPU", func(t *testing.T) {
		s, ids := mockH100Sharing(t, "memory"), sets.New[types.UID]()
		checkShare(t, "whole", s.allocate(onGPU(0), nil), "gpu-0", mem("81920Mi"), ids)
		if r := s.allocate(onGPU(0), mem("1Mi")); r != nil {
			t.Errorf("a share on a GPU taken whole got %+v", r)
		}
		if r := s.allocate(onGPU(0), nil); r != nil {
			t.Errorf("a second whole claim on the same GPU got %+v", r)
		}
		checkShare(t, "share elsewhere", s.allocate(wholeGPUSelector, mem(gib20)), "gpu-1", mem(gib20), ids)
		// ... and a GPU with a share cannot be taken whole.
		if r := s.allocate(onGPU(1), nil); r != nil {
			t.Errorf("a whole claim on a GPU with a share got %+v", r)
		}
		checkShare(t, "whole elsewhere", s.allocate(wholeGPUSelector, nil), "gpu-2", mem("81920Mi"), ids)
	})

	t.Run("a share asking for shares does not fit", func(t *testing.T) {
		s := mockH100Sharing(t, "memory")
		if r := s.allocate(wholeGPUSelector, map[resourceapi.QualifiedName]string{CapacityShares: "1"}); r != nil {
			t.Errorf("a shares request in memory mode got %+v", r)
		}
	})
}

// TestAllocatorSharesUnlimited: in "unlimited" mode a claim that requests
// no memory consumes none, so such claims never exhaust a GPU.
func TestAllocatorSharesUnlimited(t *testing.T) {
	s, ids := mockH100Sharing(t, "unlimited"), sets.New[types.UID]()
	mem := func(v string) map[resourceapi.QualifiedName]string {
		return map[resourceapi.QualifiedName]string{CapacityMemory: v}
	}
	checkShare(t, "80Gi", s.allocate(onGPU(0), mem("80Gi")), "gpu-0", mem("80Gi"), ids)
	for i := range 10 {
		checkShare(t, fmt.Sprintf("unqualified %d", i), s.allocate(onGPU(0), nil), "gpu-0", mem("0"), ids)
	}
	if r := s.allocate(onGPU(0), mem("1")); r != nil {
		t.Errorf("a memory share on a GPU whose memory is used up got %+v", r)
	}
}

// TestAllocatorSharesCount: with N = 4 shares per GPU a claim consumes the
// shares it asks for (one by default) and no memory unless it asks for
// some.
func TestAllocatorSharesCount(t *testing.T) {
	want := func(shares, memory string) map[resourceapi.QualifiedName]string {
		return map[resourceapi.QualifiedName]string{CapacityShares: shares, CapacityMemory: memory}
	}
	shares := func(v string) map[resourceapi.QualifiedName]string {
		return map[resourceapi.QualifiedName]string{CapacityShares: v}
	}

	t.Run("two claims of 2 shares fill a GPU, a third goes elsewhere", func(t *testing.T) {
		s, ids := mockH100Sharing(t, "4"), sets.New[types.UID]()
		checkShare(t, "first", s.allocate(onGPU(0), shares("2")), "gpu-0", want("2", "0"), ids)
		checkShare(t, "second", s.allocate(onGPU(0), shares("2")), "gpu-0", want("2", "0"), ids)
		if r := s.allocate(onGPU(0), shares("2")); r != nil {
			t.Errorf("a third claim of 2 shares on a 4-share GPU got %+v", r)
		}
		if r := s.allocate(onGPU(0), nil); r != nil {
			t.Errorf("a default claim (1 share) on a GPU with no share left got %+v", r)
		}
		checkShare(t, "third", s.allocate(wholeGPUSelector, shares("2")), "gpu-1", want("2", "0"), ids)
	})

	t.Run("defaults and memory", func(t *testing.T) {
		s, ids := mockH100Sharing(t, "4"), sets.New[types.UID]()
		checkShare(t, "unqualified", s.allocate(onGPU(0), nil), "gpu-0", want("1", "0"), ids)
		checkShare(t, "memory only", s.allocate(onGPU(0), map[resourceapi.QualifiedName]string{CapacityMemory: "60Gi"}), "gpu-0", want("1", "60Gi"), ids)
		checkShare(t, "both", s.allocate(onGPU(0), map[resourceapi.QualifiedName]string{CapacityShares: "1", CapacityMemory: "20Gi"}), "gpu-0", want("1", "20Gi"), ids)
		// One share is left, but no memory.
		if r := s.allocate(onGPU(0), map[resourceapi.QualifiedName]string{CapacityMemory: "1Mi"}); r != nil {
			t.Errorf("1Mi on a GPU whose memory is used up got %+v", r)
		}
		checkShare(t, "last share", s.allocate(onGPU(0), nil), "gpu-0", want("1", "0"), ids)
		if r := s.allocate(onGPU(0), nil); r != nil {
			t.Errorf("a fifth share got %+v", r)
		}
	})

	t.Run("more shares than a GPU has fit nowhere", func(t *testing.T) {
		s := mockH100Sharing(t, "4")
		if r := s.allocate(wholeGPUSelector, shares("5")); r != nil {
			t.Errorf("5 shares of 4 got %+v", r)
		}
		if r := s.allocate(onGPU(0), shares("3")); r == nil {
			t.Fatal("3 shares of 4 do not fit an empty GPU")
		}
		if r := s.allocate(onGPU(0), shares("2")); r != nil {
			t.Errorf("2 shares next to 3 of 4 got %+v", r)
		}
	})
}

// TestAllocatorDisabledAndPartitionableNotShared: without consumable
// capacity, and for partitionable GPUs with it, a GPU goes to one claim,
// with no share ID, whatever capacity the claim asks for.
func TestAllocatorDisabledAndPartitionableNotShared(t *testing.T) {
	mem := map[resourceapi.QualifiedName]string{CapacityMemory: "20Gi"}
	t.Run("disabled", func(t *testing.T) {
		s := mockH100Sharing(t, "disabled")
		r := s.allocate(onGPU(0), mem)
		if r == nil || r.Device != "gpu-0" || r.ShareID != nil || r.ConsumedCapacity != nil {
			t.Fatalf("a 20Gi claim got %+v, want gpu-0 unshared", r)
		}
		if r := s.allocate(onGPU(0), mem); r != nil {
			t.Errorf("a second claim on an unshared GPU got %+v", r)
		}
	})
	t.Run("partitionable", func(t *testing.T) {
		inv, opts := h100Node(1)
		set := devices.FromInventoryWith(inv, opts)
		s := newSharingScheduler(t, DriverResources("node-a",
			Devices(inv, set, Options{ConsumableCapacity: ConsumableCapacity{Mode: ConsumableMemory}}), CounterSets(set)), "node-a")
		r := s.allocate(wholeGPUSelector, mem)
		if r == nil || r.Device != "gpu-0" || r.ShareID != nil {
			t.Fatalf("a 20Gi claim got %+v, want gpu-0 unshared", r)
		}
		if r := s.allocate(wholeGPUSelector, mem); r != nil {
			t.Errorf("a second claim on a partitionable GPU got %+v", r)
		}
		if r := s.allocate(profileSelector("1g.10gb"), nil); r != nil {
			t.Errorf("a partition of a GPU allocated whole got %+v", r)
		}
	})
}

package publisher

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/workqueue"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

const (
	testNode   = "node-a"
	testDriver = "gpu.nvidia.com"
)

// fakeAPIServer is a fake clientset that, like the API server, turns
// metadata.generateName into a name.
func fakeAPIServer(objs ...runtime.Object) *fake.Clientset {
	client := fake.NewClientset(objs...)
	var n atomic.Int64
	client.PrependReactor("create", "resourceslices", func(action k8stesting.Action) (bool, runtime.Object, error) {
		slice := action.(k8stesting.CreateAction).GetObject().(*resourceapi.ResourceSlice)
		if slice.Name == "" && slice.GenerateName != "" {
			slice.Name = fmt.Sprintf("%s%05d", slice.GenerateName, n.Add(1))
		}
		return false, nil, nil
	})
	return client
}

func countActions(client *fake.Clientset, verb, resource string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

// sliceWrites counts the ResourceSlice creates, updates and deletes made
// through client.
func sliceWrites(client *fake.Clientset) int {
	n := 0
	for _, verb := range []string{"create", "update", "patch", "delete", "deletecollection"} {
		n += countActions(client, verb, "resourceslices")
	}
	return n
}

// syncSignalQueue is the controller's work queue; synced is closed when the
// worker is done with its first item (the only pool), after the sync and its
// API calls.
type syncSignalQueue struct {
	workqueue.TypedRateLimitingInterface[string]
	once   sync.Once
	synced chan struct{}
}

func (q *syncSignalQueue) Done(item string) {
	q.TypedRateLimitingInterface.Done(item)
	q.once.Do(func() { close(q.synced) })
}

// The library's controller must adopt the slices CreateInitialSlices made:
// no create, update or delete of its own. This guards the naming and
// generation contract against changes of k8s.io/dynamic-resource-allocation.
func TestCreateInitialSlicesAreAdoptedByTheController(t *testing.T) {
	inv := mockInventory(t, "dgxh100", testNode)
	for _, tc := range []struct {
		name    string
		devices []resourceapi.Device
	}{
		{"dgxh100", resourceslice.Devices(inv, devices.FromInventory(inv), resourceslice.Options{})},
		{"two slices", syntheticDevices(resourceslice.MaxDevicesPerSlice + 3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ctx := ktesting.NewTestContext(t)
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			client := fakeAPIServer(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode, UID: "node-uid"}})
			res := resourceslice.DriverResources(testNode, tc.devices, nil)

			created, err := CreateInitialSlices(ctx, client, testDriver, testNode, res)
			if err != nil {
				t.Fatal(err)
			}
			if want := len(res.Pools[testNode].Slices); created != want {
				t.Fatalf("created %d slices, want %d", created, want)
			}
			slices, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range slices.Items {
				if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != "node-uid" || !ptr.Deref(s.OwnerReferences[0].Controller, false) {
					t.Errorf("slice %s: owner references %+v, want the node as controller", s.Name, s.OwnerReferences)
				}
			}

			nodeGets := countActions(client, "get", "nodes")
			writes := sliceWrites(client)
			queue := &syncSignalQueue{
				TypedRateLimitingInterface: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
				synced:                     make(chan struct{}),
			}
			ctrl, err := draresourceslice.StartController(ctx, draresourceslice.Options{
				DriverName: testDriver, KubeClient: client,
				Owner:     &draresourceslice.Owner{APIVersion: "v1", Kind: "Node", Name: testNode},
				Resources: &draresourceslice.DriverResources{Pools: res.Pools},
				Queue:     queue,
				ErrorHandler: func(_ context.Context, err error, msg string) {
					t.Errorf("controller error: %s: %v", msg, err)
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer ctrl.Stop()
			// StartController returns once its informer has the slices and
			// the pool is queued; the worker is done with the pool's first
			// sync, API calls included, when it marks the item done.
			select {
			case <-queue.synced:
			case <-time.After(20 * time.Second):
				t.Fatal("the controller did not sync the pool within 20s")
			}
			// It went through the sync (it looks the node's UID up before
			// it decides what to change) and made no change.
			if countActions(client, "get", "nodes") == nodeGets {
				t.Error("the controller's pool sync did not look up the node")
			}
			if st := ctrl.GetStats(); st != (draresourceslice.Stats{}) {
				t.Errorf("the controller changed the initial slices: %+v", st)
			}
			if got := sliceWrites(client); got != writes {
				t.Errorf("the controller wrote ResourceSlices: %d API writes after CreateInitialSlices, want none", got-writes)
			}
		})
	}
}

func TestCreateInitialSlicesLeavesExistingSlicesToTheController(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	existing := &resourceapi.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "00000-gpu.nvidia.com-node-a-x"},
		Spec:       resourceapi.ResourceSliceSpec{Driver: testDriver, NodeName: ptr.To(testNode), Pool: resourceapi.ResourcePool{Name: testNode, Generation: 4, ResourceSliceCount: 1}},
	}
	other := existing.DeepCopy()
	other.Name, other.Spec.NodeName = "00000-gpu.nvidia.com-node-b-x", ptr.To("node-b")
	client := fakeAPIServer(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}}, existing, other)
	created, err := CreateInitialSlices(ctx, client, testDriver, testNode, resourceslice.DriverResources(testNode, syntheticDevices(2), nil))
	if err != nil || created != 0 {
		t.Fatalf("got %d created, err %v; want none: the node has a slice", created, err)
	}

	// Another node's slice does not count.
	client = fakeAPIServer(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: testNode}}, other)
	created, err = CreateInitialSlices(ctx, client, testDriver, testNode, resourceslice.DriverResources(testNode, syntheticDevices(2), nil))
	if err != nil || created != 1 {
		t.Fatalf("got %d created, err %v; want 1", created, err)
	}
}

func TestCreateInitialSlicesReportsAPIErrors(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := fakeAPIServer() // no node object
	_, err := CreateInitialSlices(ctx, client, testDriver, testNode, resourceslice.DriverResources(testNode, syntheticDevices(1), nil))
	if err == nil {
		t.Fatal("no error without the node object")
	}
	if n := countActions(client, "create", "resourceslices"); n != 0 {
		t.Fatalf("%d slices created although the owner is unknown", n)
	}
}

// mockInventory discovers the GPUs of a mock machine.
func mockInventory(tb testing.TB, machine, seed string) *inventory.Inventory {
	tb.Helper()
	_, inv := mockmachinetest.Machine(tb, machine, seed)
	return inv
}

// syntheticDevices returns n minimal devices named dev-<i>.
func syntheticDevices(n int) []resourceapi.Device {
	out := make([]resourceapi.Device, n)
	for i := range out {
		out[i] = resourceapi.Device{Name: fmt.Sprintf("dev-%d", i)}
	}
	return out
}

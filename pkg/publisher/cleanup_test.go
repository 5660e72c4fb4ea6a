package publisher

import (
	"context"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func TestDeleteDriverSlicesLeavesOtherDrivers(t *testing.T) {
	slice := func(name, driver, node string) *resourceapi.ResourceSlice {
		return &resourceapi.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
			Spec:       resourceapi.ResourceSliceSpec{Driver: driver, NodeName: ptr.To(node), Pool: resourceapi.ResourcePool{Name: node, ResourceSliceCount: 1}},
		}
	}
	client := fake.NewClientset(
		slice("a", testDriver, "node-a"), slice("b", testDriver, "node-b"),
		slice("c", "net.example.com", "node-a"),
	)
	ctx := context.Background()
	n, err := DeleteDriverSlices(ctx, client, testDriver)
	if err != nil || n != 2 {
		t.Fatalf("DeleteDriverSlices = %d, %v; want 2, nil", n, err)
	}
	left, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left.Items) != 1 || left.Items[0].Name != "c" {
		t.Fatalf("left %v, want only the other driver's slice", left.Items)
	}
	// Idempotent.
	if n, err := DeleteDriverSlices(ctx, client, testDriver); err != nil || n != 0 {
		t.Fatalf("second DeleteDriverSlices = %d, %v; want 0, nil", n, err)
	}
	if _, err := DeleteDriverSlices(ctx, client, ""); err == nil {
		t.Fatal("no error without a driver name")
	}
}

// A cluster that does not serve resource.k8s.io/v1 has no slices to delete.
func TestDeleteDriverSlicesWithoutTheResourceAPI(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "resourceslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Group: "resource.k8s.io", Resource: "resourceslices"}, "")
	})
	if n, err := DeleteDriverSlices(context.Background(), client, testDriver); err != nil || n != 0 {
		t.Fatalf("DeleteDriverSlices = %d, %v; want 0, nil", n, err)
	}
}

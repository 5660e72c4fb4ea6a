package publisher

import (
	"context"
	"fmt"
	"strconv"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"
)

// The resourceslice controller of k8s.io/dynamic-resource-allocation names a
// slice "<index in hex, at least 5 digits>-<driver>-<node>-<random>" and
// matches existing slices to its desired ones by that index.
const (
	controllerIndexMinDigits = 5
	controllerNameSeparator  = "-"
)

// CreateInitialSlices creates the node's ResourceSlices of driverName from
// resources directly, when the API server holds none of them yet, and
// returns how many it created. It makes the devices schedulable as soon as
// the plugin is ready: the resourceslice controller that the kubelet-plugin
// helper runs publishes only after its informer has synced, which it checks
// once per second, so a first start would otherwise take more than a second.
//
// Contract: the slices are exactly those that controller would create (names,
// pool generation 1, node owner reference), so it adopts them without an API
// call; were they to differ (a library change), the controller replaces them.
// Correctness therefore never depends on this function; the caller must
// still hand the same resources to the controller. It does nothing when any
// slice of the driver on the node exists (a restart: the controller keeps or
// updates those) or when resources has more than the node's pool.
func CreateInitialSlices(ctx context.Context, client kubernetes.Interface, driverName, nodeName string, resources draresourceslice.DriverResources) (int, error) {
	pool, ok := resources.Pools[nodeName]
	if !ok || len(resources.Pools) != 1 || len(pool.Slices) == 0 {
		return 0, nil
	}
	existing, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
		FieldSelector: fields.Set{resourceapi.ResourceSliceSelectorNodeName: nodeName, resourceapi.ResourceSliceSelectorDriver: driverName}.String(),
	})
	if err != nil {
		return 0, fmt.Errorf("listing the ResourceSlices of node %s: %w", nodeName, err)
	}
	for _, s := range existing.Items {
		// Filtered here too: not every API server (or fake) applies field
		// selectors on ResourceSlices.
		if s.Spec.Driver == driverName && ptr.Deref(s.Spec.NodeName, "") == nodeName {
			return 0, nil
		}
	}
	node, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("getting node %s for the owner reference of its ResourceSlices: %w", nodeName, err)
	}
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: nodeName, UID: node.UID, Controller: ptr.To(true)}
	digits := max(controllerIndexMinDigits, len(strconv.FormatInt(int64(len(pool.Slices)-1), 16)))
	created := 0
	for i, s := range pool.Slices {
		slice := &resourceapi.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName:    fmt.Sprintf("%0*x", digits, i) + controllerNameSeparator + driverName + controllerNameSeparator + nodeName + controllerNameSeparator,
				OwnerReferences: []metav1.OwnerReference{owner},
			},
			Spec: resourceapi.ResourceSliceSpec{
				Driver:   driverName,
				NodeName: ptr.To(nodeName),
				Pool: resourceapi.ResourcePool{
					Name:               nodeName,
					Generation:         max(pool.Generation, 1),
					ResourceSliceCount: int64(len(pool.Slices)),
				},
				Devices:                s.Devices,
				SharedCounters:         s.SharedCounters,
				PerDeviceNodeSelection: s.PerDeviceNodeSelection,
				PartitionTypeAttribute: s.PartitionTypeAttribute,
				SkipNodeOperations:     s.SkipNodeOperations,
			},
		}
		if _, err := client.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			return created, fmt.Errorf("creating ResourceSlice %d of %d of node %s: %w", i+1, len(pool.Slices), nodeName, err)
		}
		created++
	}
	return created, nil
}

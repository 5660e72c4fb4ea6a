package publisher

import (
	"context"
	"errors"
	"fmt"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// DeleteDriverSlices deletes every ResourceSlice of driverName in the
// cluster and returns how many it deleted. It is for when the driver's
// plugins are gone (uninstalled, or replaced by the classic device plugin):
// the slices are owned by their nodes and outlive the plugins, so the
// scheduler would go on allocating devices that no plugin prepares. A
// running plugin re-creates its node's slices, so stop the plugins first.
// Idempotent: slices already gone are not an error.
func DeleteDriverSlices(ctx context.Context, client kubernetes.Interface, driverName string) (int, error) {
	if driverName == "" {
		return 0, errors.New("deleting ResourceSlices: no driver name")
	}
	list, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector(resourceapi.ResourceSliceSelectorDriver, driverName).String(),
	})
	if apierrors.IsNotFound(err) {
		return 0, nil // the cluster does not serve resource.k8s.io/v1: no slices
	}
	if err != nil {
		return 0, fmt.Errorf("listing the ResourceSlices of driver %s: %w", driverName, err)
	}
	deleted := 0
	var errs []error
	for _, s := range list.Items {
		if s.Spec.Driver != driverName { // not every API server (or fake) filters
			continue
		}
		err := client.ResourceV1().ResourceSlices().Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &s.UID}})
		switch {
		case err == nil:
			deleted++
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// Gone, or replaced by a newer object: not ours to delete.
		default:
			errs = append(errs, fmt.Errorf("deleting ResourceSlice %s: %w", s.Name, err))
		}
	}
	return deleted, errors.Join(errs...)
}

package plugin

import (
	"context"
	"time"

	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/publisher"
)

// initialPublishTimeout bounds the direct creation of the first slices; the
// resourceslice controller publishes them anyway, only later.
const initialPublishTimeout = 2 * time.Second

// publishInitialSlices creates the node's slices directly on a first start
// (see publisher.CreateInitialSlices), so that the GPUs are schedulable
// without waiting for the resourceslice controller's first sync. Failures are
// logged and otherwise ignored: the controller publishes regardless. It
// reports whether the node's slices are in the API server now (created, or
// there from an earlier run).
func publishInitialSlices(ctx context.Context, cfg Config, resources draresourceslice.DriverResources) bool {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, initialPublishTimeout)
	defer cancel()
	created, err := publisher.CreateInitialSlices(ctx, cfg.KubeClient, cfg.DriverName, cfg.NodeName, resources)
	if err != nil {
		logger.Info("Could not create the first ResourceSlices directly; the ResourceSlice controller publishes them once its informer has synced", "err", err)
		return false
	}
	if created > 0 {
		logger.V(2).Info("Created the node's first ResourceSlices", "slices", created)
	}
	return true
}

package plugin

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/metrics"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// ReasonGPUUnusable is the reason of the Warning event on the node for a GPU
// that NVML enumerates but cannot use (inventory.UnusableDevice).
const ReasonGPUUnusable = "GPUUnusable"

// unusableMessage is what the plugin says of the unusable GPU u, in its
// event and its health report.
func unusableMessage(driverName string, u inventory.UnusableDevice) string {
	t := resourceslice.UnusableTaint(driverName, u)
	return fmt.Sprintf("%s is unusable: %v. The other GPUs are served; it is published as %s with the taint %s=%s:%s and is never prepared. Fix: %s.",
		u, u.Err, devices.UnusableName(u), t.Key, t.Value, t.Effect, u.Fix())
}

// reportUnusableGPUs sets the gpudra_unusable_gpus metric and records a
// Warning event on the node for every GPU that NVML cannot use, with its
// fix, so that `kubectl describe node` shows it next to the error that
// node.Open logged. Best effort: failed events are logged, never returned
// (the plugin serves the other GPUs).
func reportUnusableGPUs(ctx context.Context, client kubernetes.Interface, nodeName, driverName string, inv *inventory.Inventory, m *metrics.Metrics) {
	m.UnusableGPUs.Set(float64(len(inv.Unusable)))
	if len(inv.Unusable) == 0 {
		return
	}
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	for _, u := range inv.Unusable {
		msg := unusableMessage(driverName, u)
		logger.Info("Publishing an unusable GPU tainted; it is never prepared", "device", devices.UnusableName(u), "index", u.Index)
		if client == nil {
			continue
		}
		if err := recordNodeEvent(ctx, client, nodeName, ReasonGPUUnusable, msg); err != nil {
			logger.Error(err, "Recording the event of an unusable GPU", "index", u.Index)
		}
	}
}

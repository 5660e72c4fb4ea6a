package plugin

import (
	"context"
	"errors"
	"sync"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/metrics"
)

// driver implements kubeletplugin.DRAPlugin on top of a claimstate.State.
// Claims of one call are prepared in parallel; the helper is configured not
// to serialize calls, so different calls run in parallel too (claimstate
// serializes work on the same claim).
type driver struct {
	state    *claimstate.State
	metrics  *metrics.Metrics
	poolName string
	devices  []string // device names, for health reports
	// unusable are the published devices of the GPUs NVML cannot use, by
	// name, with what the health reports say of them: always Unhealthy.
	unusable map[string]string
	// healthResend is how often the health report is re-sent; it must be
	// below the kubelet's 30 s staleness timeout.
	healthResend time.Duration
	// fatal is called for background errors that retrying cannot fix.
	fatal func(error)
	// health feeds the health reports; nil: every device is healthy.
	health *healthWiring
	// warnShares, when set, is called after the prepare of a claim that
	// holds shares of GPUs that this node cannot enforce (no MPS).
	warnShares func(ctx context.Context, claim *resourceapi.ResourceClaim)
	// attributes are the published attributes of the node's devices, by
	// device name: the device metadata (KEP-5304) of each prepared device,
	// which the kubeletplugin helper writes to the metadata file it mounts
	// into the containers. Nil: no metadata.
	attributes map[string]map[string]resourceapi.DeviceAttribute
	// writeStatus, when set, is called after each successful prepare to
	// write the claim's status.devices entries; it must not block on the
	// API server, and its failures never fail the prepare.
	writeStatus func(ctx context.Context, claim *resourceapi.ResourceClaim)
}

var _ kubeletplugin.DRAPlugin = (*driver)(nil)

func (d *driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	results := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, claim := range claims {
		wg.Go(func() {
			start := time.Now()
			devs, err := d.prepareOne(ctx, claim)
			d.metrics.Observe(metrics.OpPrepare, start, err)
			if err != nil {
				klog.FromContext(ctx).Error(err, "Preparing claim failed", "claim", klog.KObj(claim), "claimUID", claim.UID)
			}
			mu.Lock()
			results[claim.UID] = kubeletplugin.PrepareResult{Devices: devs, Err: err}
			mu.Unlock()
		})
	}
	wg.Wait()
	d.metrics.PreparedClaims.Set(float64(len(d.state.PreparedClaims())))
	return results, nil
}

// prepareOne isolates a claim: a panic while preparing it fails that claim
// only, never the plugin or the other claims of the call.
func (d *driver) prepareOne(ctx context.Context, claim *resourceapi.ResourceClaim) (devs []kubeletplugin.Device, err error) {
	defer recoverInto(&err)
	devs, err = d.state.Prepare(ctx, claim)
	if err != nil {
		return devs, err
	}
	if d.warnShares != nil && d.state.HoldsShares(string(claim.UID)) {
		d.warnShares(ctx, claim)
	}
	d.addMetadata(devs)
	if d.writeStatus != nil {
		d.writeStatus(ctx, claim)
	}
	return devs, nil
}

// addMetadata attaches each device's published attributes as its device
// metadata. The attribute maps are shared and never modified.
func (d *driver) addMetadata(devs []kubeletplugin.Device) {
	if d.attributes == nil {
		return
	}
	for i := range devs {
		if attrs, ok := d.attributes[devs[i].DeviceName]; ok {
			devs[i].Metadata = &kubeletplugin.DeviceMetadata{Attributes: attrs}
		}
	}
}

func (d *driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	results := make(map[types.UID]error, len(claims))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, claim := range claims {
		wg.Go(func() {
			start := time.Now()
			err := d.unprepareOne(ctx, claim)
			d.metrics.Observe(metrics.OpUnprepare, start, err)
			if err != nil {
				klog.FromContext(ctx).Error(err, "Unpreparing claim failed", "claim", claim.NamespacedName, "claimUID", claim.UID)
			}
			mu.Lock()
			results[claim.UID] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	d.metrics.PreparedClaims.Set(float64(len(d.state.PreparedClaims())))
	return results, nil
}

func (d *driver) unprepareOne(ctx context.Context, claim kubeletplugin.NamespacedObject) (err error) {
	defer recoverInto(&err)
	return d.state.Unprepare(ctx, claim.Namespace, claim.Name, claim.UID)
}

// HandleError logs background errors (for example failed ResourceSlice
// updates, which the helper retries) and stops the plugin on fatal ones.
func (d *driver) HandleError(ctx context.Context, err error, msg string) {
	utilruntime.HandleErrorWithContext(ctx, err, msg)
	if !errors.Is(err, kubeletplugin.ErrRecoverable) && d.fatal != nil {
		d.fatal(err)
	}
}

// WatchHealthStatus sends the devices' health (see healthReport) at once,
// again whenever it changes, and re-sends it every healthResend (below the
// kubelet's staleness timeout) until ctx is done.
func (d *driver) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	ticker := time.NewTicker(d.healthResend)
	defer ticker.Stop()
	for {
		report, changed := d.healthReport()
		select {
		case <-ctx.Done():
			return nil
		case reports <- report:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-changed:
		}
	}
}

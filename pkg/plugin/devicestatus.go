package plugin

import (
	"context"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/devicestatus"
)

// maxStatusWrites bounds the status writes in flight: a burst of prepares
// queues its writes instead of competing with the helper's claim GETs for
// the client's rate limit all at once.
const maxStatusWrites = 8

// statusWriteTimeout bounds one claim's status write, retries included.
const statusWriteTimeout = 30 * time.Second

// deviceInfo returns, for the published devices, their attributes by name
// (the device metadata of the prepared devices) and the function that writes
// a prepared claim's status.devices entries in the background (see
// devicestatus.Writer). A failed write is logged and counted in
// gpudra_device_status_writes_total{result="error"}; it never fails the
// prepare, and the next prepare of the claim tries again. Stop waits for the
// writes in flight, which p.ctx cancels.
func (p *Plugin) deviceInfo(devices []resourceapi.Device) (map[string]map[string]resourceapi.DeviceAttribute, func(context.Context, *resourceapi.ResourceClaim)) {
	attributes := make(map[string]map[string]resourceapi.DeviceAttribute, len(devices))
	data := make(map[string]devicestatus.Data, len(devices))
	for _, d := range devices {
		attrs := make(map[string]resourceapi.DeviceAttribute, len(d.Attributes))
		for name, a := range d.Attributes {
			attrs[string(name)] = a
		}
		attributes[d.Name] = attrs
		data[d.Name] = devicestatus.DataFromAttributes(d.Attributes)
	}
	w := &devicestatus.Writer{
		Client: p.cfg.KubeClient, DriverName: p.cfg.DriverName, Pool: p.cfg.NodeName,
		Lookup:  func(device string) devicestatus.Data { return data[device] },
		Backoff: wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 5},
	}
	sem := make(chan struct{}, maxStatusWrites)
	write := func(prepareCtx context.Context, claim *resourceapi.ResourceClaim) {
		logger := klog.FromContext(prepareCtx).WithValues("claim", klog.KObj(claim), "claimUID", claim.UID)
		p.background.Add(1)
		go func() {
			defer p.background.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-p.ctx.Done():
				return
			}
			ctx, cancel := context.WithTimeout(klog.NewContext(p.ctx, logger), statusWriteTimeout)
			defer cancel()
			written, err := w.Write(ctx, claim)
			switch {
			case err != nil:
				p.metrics.DeviceStatusWrites.WithLabelValues("error").Inc()
				logger.Error(err, "Writing the claim's device status failed; the prepare stands")
			case written:
				p.metrics.DeviceStatusWrites.WithLabelValues("success").Inc()
				logger.V(3).Info("Wrote the claim's device status")
			}
		}()
	}
	return attributes, write
}

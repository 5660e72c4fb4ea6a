package deviceplugin

import (
	"context"

	"github.com/gpudra/gpudra/pkg/health"
)

// HealthSource is what WatchHealth follows; *health.Monitor is one.
type HealthSource interface {
	// Current returns the latest snapshot and a channel closed when a newer
	// one exists.
	Current() (health.Snapshot, <-chan struct{})
}

// WatchHealth applies src's GPU health to the plugin until ctx is done: a
// GPU is advertised Healthy only while src reports it healthy, so that the
// kubelet admits no new pod to a GPU with an error, and to none while the
// health monitor is down (unmonitored GPUs are Unhealthy too: the device
// plugin API has no "unknown"). Every change reaches the open ListAndWatch
// streams (see SetHealth); a GPU that recovers is Healthy again. It blocks;
// run it in its own goroutine, once per plugin.
func (p *Plugin) WatchHealth(ctx context.Context, src HealthSource) {
	for {
		snap, changed := src.Current()
		for _, d := range snap.Devices {
			if err := p.SetHealth(d.UUID, d.Healthy()); err != nil {
				p.logger.Error(err, "Health of a GPU the device plugin does not advertise", "uuid", d.UUID)
			} else if !d.Healthy() {
				p.logger.V(4).Info("GPU unhealthy", "uuid", d.UUID, "reason", d.Reason, "detail", d.Message)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

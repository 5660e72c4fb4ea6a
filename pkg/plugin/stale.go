package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/metrics"
)

// ReasonStaleClaimRemoved is the reason of the Warning event on the node for
// a recorded claim that the plugin unprepared because the API server no
// longer has it for this node (see claimstate's stale.go).
const ReasonStaleClaimRemoved = "StaleClaimRemoved"

// claimLookupTimeout bounds the GET of a recorded claim: on the prepare
// path, the kubelet is waiting.
const claimLookupTimeout = 5 * time.Second

// lookupClaim is claimstate.Options.LookupClaim over the plugin's client. It
// is a quorum read (no resourceVersion): an answer from a cache could call a
// claim created a moment ago gone.
func lookupClaim(client kubernetes.Interface) func(context.Context, string, string) (*resourceapi.ResourceClaim, error) {
	return func(ctx context.Context, namespace, name string) (*resourceapi.ResourceClaim, error) {
		ctx, cancel := context.WithTimeout(ctx, claimLookupTimeout)
		defer cancel()
		return client.ResourceV1().ResourceClaims(namespace).Get(ctx, name, metav1.GetOptions{})
	}
}

// staleClaimReporter is claimstate.Options.OnStaleClaim: it counts the
// stale claim and records a Warning event on the node (best effort; the
// plugin has logged the removal already).
func staleClaimReporter(client kubernetes.Interface, nodeName string, m *metrics.Metrics) func(context.Context, claimstate.StaleClaim) {
	return func(ctx context.Context, sc claimstate.StaleClaim) {
		trigger := metrics.TriggerSweep
		if sc.For != "" {
			trigger = metrics.TriggerPrepare
		}
		m.StaleClaimsRemoved.WithLabelValues(trigger).Inc()
		ctx, cancel := context.WithTimeout(ctx, eventTimeout)
		defer cancel()
		if err := recordNodeEvent(ctx, client, nodeName, ReasonStaleClaimRemoved, staleClaimMessage(sc)); err != nil {
			klog.FromContext(ctx).Error(err, "Recording the event of a stale claim", "staleClaim", klog.KRef(sc.Namespace, sc.Name), "staleClaimUID", sc.UID)
		}
	}
}

func staleClaimMessage(sc claimstate.StaleClaim) string {
	found := "the periodic check found it"
	if sc.For != "" {
		found = fmt.Sprintf("claim %s needed its device %s", sc.For, sc.Device)
	}
	return fmt.Sprintf("gpu-kubelet-plugin unprepared claim %s/%s (uid %s), prepared on this node at %s with devices %v, "+
		"because %s: %s. No kubelet can use it on this node any more; its devices are free again.",
		sc.Namespace, sc.Name, sc.UID, sc.PreparedAt.UTC().Format(time.RFC3339), sc.Devices, found, sc.Reason)
}

// sweepStaleClaims runs the claim state's stale sweep now and every
// interval until the plugin stops (see StaleClaimsConfig). Stop waits for
// it, so that a stopped plugin changes no file.
func (p *Plugin) sweepStaleClaims() {
	cfg := p.cfg.StaleClaims
	logger := klog.FromContext(p.ctx).WithName("stale-claims")
	if cfg.GracePeriod <= 0 {
		logger.Info("The sweep of stale claims is off (--stale-claim-grace-period=0): only a prepare that needs a device of one removes it")
		return
	}
	interval := cfg.SweepInterval
	if interval <= 0 {
		interval = min(cfg.GracePeriod, time.Minute)
	}
	logger.V(2).Info("Sweeping stale claims", "gracePeriod", cfg.GracePeriod, "interval", interval)
	ctx := klog.NewContext(p.ctx, logger)
	p.background.Go(func() {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			removed, errs := p.state.SweepStale(ctx, cfg.GracePeriod)
			if len(removed) > 0 {
				p.metrics.PreparedClaims.Set(float64(len(p.state.PreparedClaims())))
			}
			if err := errors.Join(errs...); err != nil && ctx.Err() == nil {
				logger.Error(err, "Some recorded claims could not be checked; they are kept and checked again", "claims", len(errs), "retryIn", interval)
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	})
}

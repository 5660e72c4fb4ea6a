package plugin

import (
	"context"

	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/sharing"
	"github.com/gpudra/gpudra/pkg/sharing/mps"
)

// MPSConfig configures MPS sharing (package mps); cmd/gpu-kubelet-plugin
// fills it from --mps-daemon-image, --mps-base-dir and --namespace.
type MPSConfig struct {
	// DaemonImage is the image of the per-claim MPS daemon pods, the driver
	// image. Empty turns MPS off: claims asking for it fail to prepare with
	// an error that says so.
	DaemonImage string
	// BaseDir is the host directory of the claims' MPS directories; the
	// plugin must see it at the same path.
	BaseDir string
	// Namespace is the plugin's namespace, where the daemon pods run.
	Namespace string
	// PriorityClassName of the daemon pods; empty: none.
	PriorityClassName string
}

// NewMPSManager returns the MPS applier of the plugin, or nil when MPS is
// off. Start hands mpsApplier(m) to sharing.Composite{MPS: ...} and, once
// the claim state is loaded and reconciled and before serving, calls
// sweepMPS. The daemons use the driver at n's host driver root, or the mock
// daemon on a mock machine.
func NewMPSManager(ctx context.Context, cfg Config, n *node.Node) (*mps.Manager, error) {
	if cfg.MPS.DaemonImage == "" {
		klog.FromContext(ctx).Info("MPS sharing is off: no daemon image configured (--mps-daemon-image)")
		return nil, nil
	}
	return mps.New(mpsOptions(cfg, n))
}

func mpsOptions(cfg Config, n *node.Node) mps.Options {
	return mps.Options{
		Client:            cfg.KubeClient,
		Namespace:         cfg.MPS.Namespace,
		NodeName:          cfg.NodeName,
		Image:             cfg.MPS.DaemonImage,
		BaseDir:           cfg.MPS.BaseDir,
		HostDriverRoot:    n.Roots.HostDriver(),
		Mock:              n.Backend.Mock(),
		PriorityClassName: cfg.MPS.PriorityClassName,
	}
}

// NewSharedGPUs returns the applier that enforces GPU shares (one MPS
// daemon per shared GPU), or nil when GPUs are not shared or MPS is off
// (shares are then accounting only). claims is the claim state's
// SharingClaims.
func NewSharedGPUs(ctx context.Context, cfg Config, n *node.Node, claims func() []sharing.Claim) (*mps.SharedGPUs, error) {
	if !cfg.ConsumableCapacity.Enabled() {
		return nil, nil
	}
	if cfg.MPS.DaemonImage == "" {
		klog.FromContext(ctx).Info("GPU shares are accounting only: MPS is off, so their limits are not enforced (pods get a GPUShareNotEnforced event)")
		return nil, nil
	}
	return mps.NewSharedGPUs(mpsOptions(cfg, n), claims)
}

// sweepSharedGPUs removes the MPS daemons of shared GPUs that no recorded
// claim holds a share of. Errors are logged, like sweepMPS's.
func sweepSharedGPUs(ctx context.Context, s *mps.SharedGPUs, state *claimstate.State) {
	if s == nil {
		return
	}
	held := map[string]bool{}
	for _, c := range state.SharingClaims() {
		for _, d := range c.Devices {
			if d.Share != nil {
				held[d.GPUUUID()] = true
			}
		}
	}
	if err := s.Sweep(ctx, func(uuid string) bool { return held[uuid] }); err != nil {
		klog.FromContext(ctx).Error(err, "Removing the MPS daemons of shared GPUs without shares; they stay until the next start")
	}
}

// mpsApplier returns m as a sharing.Applier; nil (MPS off) when m is nil, so
// that the interface never holds a nil *mps.Manager.
func mpsApplier(m *mps.Manager) sharing.Applier {
	if m == nil {
		return nil
	}
	return m
}

// sweepMPS removes the MPS daemons and directories of claims that state does
// not hold (left behind by a crash between starting a daemon and recording
// its claim). Errors are logged: a leftover daemon costs resources but breaks
// nothing, and the next start tries again. Call it before serving the
// kubelet; a nil m does nothing.
func sweepMPS(ctx context.Context, m *mps.Manager, state *claimstate.State) {
	if m == nil {
		return
	}
	prepared := map[string]bool{}
	for _, uid := range state.PreparedClaims() {
		prepared[uid] = true
	}
	if err := m.Sweep(ctx, func(uid string) bool { return prepared[uid] }); err != nil {
		klog.FromContext(ctx).Error(err, "Removing the MPS daemons of claims that are not prepared; they stay until the next start")
	}
}

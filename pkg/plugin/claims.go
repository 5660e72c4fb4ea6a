package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/metrics"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// openClaimState opens the CDI spec directory and the claim checkpoint,
// writes the driver-wide CDI spec (when its content changed), builds the
// sharing appliers, loads the prepared claims and brings the CDI
// directory and the MPS daemons in line with them. It returns before
// anything serves the kubelet: no prepare runs while the MPS sweep decides
// which daemons belong to no prepared claim.
//
// With dynamic MIG on it decides first which GPUs are partitioned on demand
// (openDynamicMIG, which replaces n.Devices), from the MIG devices that
// the recorded claims name.
func openClaimState(ctx context.Context, cfg Config, n *node.Node, m *metrics.Metrics) (*claimstate.State, *dynamicMIG, error) {
	logger := klog.FromContext(ctx)
	naming := cdi.NewNaming(cfg.DriverName)
	specDir, err := cdi.NewSpecDir(cfg.Node.CDIRoot, naming)
	if err != nil {
		return nil, nil, fmt.Errorf("CDI root %s: %w", cfg.Node.CDIRoot, err)
	}
	dataDir := cfg.PluginDataDir()
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("creating the plugin data directory: %w", err)
	}
	store, err := checkpoint.NewStore(filepath.Join(dataDir, "claims"))
	if err != nil {
		return nil, nil, fmt.Errorf("opening the claim checkpoint: %w", err)
	}
	dm, err := openDynamicMIG(ctx, cfg, n, store)
	if err != nil {
		return nil, nil, err
	}
	var migDevices claimstate.MIGDevices
	if dm != nil {
		migDevices = dm.manager
	}
	bootID, err := readBootID(cfg.BootIDPath)
	if err != nil {
		return nil, nil, err
	}
	claimEdits, err := n.DeviceEdits(cfg.DynamicMIG.Enabled)
	if err != nil {
		return nil, nil, err
	}
	// The driver-wide spec, before anything can write a claim spec that
	// references it: the start-up reconcile re-creates the missing specs of
	// prepared claims.
	driverSpec, err := cdi.DriverSpec(naming, claimEdits.Common())
	if err != nil {
		return nil, nil, err
	}
	written, err := specDir.WriteDriverSpec(driverSpec)
	if err != nil {
		return nil, nil, fmt.Errorf("CDI root %s: %w", cfg.Node.CDIRoot, err)
	}
	logger.V(2).Info("Driver-wide CDI spec in place", "path", specDir.DriverSpecPath(), "rewritten", written)
	// The static device spec, likewise: exclusive claims of these devices
	// are prepared without a spec of their own.
	deviceSpec, deviceErrs, err := claimstate.StaticDeviceSpec(naming, n.Devices, claimEdits)
	if err != nil {
		return nil, nil, err
	}
	for _, err := range deviceErrs {
		logger.Error(err, "Claims of this device get a CDI spec of their own")
	}
	written, err = specDir.WriteDeviceSpec(deviceSpec)
	if err != nil {
		return nil, nil, fmt.Errorf("CDI root %s: %w", cfg.Node.CDIRoot, err)
	}
	logger.V(2).Info("Static device CDI spec in place", "path", specDir.DeviceSpecPath(), "rewritten", written)
	mpsManager, err := NewMPSManager(ctx, cfg, n)
	if err != nil {
		return nil, nil, fmt.Errorf("MPS sharing: %w", err)
	}
	// The time slicer reads the recorded claims of the state created
	// below; it does so only in Undo, which nothing calls before New returns.
	var state *claimstate.State
	sharingClaims := func() []sharing.Claim { return state.SharingClaims() }
	sharedGPUs, err := NewSharedGPUs(ctx, cfg, n, sharingClaims)
	if err != nil {
		return nil, nil, fmt.Errorf("GPU shares: %w", err)
	}
	var shares sharing.Applier
	if sharedGPUs != nil {
		shares = sharedGPUs
	}
	applier := newSharing(ctx, cfg, n, sharingClaims, mpsApplier(mpsManager), shares)
	state, loadErrs, err := claimstate.New(ctx, claimstate.Options{
		DriverName: cfg.DriverName, PoolName: cfg.NodeName, Devices: n.Devices, Edits: claimEdits,
		Specs: specDir, Naming: naming, UseDriverSpec: true, DeviceSpec: deviceSpec, Checkpoints: store, BootID: bootID, Sharing: applier,
		LookupClaim: lookupClaim(cfg.KubeClient), OnStaleClaim: staleClaimReporter(cfg.KubeClient, cfg.NodeName, m),
		MIG: migDevices, ComputeShares: int64(cfg.ConsumableCapacity.Shares),
	})
	if err != nil {
		return nil, nil, err
	}
	for _, le := range loadErrs {
		m.CheckpointErrors.Inc()
		logger.Error(le.Err, "Claim checkpoint file cannot be read; the claim it holds is not recovered. Move the file away after checking it", "path", le.Path)
	}
	reportUnreadableCheckpoints(ctx, cfg.KubeClient, cfg.NodeName, loadErrs)
	report := state.Reconcile(ctx)
	for _, err := range report.Errors {
		logger.Error(err, "Reconciling checkpoint and CDI directory")
	}
	logger.Info("Reconciled checkpoint and CDI directory", "preparedClaims", len(state.PreparedClaims()),
		"specsRecreated", report.SpecsRecreated, "orphansRemoved", report.OrphansRemoved, "fromPreviousBoot", report.FromPreviousBoot, "sharingReapplied", report.SharingReapplied,
		"migRolledBack", report.MIGRolledBack, "migRecreated", report.MIGRecreated, "unpreparesFinished", report.UnpreparesFinished)
	m.PreparedClaims.Set(float64(len(state.PreparedClaims())))
	sweepCtx, cancelSweep := context.WithTimeout(ctx, 10*time.Second)
	sweepMPS(sweepCtx, mpsManager, state)
	sweepSharedGPUs(sweepCtx, sharedGPUs, state)
	cancelSweep()
	return state, dm, nil
}

func readBootID(path string) (string, error) {
	if path == "" {
		return checkpoint.ReadBootID()
	}
	return checkpoint.ReadBootIDFile(path)
}

// Package plugin assembles the GPU DRA kubelet plugin: it discovers the GPUs,
// recovers the prepared claims, publishes the node's ResourceSlices and
// serves the kubelet through k8s.io/dynamic-resource-allocation/kubeletplugin.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/driverwatch"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/metrics"
	"github.com/gpudra/gpudra/pkg/mockhost"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// Config is everything the plugin needs; cmd/gpu-kubelet-plugin fills it
// from flags and environment variables.
type Config struct {
	NodeName   string
	DriverName string
	// NVMLBackend is inventory.BackendReal or "mock:<machine>".
	NVMLBackend string
	// DriverRoot is where the NVIDIA driver is installed ("/" or
	// "/run/nvidia/driver"); DevRoot where its device nodes are ("" = auto).
	DriverRoot string
	DevRoot    string
	// HostDriverRoot is DriverRoot as the container runtime on the host sees
	// it, when the plugin runs in a container that mounts the host's driver
	// root elsewhere; empty means DriverRoot.
	HostDriverRoot string
	// MockHostRoot, with a mock NVML backend, is a directory (seen at the
	// same path by the plugin and the host) in which the plugin lays out the
	// mock driver's files and device nodes; it then serves as driver root.
	MockHostRoot string
	// InstallHookFrom, when set, is a nvidia-cdi-hook binary that the plugin
	// copies to HookPath at start (from its image to the host).
	InstallHookFrom string
	// CDIRoot is the CDI spec directory the container runtime reads.
	CDIRoot string
	// HookPath is the host path of nvidia-cdi-hook.
	HookPath string
	// KubeletRegistrarDir is the kubelet's plugin registration directory.
	KubeletRegistrarDir string
	// KubeletPluginsDir is the parent of the plugin data directory
	// (<KubeletPluginsDir>/<DriverName>), which holds the DRA socket and the
	// claim checkpoint.
	KubeletPluginsDir string
	// PodUID, when set, enables seamless rolling updates of the DaemonSet.
	PodUID types.UID
	// KubeClient talks to the API server.
	KubeClient kubernetes.Interface
	// MetricsAddress serves /metrics, /healthz and /readyz ("" = off).
	MetricsAddress string
	// Profiling also serves Go's /debug/pprof/ on MetricsAddress.
	Profiling bool
	// HealthResendInterval defaults to 15 s.
	HealthResendInterval time.Duration
	// BootIDPath defaults to checkpoint's boot ID file.
	BootIDPath string
	// DriverWatchInterval is how often the plugin checks whether the driver
	// changed; it stops with an error when it did, so that it restarts with
	// edits of the new driver. Zero turns the check off.
	DriverWatchInterval time.Duration
	// HealthMonitor turns on GPU health monitoring through NVML events:
	// unhealthy GPUs are reported to the kubelet and tainted in the
	// ResourceSlices (see pkg/health).
	HealthMonitor bool
	// AdditionalIgnoredXIDs are XIDs ignored on top of
	// health.DefaultIgnoredXIDs, or instead of them with ReplaceIgnoredXIDs.
	AdditionalIgnoredXIDs []uint64
	ReplaceIgnoredXIDs    bool
	// HealthRecoveryPeriod is how long a GPU with a critical XID or
	// double-bit ECC error must stay free of errors to lose its taint; 0
	// means never (reset the GPU, then restart the plugin).
	HealthRecoveryPeriod time.Duration
	// TaintEffect of unhealthy GPUs: "NoSchedule" (default) or "NoExecute".
	// Unmonitored GPUs are always tainted NoSchedule.
	TaintEffect string
	// MPS configures MPS sharing (see mps.go); a zero value turns it off.
	MPS MPSConfig
}

// PluginDataDir is where the plugin keeps its socket and checkpoint.
func (c Config) PluginDataDir() string { return filepath.Join(c.KubeletPluginsDir, c.DriverName) }

// Plugin is a running plugin.
type Plugin struct {
	helper      *kubeletplugin.Helper
	lib         nvml.Interface
	state       *claimstate.State
	inventory   *inventory.Inventory
	metricsAddr net.Addr
	ctx         context.Context
	cancel      context.CancelCauseFunc
	health      *healthWiring // nil without health monitoring
}

// Start brings the plugin up and returns once it serves the kubelet. On a
// node without slices of the driver it has created them by then; the
// resourceslice controller, which keeps them in line from then on, starts in
// the background as soon as the API server answers. The metrics server's
// /readyz turns ready once the node's slices are published. It fails, and
// leaves nothing running, when NVML cannot be loaded or a directory cannot be
// used: a half-running plugin is worse than one that does not start.
//
// The plugin runs until ctx is done or a fatal background error occurs; Done
// is closed then, and Err tells why.
func Start(ctx context.Context, cfg Config) (_ *Plugin, finalErr error) {
	logger := klog.FromContext(ctx)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.HealthResendInterval <= 0 {
		cfg.HealthResendInterval = 15 * time.Second
	}
	ctx, cancel := context.WithCancelCause(ctx)
	p := &Plugin{ctx: ctx, cancel: cancel}
	defer func() {
		if finalErr != nil {
			p.Stop()
		}
	}()

	lib, err := inventory.Open(cfg.NVMLBackend, cfg.DriverRoot, cfg.NodeName)
	if err != nil {
		return nil, err
	}
	p.lib = lib
	inv, err := inventory.Discover(lib)
	if err != nil {
		return nil, fmt.Errorf("discovering GPUs: %w", err)
	}
	p.inventory = inv
	if cfg.MockHostRoot != "" {
		if err := mockhost.CreateForBackend(cfg.NVMLBackend, cfg.MockHostRoot, inv); err != nil {
			return nil, err
		}
		cfg.DriverRoot, cfg.HostDriverRoot, cfg.DevRoot = cfg.MockHostRoot, cfg.MockHostRoot, cfg.MockHostRoot
	}
	if cfg.InstallHookFrom != "" {
		if err := installFile(cfg.InstallHookFrom, cfg.HookPath); err != nil {
			return nil, fmt.Errorf("installing nvidia-cdi-hook: %w", err)
		}
	}
	logger.Info("Discovered GPUs", "count", len(inv.Devices), "driverVersion", inv.DriverVersion, "cudaDriverVersion", inv.CUDADriverVersion, "backend", cfg.NVMLBackend)

	edits, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: cfg.DriverRoot, HostDriverRoot: cfg.HostDriverRoot, DevRoot: cfg.DevRoot, HookPath: cfg.HookPath}, inv.UUIDs())
	if err != nil {
		return nil, err
	}
	naming := cdi.NewNaming(cfg.DriverName)
	specDir, err := cdi.NewSpecDir(cfg.CDIRoot, naming)
	if err != nil {
		return nil, fmt.Errorf("CDI root %s: %w", cfg.CDIRoot, err)
	}
	dataDir := cfg.PluginDataDir()
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("creating the plugin data directory: %w", err)
	}
	store, err := checkpoint.NewStore(filepath.Join(dataDir, "claims"))
	if err != nil {
		return nil, fmt.Errorf("opening the claim checkpoint: %w", err)
	}
	bootID, err := readBootID(cfg.BootIDPath)
	if err != nil {
		return nil, err
	}

	m := metrics.New()
	m.ObserveAPIRequests()
	claimEdits, err := claimEdits(cfg, inv, edits) // adds the MIG devices (sharing.go)
	if err != nil {
		return nil, err
	}
	mpsManager, err := NewMPSManager(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("MPS sharing: %w", err)
	}
	applier := newSharing(ctx, cfg, store, mpsApplier(mpsManager))
	state, loadErrs, err := claimstate.New(ctx, claimstate.Options{
		DriverName: cfg.DriverName, PoolName: cfg.NodeName, Inventory: inv, Edits: claimEdits,
		Specs: specDir, Naming: naming, Checkpoints: store, BootID: bootID, Sharing: applier,
	})
	if err != nil {
		return nil, err
	}
	p.state = state
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
		"specsRecreated", report.SpecsRecreated, "orphansRemoved", report.OrphansRemoved, "fromPreviousBoot", report.FromPreviousBoot, "sharingReapplied", report.SharingReapplied)
	m.PreparedClaims.Set(float64(len(state.PreparedClaims())))
	// Before serving: no prepare may run while the sweep decides which
	// daemons belong to no prepared claim.
	sweepCtx, cancelSweep := context.WithTimeout(ctx, 10*time.Second)
	sweepMPS(sweepCtx, mpsManager, state)
	cancelSweep()

	var srv *metrics.Server
	if cfg.MetricsAddress != "" {
		srv = metrics.NewServer(m)
		srv.Profiling = cfg.Profiling
		addr, err := srv.ListenAndServe(ctx, cfg.MetricsAddress)
		if err != nil {
			return nil, fmt.Errorf("serving metrics on %s: %w", cfg.MetricsAddress, err)
		}
		p.metricsAddr = addr
	}

	sliceOpts := resourceslice.DefaultOptions()
	if strings.HasPrefix(cfg.NVMLBackend, "mock:") {
		// Mock bus IDs may name unrelated PCI devices of this host.
		sliceOpts.PCIeRoot = nil
	}
	devices := resourceslice.Devices(inv, sliceOpts)
	names := make([]string, 0, len(devices))
	for _, d := range devices {
		names = append(names, d.Name)
	}
	drv := &driver{
		state: state, metrics: m, poolName: cfg.NodeName, devices: names,
		healthResend: cfg.HealthResendInterval,
		fatal:        func(err error) { cancel(fmt.Errorf("fatal background error: %w", err)) },
	}
	hw, err := setupHealth(ctx, cfg, lib, inv, devices, m, drv)
	if err != nil {
		return nil, err
	}
	p.health = hw
	opts := []kubeletplugin.Option{
		kubeletplugin.DriverName(cfg.DriverName),
		kubeletplugin.NodeName(cfg.NodeName),
		kubeletplugin.KubeClient(cfg.KubeClient),
		kubeletplugin.RegistrarDirectoryPath(cfg.KubeletRegistrarDir),
		kubeletplugin.PluginDataDirectoryPath(dataDir),
		// claimstate serializes per claim; the helper must not serialize
		// all calls behind one lock.
		kubeletplugin.Serialize(false),
		// Owner-only sockets, whatever the umask (see listenUnix).
		kubeletplugin.PluginListener(listenUnix),
		kubeletplugin.RegistrarListener(listenUnix),
	}
	if cfg.PodUID != "" {
		opts = append(opts, kubeletplugin.RollingUpdate(cfg.PodUID))
	}
	helper, err := kubeletplugin.Start(ctx, drv, opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the kubelet plugin: %w", err)
	}
	p.helper = helper
	resources := resourceslice.DriverResources(cfg.NodeName, devices)
	if publishInitialSlices(ctx, cfg, resources) && srv != nil {
		srv.SetReady(true)
	}
	// The resourceslice controller starts only once its informer has synced
	// (at least a second; as long as the API server is unreachable): the
	// plugin serves prepares meanwhile, and is ready once its slices are
	// published.
	go func() {
		if err := helper.PublishResources(ctx, resources); err != nil {
			if ctx.Err() == nil {
				cancel(fmt.Errorf("publishing ResourceSlices: %w", err))
			}
			return
		}
		m.PublishedDevices.Set(float64(len(devices)))
		hw.start(ctx, helper) // after the untainted publish, which it must follow
		if srv != nil {
			srv.SetReady(true)
		}
		logger.V(2).Info("ResourceSlice controller running")
	}()
	if cfg.DriverWatchInterval > 0 {
		go driverwatch.Watch(ctx, cfg.DriverRoot, driverwatch.DefaultProcRoot, cfg.DriverWatchInterval, func(before, after string) {
			cancel(fmt.Errorf("the NVIDIA driver changed (%q -> %q): stopping so that the restarted plugin uses the new driver", before, after))
		})
	}
	logger.Info("GPU kubelet plugin started", "driver", cfg.DriverName, "node", cfg.NodeName, "devices", len(devices), "pluginDataDir", dataDir, "cdiRoot", cfg.CDIRoot)
	return p, nil
}

func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("the node name is required (--node-name or NODE_NAME)"))
	}
	if c.DriverName == "" {
		errs = append(errs, errors.New("the driver name is required (--driver-name or DRIVER_NAME)"))
	}
	if c.KubeClient == nil {
		errs = append(errs, errors.New("a Kubernetes client is required"))
	}
	for flag, dir := range map[string]string{"--cdi-root": c.CDIRoot, "--kubelet-registrar-directory-path": c.KubeletRegistrarDir, "--kubelet-plugins-directory-path": c.KubeletPluginsDir} {
		if dir == "" {
			errs = append(errs, fmt.Errorf("%s must not be empty", flag))
		}
	}
	return errors.Join(errs...)
}

func readBootID(path string) (string, error) {
	if path == "" {
		return checkpoint.ReadBootID()
	}
	return checkpoint.ReadBootIDFile(path)
}

// Done is closed when the plugin stops.
func (p *Plugin) Done() <-chan struct{} { return p.ctx.Done() }

// Err tells why the plugin stopped; nil while it runs.
func (p *Plugin) Err() error { return context.Cause(p.ctx) }

// MetricsAddr is the address of the metrics server, nil when it is off.
func (p *Plugin) MetricsAddr() net.Addr { return p.metricsAddr }

// Inventory is the discovered inventory.
func (p *Plugin) Inventory() *inventory.Inventory { return p.inventory }

// State is the claim state.
func (p *Plugin) State() *claimstate.State { return p.state }

// Stop stops serving, leaves the published ResourceSlices in place (a
// restarted or updated plugin takes them over) and releases NVML.
func (p *Plugin) Stop() {
	if p.helper != nil {
		p.helper.Stop()
	}
	p.cancel(errors.New("plugin stopped"))
	// The health monitor may be waiting for NVML events: NVML is shut down
	// only once it has returned.
	p.health.wait()
	if p.lib != nil {
		_ = p.lib.Shutdown()
	}
}

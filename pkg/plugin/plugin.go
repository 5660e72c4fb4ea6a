// Package plugin assembles the GPU DRA kubelet plugin: it opens the node
// (pkg/node), recovers the prepared claims, publishes the node's
// ResourceSlices and serves the kubelet through
// k8s.io/dynamic-resource-allocation/kubeletplugin.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	metadatav1beta1 "k8s.io/dynamic-resource-allocation/api/metadata/v1beta1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/claimstate"
	nodedevices "github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/metrics"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// Plugin is a running plugin.
type Plugin struct {
	cfg         Config
	node        *node.Node
	helper      *kubeletplugin.Helper
	state       *claimstate.State
	metrics     *metrics.Metrics
	server      *metrics.Server // nil when metrics are off
	metricsAddr net.Addr
	ctx         context.Context
	cancel      context.CancelCauseFunc
	health      *healthWiring // nil without health monitoring
	// background are the goroutines that change claim state (the stale
	// claim sweep); Stop waits for them.
	background sync.WaitGroup
	// devices are the node's devices as published without health taints.
	devices []resourceapi.Device
	// counters are the counter sets the devices consume.
	counters []resourceapi.CounterSet
	// dynamicMIG is nil unless MIG devices are made on demand.
	dynamicMIG *dynamicMIG
}

// Start brings the plugin up and returns once it serves the kubelet. On a
// node without slices of the driver it has created them by then; the
// resourceslice controller, which keeps them in line from then on, starts in
// the background as soon as the API server answers. The metrics server's
// /readyz turns ready once the node's slices are published. It fails, and
// leaves nothing running, when NVML cannot be loaded or a directory cannot be
// used: a half-running plugin is worse than one that does not start. A GPU
// that NVML enumerates but cannot use does not stop it: the plugin serves
// the other GPUs and reports that one (a log line and a Warning event with
// the fix, gpudra_unusable_gpus, a tainted device in the slices, Unhealthy
// in the health stream).
//
// The steps, in order: open the node (NVML, GPUs, mock host, CDI edits),
// load and reconcile the claim state, serve metrics, start the kubelet
// plugin with its health wiring, publish the slices, sweep stale claims
// (in the background), watch the driver.
//
// The plugin runs until ctx is done or a fatal background error occurs; Done
// is closed then, and Err tells why.
func Start(ctx context.Context, cfg Config) (_ *Plugin, finalErr error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Health.ResendInterval <= 0 {
		cfg.Health.ResendInterval = 15 * time.Second
	}
	ctx, cancel := context.WithCancelCause(ctx)
	p := &Plugin{cfg: cfg, ctx: ctx, cancel: cancel, metrics: metrics.New()}
	defer func() {
		if finalErr != nil {
			p.Stop()
		}
	}()
	p.metrics.ObserveAPIRequests()

	n, err := node.Open(ctx, cfg.Node, node.Options{Mode: node.Plugin, Seed: cfg.NodeName, Edits: true})
	if err != nil {
		return nil, err
	}
	p.node = n
	reportUnusableGPUs(ctx, cfg.KubeClient, cfg.NodeName, cfg.DriverName, n.Inventory, p.metrics)
	if p.state, p.dynamicMIG, err = openClaimState(ctx, cfg, n, p.metrics); err != nil {
		return nil, err
	}
	if err := p.serveMetrics(); err != nil {
		return nil, err
	}
	drv, err := p.startKubeletPlugin()
	if err != nil {
		return nil, err
	}
	p.publish()
	p.sweepStaleClaims()
	go n.WatchDriver(ctx, cfg.DriverWatchInterval, func(before, after string) {
		cancel(fmt.Errorf("the NVIDIA driver changed (%q -> %q): stopping so that the restarted plugin uses the new driver", before, after))
	})
	klog.FromContext(ctx).Info("GPU kubelet plugin started", "driver", cfg.DriverName, "node", cfg.NodeName, "devices", len(drv.devices),
		"unusableGPUs", len(n.Inventory.Unusable),
		"pluginDataDir", cfg.PluginDataDir(), "cdiRoot", cfg.Node.CDIRoot)
	return p, nil
}

// serveMetrics starts the metrics server, unless it is off.
func (p *Plugin) serveMetrics() error {
	if p.cfg.Metrics.Address == "" {
		return nil
	}
	p.server = metrics.NewServer(p.metrics)
	p.server.Profiling = p.cfg.Metrics.Profiling
	addr, err := p.server.ListenAndServe(p.ctx, p.cfg.Metrics.Address)
	if err != nil {
		return fmt.Errorf("serving metrics on %s: %w", p.cfg.Metrics.Address, err)
	}
	p.metricsAddr = addr
	return nil
}

// startKubeletPlugin builds the DRA driver over the claim state, attaches
// the health wiring (which must report from the kubelet's first call on)
// and starts the kubeletplugin helper.
func (p *Plugin) startKubeletPlugin() (*driver, error) {
	cfg := p.cfg
	sliceOpts := resourceslice.Options{PCIeRoot: p.node.PCIeRoot(), ConsumableCapacity: cfg.ConsumableCapacity}
	// The GPUs NVML cannot use come last, tainted (see
	// resourceslice.UnusableDevices).
	// The node's devices are those openDynamicMIG decided on, with the
	// taints of GPUs whose MIG mode waits for a reset.
	set := p.node.Devices
	devices := resourceslice.WithTaints(resourceslice.Devices(p.node.Inventory, set, sliceOpts), p.dynamicMIG.pendingTaints(cfg.DriverName, set))
	devices = append(devices, resourceslice.UnusableDevices(p.node.Inventory, cfg.DriverName, sliceOpts)...)
	p.devices, p.counters = devices, resourceslice.CounterSets(set)
	names := make([]string, 0, len(devices))
	for _, d := range devices {
		names = append(names, d.Name)
	}
	unusable := make(map[string]string, len(p.node.Inventory.Unusable))
	for _, u := range p.node.Inventory.Unusable {
		unusable[nodedevices.UnusableName(u)] = unusableMessage(cfg.DriverName, u)
	}
	drv := &driver{
		state: p.state, metrics: p.metrics, poolName: cfg.NodeName, devices: names, unusable: unusable,
		healthResend: cfg.Health.ResendInterval,
		fatal:        func(err error) { p.cancel(fmt.Errorf("fatal background error: %w", err)) },
	}
	attributes, writeStatus := p.deviceInfo(devices)
	drv.writeStatus = writeStatus
	if cfg.DeviceMetadata {
		drv.attributes = attributes
	}
	if cfg.ConsumableCapacity.Enabled() && cfg.MPS.DaemonImage == "" {
		drv.warnShares = func(ctx context.Context, claim *resourceapi.ResourceClaim) {
			warnSharesNotEnforced(ctx, cfg.KubeClient, cfg.NodeName, claim)
		}
	}
	hw, err := setupHealth(p.ctx, cfg, p.node, devices, p.metrics, drv)
	if err != nil {
		return nil, err
	}
	if hw != nil {
		hw.counters = p.counters
	}
	p.health = hw
	opts := []kubeletplugin.Option{
		kubeletplugin.DriverName(cfg.DriverName),
		kubeletplugin.NodeName(cfg.NodeName),
		kubeletplugin.KubeClient(cfg.KubeClient),
		kubeletplugin.RegistrarDirectoryPath(cfg.Kubelet.RegistrarDir),
		kubeletplugin.PluginDataDirectoryPath(cfg.PluginDataDir()),
		// claimstate serializes per claim; the helper must not serialize
		// all calls behind one lock.
		kubeletplugin.Serialize(false),
		// Owner-only sockets, whatever the umask (see listenUnix).
		kubeletplugin.PluginListener(listenUnix),
		kubeletplugin.RegistrarListener(listenUnix),
	}
	if cfg.DeviceMetadata {
		// Device metadata (KEP-5304): the helper writes each prepared
		// request's metadata file (the attributes of addMetadata) under the
		// plugin data directory and a CDI spec, in the runtime's CDI
		// directory, that mounts it into the containers under
		// /var/run/kubernetes.io/dra-device-attributes/.
		opts = append(opts, kubeletplugin.EnableDeviceMetadata(true, []schema.GroupVersion{metadatav1beta1.SchemeGroupVersion}),
			kubeletplugin.CDIDirectory(cfg.Node.CDIRoot))
	}
	if cfg.Kubelet.PodUID != "" {
		opts = append(opts, kubeletplugin.RollingUpdate(cfg.Kubelet.PodUID))
	}
	helper, err := kubeletplugin.Start(p.ctx, drv, opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the kubelet plugin: %w", err)
	}
	p.helper = helper
	return drv, nil
}

// publish creates the node's first slices directly when it has none, then
// starts the resourceslice controller in the background; the health wiring
// starts after the controller's first, untainted publish, which it must
// follow.
func (p *Plugin) publish() {
	ctx, logger := p.ctx, klog.FromContext(p.ctx)
	resources := resourceslice.DriverResources(p.cfg.NodeName, p.devices, p.counters)
	if publishInitialSlices(ctx, p.cfg, resources) && p.server != nil {
		p.server.SetReady(true)
	}
	// The resourceslice controller starts only once its informer has synced
	// (at least a second; as long as the API server is unreachable): the
	// plugin serves prepares meanwhile, and is ready once its slices are
	// published.
	go func() {
		if err := p.helper.PublishResources(ctx, resources); err != nil {
			if ctx.Err() == nil {
				p.cancel(fmt.Errorf("publishing ResourceSlices: %w", err))
			}
			return
		}
		p.metrics.PublishedDevices.Set(float64(len(p.devices)))
		p.health.start(ctx, p.helper, p.node)
		if p.server != nil {
			p.server.SetReady(true)
		}
		logger.V(2).Info("ResourceSlice controller running")
	}()
}

// Done is closed when the plugin stops.
func (p *Plugin) Done() <-chan struct{} { return p.ctx.Done() }

// Err tells why the plugin stopped; nil while it runs.
func (p *Plugin) Err() error { return context.Cause(p.ctx) }

// MetricsAddr is the address of the metrics server, nil when it is off.
func (p *Plugin) MetricsAddr() net.Addr { return p.metricsAddr }

// Inventory is the discovered inventory.
func (p *Plugin) Inventory() *inventory.Inventory { return p.node.Inventory }

// State is the claim state.
func (p *Plugin) State() *claimstate.State { return p.state }

// Stop stops serving, leaves the published ResourceSlices in place (a
// restarted or updated plugin takes them over) and releases NVML.
func (p *Plugin) Stop() {
	if p.helper != nil {
		p.helper.Stop()
	}
	p.cancel(errors.New("plugin stopped"))
	p.background.Wait()
	// The health monitor may be waiting for NVML events: NVML is shut down
	// only once it has returned.
	p.health.wait()
	p.node.Close()
}

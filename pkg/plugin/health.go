package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"

	nodedevices "github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/metrics"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// slicePublisher is what the health wiring needs of the kubeletplugin helper;
// unit tests use a fake. PublishResources replaces the desired slices; the
// helper's resourceslice controller then syncs them with the API server and
// retries every failed API call itself (rate-limited work queue with
// exponential backoff), so a nil return means "will land". Fields the API
// server drops (device taints without the DRADeviceTaints feature) are
// reported through the driver's HandleError and not retried.
type slicePublisher interface {
	PublishResources(ctx context.Context, resources draresourceslice.DriverResources) error
}

// eventInjector feeds injected GPU events into NVML until ctx is done;
// *node.Node implements it.
type eventInjector interface {
	InjectEvents(ctx context.Context)
}

// healthWiring feeds a health.Monitor into the DRA plugin: the kubelet's
// health stream (driver.WatchHealthStatus), taints on the devices of the
// published ResourceSlices, and the health metrics. It owns neither the
// NVML library nor the helper.
type healthWiring struct {
	mon        *health.Monitor
	driverName string
	poolName   string
	// devices are the devices as published without health taints.
	devices []resourceapi.Device
	// counters are the counter sets the devices consume, republished with
	// them.
	counters []resourceapi.CounterSet
	// namesOf maps a GPU UUID to its published devices: the GPU, or the MIG
	// devices of a GPU in MIG mode (they share its health). uuidOf maps a
	// device name to the UUID of its GPU.
	namesOf map[string][]string
	uuidOf  map[string]string
	effect  resourceapi.DeviceTaintEffect
	metrics *metrics.Metrics
	// retryInitial and retryMax bound the backoff of failed publishing.
	retryInitial, retryMax time.Duration
	// running are the goroutines of start; stopped, under mu, keeps start
	// from adding any once wait has begun.
	running sync.WaitGroup
	mu      sync.Mutex
	stopped bool
}

// setupHealth builds the health monitor from cfg.Health and attaches it to
// drv, so that the health stream reports the monitor's states from the
// kubelet's first call on; nothing runs before start. With the monitor off
// it returns nil, and drv reports every device healthy. It fails on invalid
// settings. Call it before the helper starts.
func setupHealth(ctx context.Context, cfg Config, n *node.Node, devices []resourceapi.Device, m *metrics.Metrics, drv *driver) (*healthWiring, error) {
	if !cfg.Health.Enabled {
		klog.FromContext(ctx).Info("GPU health monitoring is off: every device is reported healthy")
		return nil, nil
	}
	effect, err := resourceslice.ParseTaintEffect(cfg.Health.TaintEffect)
	if err != nil {
		return nil, fmt.Errorf("--health-taint-effect: %w", err)
	}
	w, err := newHealthWiring(cfg.DriverName, cfg.NodeName, n.NVML, n.Inventory, n.Devices, devices, effect, m, n.HealthOptions(cfg.Health.Monitor))
	if err != nil {
		return nil, err
	}
	drv.health = w
	return w, nil
}

// preparable are the node's devices (a GPU's partitions, made on demand or
// not, share its health); devices are those published.
func newHealthWiring(driverName, poolName string, lib nvml.Interface, inv *inventory.Inventory, preparable *nodedevices.Set, devices []resourceapi.Device,
	effect resourceapi.DeviceTaintEffect, m *metrics.Metrics, opts health.Options) (*healthWiring, error) {
	w := &healthWiring{
		driverName: driverName, poolName: poolName, devices: devices, effect: effect, metrics: m,
		namesOf: map[string][]string{}, uuidOf: map[string]string{},
		retryInitial: time.Second, retryMax: time.Minute,
	}
	published := map[string]bool{}
	for _, d := range devices {
		published[d.Name] = true
	}
	add := func(gpuUUID, name string) {
		if published[name] {
			w.namesOf[gpuUUID] = append(w.namesOf[gpuUUID], name)
			w.uuidOf[name] = gpuUUID
		}
	}
	for _, g := range inv.Devices {
		for _, d := range preparable.OfGPU(g.UUID) {
			add(g.UUID, d.Name)
		}
	}
	var uuids []string
	for _, d := range inv.Devices {
		if len(w.namesOf[d.UUID]) > 0 {
			uuids = append(uuids, d.UUID)
		}
	}
	opts.OnLoopError = func(error) { m.HealthMonitorErrors.Inc() }
	mon, err := health.New(lib, uuids, opts)
	if err != nil {
		return nil, fmt.Errorf("GPU health monitor: %w", err)
	}
	w.mon = mon
	m.HealthMonitorUp.Set(1)
	return w, nil
}

// start runs the monitor, the republishing of taints through pub and the
// node's event injection (a mock machine's injection file), until ctx is
// done (wait waits for that). Call it once. A nil w does nothing.
func (w *healthWiring) start(ctx context.Context, pub slicePublisher, n eventInjector) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.running.Go(func() { w.mon.Run(ctx) })
	w.running.Go(func() { w.publishTaints(ctx, pub) })
	if n != nil {
		w.running.Go(func() { n.InjectEvents(ctx) })
	}
}

// wait returns once everything start started has stopped (the caller has
// cancelled start's context); a later start does nothing.
func (w *healthWiring) wait() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.running.Wait()
}

// taints returns the health taints by device name (a GPU's MIG devices
// share its taint): the configured effect
// for unhealthy devices, NoSchedule for unmonitored ones (nothing is known
// to be wrong with them, so running pods are not evicted).
func (w *healthWiring) taints(s health.Snapshot) map[string][]resourceapi.DeviceTaint {
	out := map[string][]resourceapi.DeviceTaint{}
	for _, d := range s.Devices {
		if d.Healthy() {
			continue
		}
		effect := w.effect
		if d.Problem == health.Unmonitored {
			effect = resourceapi.DeviceTaintEffectNoSchedule
		}
		for _, name := range w.namesOf[d.UUID] {
			out[name] = []resourceapi.DeviceTaint{resourceslice.HealthTaint(w.driverName, d.Reason, effect, d.Since)}
		}
	}
	return out
}

// publishTaints republishes the ResourceSlices whenever the set of health
// taints changes, until ctx is done. A failed PublishResources is retried
// with exponential backoff (retryInitial up to retryMax) until it succeeds;
// changes that arrive meanwhile are folded into the retry. The plugin's
// start-up published the devices without taints, which is where this
// begins.
func (w *healthWiring) publishTaints(ctx context.Context, pub slicePublisher) {
	logger := klog.FromContext(ctx).WithName("health")
	last := "" // signature of the taints the helper has
	backoff := w.retryInitial
	var retry <-chan time.Time
	for {
		snap, changed := w.mon.Current()
		w.observe(snap)
		if retry == nil {
			taints := w.taints(snap)
			if sig := signature(taints); sig != last {
				err := pub.PublishResources(ctx, resourceslice.DriverResources(w.poolName, resourceslice.WithTaints(w.devices, taints), w.counters))
				if err != nil {
					logger.Error(err, "Publishing the ResourceSlices with the GPUs' health taints failed; retrying", "retryIn", backoff)
					retry = time.After(backoff)
					backoff = min(2*backoff, w.retryMax)
				} else {
					last, backoff = sig, w.retryInitial
					logger.Info("Published the GPUs' health taints", "taintedDevices", len(taints), "taints", sig)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
			retry = nil
		}
	}
}

func (w *healthWiring) observe(s health.Snapshot) {
	w.metrics.UnhealthyDevices.Set(float64(s.Unhealthy()))
	if s.Monitored {
		w.metrics.HealthMonitorUp.Set(1)
	} else {
		w.metrics.HealthMonitorUp.Set(0)
	}
}

// signature is a stable text form of taints, "" for none.
func signature(taints map[string][]resourceapi.DeviceTaint) string {
	parts := make([]string, 0, len(taints))
	for name, ts := range taints {
		for _, t := range ts {
			added := ""
			if t.TimeAdded != nil {
				added = t.TimeAdded.UTC().Format(time.RFC3339)
			}
			parts = append(parts, fmt.Sprintf("%s:%s=%s:%s@%s", name, t.Key, t.Value, t.Effect, added))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// healthReport is the health of every device of d, and a channel closed
// when it changes (nil without a monitor: nothing changes). Unhealthy
// devices are Unhealthy with the reason and its explanation as message, and
// so are the GPUs NVML cannot use; unmonitored ones, and devices the
// monitor does not know, Unknown.
func (d *driver) healthReport() (kubeletplugin.DeviceHealthReport, <-chan struct{}) {
	now := time.Now()
	report := kubeletplugin.DeviceHealthReport{Devices: make([]kubeletplugin.DeviceHealth, 0, len(d.devices))}
	var snap health.Snapshot
	var changed <-chan struct{}
	if d.health != nil {
		snap, changed = d.health.mon.Current()
	}
	for _, name := range d.devices {
		dh := kubeletplugin.DeviceHealth{PoolName: d.poolName, DeviceName: name, Health: kubeletplugin.HealthStatusHealthy, LastUpdated: now}
		if msg, ok := d.unusable[name]; ok {
			dh.Health, dh.Message = kubeletplugin.HealthStatusUnhealthy, msg
		} else if d.health != nil {
			st, ok := snap.Device(d.health.uuidOf[name])
			switch {
			case !ok:
				dh.Health, dh.Message = kubeletplugin.HealthStatusUnknown, "not watched by the GPU health monitor"
			case st.Problem == health.Unmonitored:
				dh.Health, dh.Message = kubeletplugin.HealthStatusUnknown, st.Reason+": "+st.Message
			case !st.Healthy():
				dh.Health, dh.Message = kubeletplugin.HealthStatusUnhealthy, st.Reason+": "+st.Message
			}
		}
		report.Devices = append(report.Devices, dh)
	}
	return report, changed
}

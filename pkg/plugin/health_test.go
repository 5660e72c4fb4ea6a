package plugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2/ktesting"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/metrics"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// patience bounds waits for what normally takes milliseconds.
const patience = 20 * time.Second

// fakePublisher records what the wiring publishes; the first failures
// calls fail.
type fakePublisher struct {
	mu        sync.Mutex
	failures  int
	calls     int
	published []draresourceslice.DriverResources
}

func (f *fakePublisher) PublishResources(_ context.Context, r draresourceslice.DriverResources) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.failures {
		return errors.New("injected publish failure")
	}
	f.published = append(f.published, r)
	return nil
}

func (f *fakePublisher) state() (calls int, published []draresourceslice.DriverResources) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, append([]draresourceslice.DriverResources(nil), f.published...)
}

// taintsOf returns the taints of the last published resources by device.
func (f *fakePublisher) taintsOf(pool string) (map[string][]resourceapi.DeviceTaint, bool) {
	_, pub := f.state()
	if len(pub) == 0 {
		return nil, false
	}
	out := map[string][]resourceapi.DeviceTaint{}
	for _, s := range pub[len(pub)-1].Pools[pool].Slices {
		for _, d := range s.Devices {
			if len(d.Taints) > 0 {
				out[d.Name] = d.Taints
			}
		}
	}
	return out, true
}

type healthEnv struct {
	ctx     context.Context
	inv     *inventory.Inventory
	wiring  *healthWiring
	drv     *driver
	pub     *fakePublisher
	metrics *metrics.Metrics
	reports chan kubeletplugin.DeviceHealthReport
	// ev injects the mock machine's NVML events.
	ev *mockmachine.Events
}

// newHealthEnv wires a monitor of a mock DGX H100 to a fake publisher and
// opens the health stream. Nothing runs until start.
func newHealthEnv(t *testing.T, effect resourceapi.DeviceTaintEffect, opts health.Options) *healthEnv {
	t.Helper()
	return newHealthEnvOn(t, "dgxh100", effect, opts)
}

func newHealthEnvOn(t *testing.T, machine string, effect resourceapi.DeviceTaintEffect, opts health.Options) *healthEnv {
	t.Helper()
	return newHealthEnvWith(t, machine, false, effect, opts)
}

// newHealthEnvWith is newHealthEnvOn; with partitionable, every GPU of the
// machine is published partitionable (dynamic MIG).
func newHealthEnvWith(t *testing.T, machine string, partitionable bool, effect resourceapi.DeviceTaintEffect, opts health.Options) *healthEnv {
	t.Helper()
	lib, inv := mockmachinetest.Machine(t, machine, "node-a")
	ev, err := mockmachine.InstallEvents(lib)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Probe == nil {
		opts.Probe = ev.Probe
	}
	set := devices.FromInventory(inv)
	if partitionable {
		layouts, errs := inventory.DiscoverMIGLayouts(lib, inv)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		set = devices.FromInventoryWith(inv, devices.Options{Partitionable: layouts})
	}
	devices := resourceslice.Devices(inv, set, resourceslice.Options{})
	opts.ProbeInterval, opts.WaitTimeout = 50*time.Millisecond, 20*time.Millisecond
	opts.InitialBackoff, opts.MaxBackoff = 5*time.Millisecond, 20*time.Millisecond
	m := metrics.New()
	w, err := newHealthWiring("gpu.nvidia.com", "node-a", lib, inv, set, devices, effect, m, opts)
	if err != nil {
		t.Fatal(err)
	}
	w.retryInitial, w.retryMax = 5*time.Millisecond, 20*time.Millisecond
	w.counters = resourceslice.CounterSets(set)
	names := make([]string, 0, len(devices))
	for _, d := range devices {
		names = append(names, d.Name)
	}
	_, ctx := ktesting.NewTestContext(t)
	return &healthEnv{
		ctx: ctx, inv: inv, wiring: w, pub: &fakePublisher{}, metrics: m, ev: ev,
		drv:     &driver{poolName: "node-a", devices: names, healthResend: time.Hour, health: w},
		reports: make(chan kubeletplugin.DeviceHealthReport),
	}
}

// start runs the wiring and the health stream until the test ends.
func (e *healthEnv) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.drv.WatchHealthStatus(ctx, e.reports); err != nil {
			t.Errorf("WatchHealthStatus: %v", err)
		}
	})
	e.wiring.start(ctx, e.pub, nil)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		e.wiring.wait()
	})
}

func (e *healthEnv) waitRegistered(t *testing.T, i int) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for e.ev.Listeners(e.inv.Devices[i].UUID, nvml.EventTypeXidCriticalError) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("GPU %d was never registered for events", i)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitTaints waits until the last published resources satisfy cond.
func (e *healthEnv) waitTaints(t *testing.T, what string, cond func(map[string][]resourceapi.DeviceTaint) bool) map[string][]resourceapi.DeviceTaint {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		taints, ok := e.pub.taintsOf("node-a")
		if ok && cond(taints) {
			return taints
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last published taints: %v", what, taints)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitReport reads the health stream until a report satisfies cond.
func (e *healthEnv) waitReport(t *testing.T, what string, cond func(map[string]kubeletplugin.DeviceHealth) bool) map[string]kubeletplugin.DeviceHealth {
	t.Helper()
	timeout := time.After(patience)
	for {
		select {
		case r := <-e.reports:
			byName := map[string]kubeletplugin.DeviceHealth{}
			for _, d := range r.Devices {
				byName[d.DeviceName] = d
			}
			if cond(byName) {
				return byName
			}
		case <-timeout:
			t.Fatalf("timed out waiting for a health report with %s", what)
		}
	}
}

func onlyTainted(name, value string, effect resourceapi.DeviceTaintEffect) func(map[string][]resourceapi.DeviceTaint) bool {
	return func(taints map[string][]resourceapi.DeviceTaint) bool {
		ts := taints[name]
		return len(taints) == 1 && len(ts) == 1 && ts[0].Key == "gpu.nvidia.com/unhealthy" && ts[0].Value == value &&
			ts[0].Effect == effect && ts[0].TimeAdded != nil
	}
}

func noTaints(taints map[string][]resourceapi.DeviceTaint) bool { return len(taints) == 0 }

func healthIs(want map[string]kubeletplugin.HealthStatus, others kubeletplugin.HealthStatus) func(map[string]kubeletplugin.DeviceHealth) bool {
	return func(got map[string]kubeletplugin.DeviceHealth) bool {
		if len(got) != 8 {
			return false
		}
		for name, d := range got {
			w, ok := want[name]
			if !ok {
				w = others
			}
			if d.Health != w || d.PoolName != "node-a" {
				return false
			}
		}
		return true
	}
}

func TestXIDTaintsOnlyThatDeviceAndRecovers(t *testing.T) {
	// The GPU stays off the bus until the test lets NVML see it again.
	var gone atomic.Bool
	gone.Store(true)
	probe := func(string) nvml.Return {
		if gone.Load() {
			return nvml.ERROR_GPU_IS_LOST
		}
		return nvml.SUCCESS
	}
	e := newHealthEnv(t, resourceapi.DeviceTaintEffectNoSchedule, health.Options{Probe: probe})
	e.start(t)
	e.waitReport(t, "every device healthy", healthIs(nil, kubeletplugin.HealthStatusHealthy))
	e.waitRegistered(t, 2)

	// XID 79 on gpu-2: the taint appears on gpu-2 only, the stream says
	// Unhealthy, the metric counts it.
	if _, err := e.ev.InjectXID("2", 79); err != nil {
		t.Fatal(err)
	}
	e.waitTaints(t, "a xid-79 taint on gpu-2", onlyTainted("gpu-2", "xid-79", resourceapi.DeviceTaintEffectNoSchedule))
	got := e.waitReport(t, "gpu-2 unhealthy", healthIs(map[string]kubeletplugin.HealthStatus{"gpu-2": kubeletplugin.HealthStatusUnhealthy}, kubeletplugin.HealthStatusHealthy))
	if !strings.Contains(got["gpu-2"].Message, "xid-79") {
		t.Errorf("gpu-2 message %q does not name the XID", got["gpu-2"].Message)
	}
	if v := value(t, e.metrics, "gpudra_unhealthy_devices"); v != 1 {
		t.Errorf("unhealthy_devices = %v, want 1", v)
	}
	// Back on the bus: it recovers at the next probe.
	gone.Store(false)
	e.waitTaints(t, "the taint removed after recovery", noTaints)
	e.waitReport(t, "every device healthy again", healthIs(nil, kubeletplugin.HealthStatusHealthy))
	if v := value(t, e.metrics, "gpudra_unhealthy_devices"); v != 0 {
		t.Errorf("unhealthy_devices = %v after recovery, want 0", v)
	}
}

func TestIgnoredXIDPublishesNothing(t *testing.T) {
	e := newHealthEnv(t, resourceapi.DeviceTaintEffectNoSchedule, health.Options{})
	e.start(t)
	e.waitReport(t, "every device healthy", healthIs(nil, kubeletplugin.HealthStatusHealthy))
	e.waitRegistered(t, 3)
	if _, err := e.ev.InjectXID("3", 13); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(patience)
	for e.wiring.mon.Processed() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("XID 13 was never processed")
		}
		time.Sleep(time.Millisecond)
	}
	// The publisher loop re-reads the snapshot only when it changes; an
	// unchanged one must not have produced a publish.
	if calls, _ := e.pub.state(); calls != 0 {
		t.Errorf("an ignored XID caused %d publishes", calls)
	}
	select {
	case r := <-e.reports:
		t.Errorf("an ignored XID caused a health report: %+v", r)
	default:
	}
}

func TestDoubleBitECCWithNoExecuteAndRetriedPublish(t *testing.T) {
	// The recovery period passes on a fake clock, which moves only when the
	// test steps it: no wait for wall time.
	clk := testingclock.NewFakeClock(time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC))
	opts := health.Options{RecoveryPeriod: 10 * time.Minute, Clock: clk}
	e := newHealthEnv(t, resourceapi.DeviceTaintEffectNoExecute, opts)
	e.pub.failures = 3
	e.start(t)
	e.waitRegistered(t, 5)
	if _, err := e.ev.Inject("5", nvml.EventTypeDoubleBitEccError, 0); err != nil {
		t.Fatal(err)
	}
	e.waitTaints(t, "a NoExecute double-bit-ecc taint on gpu-5", onlyTainted("gpu-5", "double-bit-ecc", resourceapi.DeviceTaintEffectNoExecute))
	if calls, _ := e.pub.state(); calls < 4 {
		t.Errorf("%d publish calls, want the 3 failures retried", calls)
	}
	clk.Step(opts.RecoveryPeriod)
	e.waitTaints(t, "the taint removed after the recovery period", noTaints)
}

func TestEventLoopFailureTaintsEveryDeviceUnmonitored(t *testing.T) {
	// NoExecute for errors, but an unmonitored GPU must not evict pods.
	e := newHealthEnv(t, resourceapi.DeviceTaintEffectNoExecute, health.Options{})
	e.start(t)
	e.waitRegistered(t, 0)
	e.ev.SetWaitError(nvml.ERROR_UNKNOWN)

	taints := e.waitTaints(t, "every device tainted", func(ts map[string][]resourceapi.DeviceTaint) bool { return len(ts) == 8 })
	for name, ts := range taints {
		if len(ts) != 1 || ts[0].Value != "unmonitored" || ts[0].Effect != resourceapi.DeviceTaintEffectNoSchedule {
			t.Errorf("%s taints = %+v, want one NoSchedule unmonitored taint", name, ts)
		}
	}
	e.waitReport(t, "every device unknown", healthIs(nil, kubeletplugin.HealthStatusUnknown))
	if v := value(t, e.metrics, "gpudra_health_monitor_up"); v != 0 {
		t.Errorf("health_monitor_up = %v while down", v)
	}
	if v := value(t, e.metrics, "gpudra_health_monitor_errors_total"); v < 3 {
		t.Errorf("health_monitor_errors_total = %v, want at least 3", v)
	}
	if v := value(t, e.metrics, "gpudra_unhealthy_devices"); v != 8 {
		t.Errorf("unhealthy_devices = %v, want 8", v)
	}

	e.ev.SetWaitError(nvml.SUCCESS)
	e.waitTaints(t, "taints removed once monitoring works again", noTaints)
	e.waitReport(t, "every device healthy", healthIs(nil, kubeletplugin.HealthStatusHealthy))
	if v := value(t, e.metrics, "gpudra_health_monitor_up"); v != 1 {
		t.Errorf("health_monitor_up = %v after recovery", v)
	}
}

func TestSetupHealthFromConfigAndInjectionFile(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	n, err := node.Open(ctx, node.Flags{NVML: "mock:dgxh100", MockHostRoot: root}, node.Options{Mode: node.Plugin, Seed: "node-a"})
	mockmachinetest.SkipWithoutMknod(t, err)
	defer n.Close()
	devices := resourceslice.Devices(n.Inventory, devices.FromInventory(n.Inventory), resourceslice.Options{})

	drv := &driver{}
	if w, err := setupHealth(ctx, Config{}, n, devices, metrics.New(), drv); w != nil || err != nil || drv.health != nil {
		t.Fatalf("monitor off: got %v, %v", w, err)
	}
	if _, err := setupHealth(ctx, Config{Health: HealthConfig{Enabled: true, TaintEffect: "Evict"}}, n, devices, metrics.New(), drv); err == nil {
		t.Error("an invalid taint effect was accepted")
	}

	cfg := Config{DriverName: "gpu.example.com", NodeName: "node-a", Node: node.Flags{MockHostRoot: root, NVML: "mock:dgxh100"}, Health: HealthConfig{Enabled: true}}
	m := metrics.New()
	w, err := setupHealth(ctx, cfg, n, devices, m, drv)
	if err != nil {
		t.Fatal(err)
	}
	if drv.health != w {
		t.Fatalf("wiring = %+v", w)
	}
	ev := n.Backend.(interface{ Events() *mockmachine.Events }).Events()
	pub := &fakePublisher{}
	ctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); w.wait() }()
	w.start(ctx, pub, n)
	deadline := time.Now().Add(patience)
	for ev.Listeners("1", nvml.EventTypeXidCriticalError) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("GPU 1 was never registered")
		}
		time.Sleep(time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(root, mockmachine.EventsFile), []byte("xid 1 48\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for {
		taints, _ := pub.taintsOf("node-a")
		if ts := taints["gpu-1"]; len(ts) == 1 && ts[0].Key == "gpu.example.com/unhealthy" && ts[0].Value == "xid-48" && ts[0].Effect == resourceapi.DeviceTaintEffectNoSchedule {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no taint from the injection file; published taints: %v", taints)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// value reads the gauge or counter called name from m's registry.
func value(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name || len(f.GetMetric()) != 1 {
			continue
		}
		if g := f.GetMetric()[0].GetGauge(); g != nil {
			return g.GetValue()
		}
		return f.GetMetric()[0].GetCounter().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestStartTaintsTheResourceSliceOfAnInjectedXID runs the whole plugin (mock
// GPUs, fake API server, the helper's real ResourceSlice controller): an
// XID written to the mock event file ends up as a taint in the stored
// ResourceSlice, on that device only.
func TestStartTaintsTheResourceSliceOfAnInjectedXID(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	root := t.TempDir()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a", UID: "node-uid"}})
	cfg := Config{
		NodeName:   "node-a",
		DriverName: "gpu.nvidia.com",
		KubeClient: client,
		Node:       node.Flags{NVML: "mock:dgxh100", MockHostRoot: filepath.Join(root, "mock"), CDIRoot: filepath.Join(root, "cdi"), HookPath: "/usr/bin/nvidia-cdi-hook"},
		Kubelet:    KubeletConfig{RegistrarDir: filepath.Join(root, "plugins_registry"), PluginsDir: filepath.Join(root, "plugins")},
		Health:     HealthConfig{ResendInterval: time.Second, Enabled: true, TaintEffect: "NoExecute"},
	}
	if err := os.MkdirAll(cfg.Kubelet.RegistrarDir, 0o750); err != nil {
		t.Fatal(err)
	}
	p, err := Start(ctx, cfg)
	mockmachinetest.SkipWithoutMknod(t, err)
	defer p.Stop()

	taints := func() (map[string][]resourceapi.DeviceTaint, int) {
		slices, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out, n := map[string][]resourceapi.DeviceTaint{}, 0
		for _, s := range slices.Items {
			for _, d := range s.Spec.Devices {
				n++
				if len(d.Taints) > 0 {
					out[d.Name] = d.Taints
				}
			}
		}
		return out, n
	}
	deadline := time.Now().Add(patience)
	for {
		if _, n := taints(); n == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the plugin never published its 8 GPUs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Written until it is consumed by a monitor that listens: the file is
	// read every half second, and events nobody listens to are dropped.
	file := filepath.Join(cfg.Node.MockHostRoot, mockmachine.EventsFile)
	for {
		got, _ := taints()
		if ts := got["gpu-6"]; len(ts) == 1 {
			if len(got) != 1 || ts[0].Key != "gpu.nvidia.com/unhealthy" || ts[0].Value != "xid-48" || ts[0].Effect != resourceapi.DeviceTaintEffectNoExecute {
				t.Fatalf("taints = %v, want gpu-6 only: gpu.nvidia.com/unhealthy=xid-48:NoExecute", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no taint on gpu-6 in the stored ResourceSlices; taints: %v", got)
		}
		if _, err := os.Stat(file); os.IsNotExist(err) {
			if err := os.WriteFile(file, []byte("xid 6 48\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A GPU in MIG mode is published as its MIG devices: they share its health,
// so an XID on the GPU taints all of them and marks them Unhealthy, and
// nothing else.
func TestXIDOnAGPUInMIGModeTaintsItsMIGDevices(t *testing.T) {
	e := newHealthEnvOn(t, "dgxh100-mig", resourceapi.DeviceTaintEffectNoSchedule, health.Options{})
	var migOfGPU0 []string
	for _, m := range e.inv.MIGDevices {
		if m.ParentUUID == e.inv.Devices[0].UUID {
			migOfGPU0 = append(migOfGPU0, devices.MIGName(m))
		}
	}
	if len(migOfGPU0) == 0 {
		t.Fatal("the MIG mock machine has no MIG device on GPU 0")
	}
	e.start(t)
	e.waitRegistered(t, 0)
	if _, err := e.ev.InjectXID("0", 48); err != nil {
		t.Fatal(err)
	}
	taints := e.waitTaints(t, "xid-48 taints on GPU 0's MIG devices", func(taints map[string][]resourceapi.DeviceTaint) bool {
		return len(taints) == len(migOfGPU0)
	})
	for _, name := range migOfGPU0 {
		if ts := taints[name]; len(ts) != 1 || ts[0].Value != "xid-48" {
			t.Errorf("%s: taints %v, want xid-48", name, ts)
		}
	}
	got := e.waitReport(t, "GPU 0's MIG devices unhealthy", func(byName map[string]kubeletplugin.DeviceHealth) bool {
		for _, name := range migOfGPU0 {
			if byName[name].Health != kubeletplugin.HealthStatusUnhealthy {
				return false
			}
		}
		return true
	})
	for name, d := range got {
		if !slices.Contains(migOfGPU0, name) && d.Health != kubeletplugin.HealthStatusHealthy {
			t.Errorf("%s: health %s, want Healthy", name, d.Health)
		}
	}
}

// A partitionable GPU's partitions (MIG devices made on demand) share its
// health: an XID on the GPU taints the whole GPU and every partition of it,
// and nothing of the other GPUs.
func TestXIDOnAPartitionableGPUTaintsItsPartitions(t *testing.T) {
	e := newHealthEnvWith(t, "dgxh100", true, resourceapi.DeviceTaintEffectNoSchedule, health.Options{})
	var ofGPU3 []string
	for _, d := range e.wiring.devices {
		if d.Name == "gpu-3" || strings.HasPrefix(d.Name, "gpu-3-mig-") {
			ofGPU3 = append(ofGPU3, d.Name)
		}
	}
	if len(ofGPU3) != 26 {
		t.Fatalf("GPU 3 is published as %d devices, want the whole GPU and its 25 partitions: %v", len(ofGPU3), ofGPU3)
	}
	e.start(t)
	e.waitRegistered(t, 3)
	if _, err := e.ev.InjectXID("3", 79); err != nil {
		t.Fatal(err)
	}
	taints := e.waitTaints(t, "xid-79 taints on GPU 3 and its partitions", func(taints map[string][]resourceapi.DeviceTaint) bool {
		return len(taints) == len(ofGPU3)
	})
	for _, name := range ofGPU3 {
		if ts := taints[name]; len(ts) != 1 || ts[0].Value != "xid-79" {
			t.Errorf("%s: taints %v, want xid-79", name, ts)
		}
	}
	// The republished slices keep the counter sets.
	_, pub := e.pub.state()
	counters := 0
	for _, sl := range pub[len(pub)-1].Pools["node-a"].Slices {
		counters += len(sl.SharedCounters)
	}
	if counters != 8 {
		t.Errorf("republished slices hold %d counter sets, want 8", counters)
	}
}

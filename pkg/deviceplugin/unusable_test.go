package deviceplugin

import (
	"context"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2/ktesting"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

// brokenEnv is a mock DGX H100 whose GPU 5 is lost at discovery (only its
// memory info fails: its UUID is known) and GPU 2 answers nothing.
func brokenEnv(t *testing.T, withCDI bool) *testEnv {
	t.Helper()
	lib, err := mockmachine.New("dgxh100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Shutdown() })
	if err := mockmachine.FailDevice(lib, 5, "memory", nvml.ERROR_GPU_IS_LOST); err != nil {
		t.Fatal(err)
	}
	if err := mockmachine.FailDevice(lib, 2, "all", nvml.ERROR_UNKNOWN); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices) != 6 || len(inv.Unusable) != 2 {
		t.Fatalf("%d GPUs, unusable %+v", len(inv.Devices), inv.Unusable)
	}
	e := &testEnv{inv: inv, lib: lib}
	if withCDI {
		e.root = t.TempDir()
		mockmachinetest.Host(t, e.root, inv)
		_, ctx := ktesting.NewTestContext(t)
		if e.edits, err = cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: e.root, HookPath: "/usr/local/bin/nvidia-cdi-hook"}, inv.UUIDs()); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// TestUnusableGPUIsAdvertisedUnhealthy: as NVIDIA's device plugin does, a
// GPU that NVML cannot use is in the device list, Unhealthy for good, and
// Allocate refuses it; the others are served as usual. A GPU without a
// readable UUID can be advertised only under the index strategy.
func TestUnusableGPUIsAdvertisedUnhealthy(t *testing.T) {
	e := brokenEnv(t, true)
	lost := e.inv.Unusable[1]
	p := e.plugin(t, Config{})
	if p.CDISpecPath() == "" {
		t.Error("no CDI spec for the usable GPUs")
	}
	resp, _ := p.deviceList()
	health := map[string]string{}
	for _, d := range resp.Devices {
		health[d.ID] = d.Health
	}
	if len(health) != 7 || health[lost.UUID] != pluginapi.Unhealthy {
		t.Errorf("device list %v: want the 6 usable GPUs and GPU 5 (%s) Unhealthy", health, lost.UUID)
	}
	for _, d := range e.inv.Devices {
		if health[d.UUID] != pluginapi.Healthy {
			t.Errorf("GPU %d: %q", d.Index, health[d.UUID])
		}
	}
	// The health monitor never turns it healthy.
	if err := p.SetHealth(lost.UUID, true); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Errorf("SetHealth(healthy) of the unusable GPU: %v", err)
	}
	if resp, _ := p.deviceList(); resp.Devices[len(resp.Devices)-1].Health != pluginapi.Unhealthy {
		t.Error("the unusable GPU turned healthy")
	}
	_, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{lost.UUID}}}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "nvidia-smi -r -i 5") {
		t.Errorf("allocate of the unusable GPU: %v, want FailedPrecondition with the fix", err)
	}
	if r := allocate(t, p, e.inv.Devices[0].UUID); len(r.CdiDevices) != 1 {
		t.Errorf("allocate of a usable GPU next to an unusable one: %+v", r)
	}
	// The preferred allocation works over the usable GPUs, with the
	// unusable one in the topology.
	var avail []string
	for _, d := range e.inv.Devices {
		avail = append(avail, d.UUID)
	}
	if ids, err := p.preferred(avail, nil, 4); err != nil || len(ids) != 4 {
		t.Errorf("preferred allocation: %v, %v", ids, err)
	}

	// Under the index strategy GPU 2, whose UUID NVML cannot read, is
	// advertised too.
	byIndex := e.plugin(t, Config{DeviceIDStrategy: IDStrategyIndex, Replicas: 2})
	resp, _ = byIndex.deviceList()
	unhealthy := map[string]bool{}
	for _, d := range resp.Devices {
		if d.Health == pluginapi.Unhealthy {
			unhealthy[d.ID] = true
		}
	}
	if len(resp.Devices) != 16 || len(unhealthy) != 4 || !unhealthy["2::0"] || !unhealthy["5::1"] {
		t.Errorf("index strategy with replicas: %d devices, unhealthy %v", len(resp.Devices), unhealthy)
	}
}

// TestOnlyUnusableGPUs: a node whose every GPU is unusable still gets a
// device plugin that advertises them Unhealthy, without a CDI spec.
func TestOnlyUnusableGPUs(t *testing.T) {
	e := newEnv(t, false)
	inv := &inventory.Inventory{DriverVersion: e.inv.DriverVersion, CUDADriverVersion: e.inv.CUDADriverVersion,
		Unusable: []inventory.UnusableDevice{{Index: 0, UUID: e.inv.Devices[0].UUID, Minor: 0, Err: nvml.ERROR_GPU_IS_LOST}}}
	_, ctx := ktesting.NewTestContext(t)
	p, err := New(ctx, Config{CDIRoot: t.TempDir(), DevicePluginPath: t.TempDir()}, inv, e.lib, e.edits)
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := p.deviceList(); len(resp.Devices) != 1 || resp.Devices[0].Health != pluginapi.Unhealthy || p.CDISpecPath() != "" {
		t.Errorf("devices %v, spec %q", resp.Devices, p.CDISpecPath())
	}
	if _, err := New(ctx, Config{}, &inventory.Inventory{}, nil, nil); err == nil {
		t.Error("a plugin without any GPU")
	}
}

package deviceplugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2/ktesting"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

type testEnv struct {
	inv   *inventory.Inventory
	lib   nvml.Interface
	edits *cdi.Edits
	root  string
}

// newEnv returns a mock DGX H100 (8 GPUs; NUMA node = minor/4). withCDI lays
// out the mock host and computes the CDI edits (skipping without CAP_MKNOD).
func newEnv(t testing.TB, withCDI bool) *testEnv {
	t.Helper()
	lib, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	e := &testEnv{inv: inv, lib: lib}
	if !withCDI {
		return e
	}
	e.root = t.TempDir()
	mockmachinetest.Host(t, e.root, inv)
	_, ctx := ktesting.NewTestContext(t)
	var err error
	e.edits, err = cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: e.root, HookPath: "/usr/local/bin/nvidia-cdi-hook"}, inv.UUIDs())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *testEnv) plugin(t testing.TB, cfg Config) *Plugin {
	t.Helper()
	if cfg.CDIRoot == "" {
		cfg.CDIRoot = filepath.Join(t.TempDir(), "cdi")
	}
	if cfg.DevicePluginPath == "" {
		cfg.DevicePluginPath = t.TempDir()
	}
	_, ctx := ktesting.NewTestContext(t)
	p, err := New(ctx, cfg, e.inv, e.lib, e.edits)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *testEnv) uuid(i int) string { return e.inv.Devices[i].UUID }

func allocate(t *testing.T, p *Plugin, ids ...string) *pluginapi.ContainerAllocateResponse {
	t.Helper()
	resp, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 1 {
		t.Fatalf("got %d container responses, want 1", len(resp.ContainerResponses))
	}
	return resp.ContainerResponses[0]
}

func cdiName(id string) string { return "k8s.device-plugin.nvidia.com/gpu=" + id }

func TestAllocateEnvvar(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}})
	r := allocate(t, p, e.uuid(3), e.uuid(0))
	want := map[string]string{"NVIDIA_VISIBLE_DEVICES": e.uuid(3) + "," + e.uuid(0)}
	if !reflect.DeepEqual(r.Envs, want) {
		t.Errorf("envs = %v, want %v", r.Envs, want)
	}
	if r.Mounts != nil || r.Annotations != nil || r.CdiDevices != nil || r.Devices != nil {
		t.Errorf("unexpected edits besides the env: %v", r)
	}
	if p.CDISpecPath() != "" {
		t.Errorf("envvar-only plugin wrote a CDI spec at %s", p.CDISpecPath())
	}
}

func TestAllocateVolumeMounts(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyVolumeMounts}})
	r := allocate(t, p, e.uuid(1), e.uuid(2))
	wantMounts := []*pluginapi.Mount{
		{ContainerPath: "/var/run/nvidia-container-devices/" + e.uuid(1), HostPath: "/dev/null", ReadOnly: true},
		{ContainerPath: "/var/run/nvidia-container-devices/" + e.uuid(2), HostPath: "/dev/null", ReadOnly: true},
	}
	if !reflect.DeepEqual(r.Mounts, wantMounts) {
		t.Errorf("mounts = %v, want %v", r.Mounts, wantMounts)
	}
	// An image's NVIDIA_VISIBLE_DEVICES=all must not win over the mounts.
	if want := map[string]string{"NVIDIA_VISIBLE_DEVICES": "/var/run/nvidia-container-devices"}; !reflect.DeepEqual(r.Envs, want) {
		t.Errorf("envs = %v, want %v", r.Envs, want)
	}
}

func TestAllocateCDIAnnotations(t *testing.T) {
	e := newEnv(t, true)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyCDIAnnotations}})
	r := allocate(t, p, e.uuid(5), e.uuid(4))
	want := map[string]string{
		"cdi.k8s.io/gpudra-device-plugin_" + e.uuid(5): cdiName(e.uuid(5)) + "," + cdiName(e.uuid(4)),
	}
	if !reflect.DeepEqual(r.Annotations, want) {
		t.Errorf("annotations = %v, want %v", r.Annotations, want)
	}
	_, devs, err := cdiapi.ParseAnnotations(r.Annotations)
	if err != nil || len(devs) != 2 {
		t.Errorf("CDI library parses the annotations as %v, %v", devs, err)
	}
	if r.Envs != nil || r.CdiDevices != nil || r.Mounts != nil {
		t.Errorf("unexpected edits besides the annotations: %v", r)
	}
}

func TestAllocateCDICRI(t *testing.T) {
	e := newEnv(t, true)
	p := e.plugin(t, Config{}) // cdi-cri is the default
	r := allocate(t, p, e.uuid(7), e.uuid(6), e.uuid(7))
	want := []*pluginapi.CDIDevice{{Name: cdiName(e.uuid(7))}, {Name: cdiName(e.uuid(6))}}
	if !reflect.DeepEqual(r.CdiDevices, want) {
		t.Errorf("CDI devices = %v, want %v", r.CdiDevices, want)
	}
	if r.Envs != nil || r.Annotations != nil || r.Mounts != nil || r.Devices != nil {
		t.Errorf("unexpected edits besides the CDI devices: %v", r)
	}
}

func TestAllocateSeveralStrategiesAndIndexIDs(t *testing.T) {
	e := newEnv(t, true)
	p := e.plugin(t, Config{
		DeviceListStrategies: []string{StrategyEnvvar, StrategyVolumeMounts, StrategyCDIAnnotations, StrategyCDICRI},
		DeviceIDStrategy:     IDStrategyIndex,
	})
	r := allocate(t, p, "2", "0")
	if want := map[string]string{"NVIDIA_VISIBLE_DEVICES": "2,0"}; !reflect.DeepEqual(r.Envs, want) {
		t.Errorf("envs = %v, want %v", r.Envs, want)
	}
	wantMounts := []*pluginapi.Mount{
		{ContainerPath: "/var/run/nvidia-container-devices/2", HostPath: "/dev/null", ReadOnly: true},
		{ContainerPath: "/var/run/nvidia-container-devices/0", HostPath: "/dev/null", ReadOnly: true},
	}
	if !reflect.DeepEqual(r.Mounts, wantMounts) {
		t.Errorf("mounts = %v, want %v", r.Mounts, wantMounts)
	}
	if want := map[string]string{"cdi.k8s.io/gpudra-device-plugin_2": cdiName("2") + "," + cdiName("0")}; !reflect.DeepEqual(r.Annotations, want) {
		t.Errorf("annotations = %v, want %v", r.Annotations, want)
	}
	if want := []*pluginapi.CDIDevice{{Name: cdiName("2")}, {Name: cdiName("0")}}; !reflect.DeepEqual(r.CdiDevices, want) {
		t.Errorf("CDI devices = %v, want %v", r.CdiDevices, want)
	}
	// UUIDs are not the IDs under the index strategy.
	if _, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{e.uuid(0)}}}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("allocate by UUID under the index strategy: %v, want InvalidArgument", err)
	}
}

func TestAllocateUnknownDevice(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}})
	for _, id := range []string{"GPU-nope", e.uuid(0) + "::0", ""} {
		_, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{id}}}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("allocate %q: %v, want InvalidArgument", id, err)
		}
	}
}

func TestPassDeviceSpecs(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}, PassDeviceSpecs: true, DevRoot: "/run/nvidia/driver"})
	r := allocate(t, p, e.uuid(1), e.uuid(0))
	spec := func(p string) *pluginapi.DeviceSpec {
		return &pluginapi.DeviceSpec{ContainerPath: p, HostPath: "/run/nvidia/driver" + p, Permissions: "rw"}
	}
	want := []*pluginapi.DeviceSpec{
		spec(fmt.Sprintf("/dev/nvidia%d", e.inv.Devices[1].Minor)),
		spec(fmt.Sprintf("/dev/nvidia%d", e.inv.Devices[0].Minor)),
		spec("/dev/nvidiactl"), spec("/dev/nvidia-uvm"), spec("/dev/nvidia-uvm-tools"),
	}
	if !reflect.DeepEqual(r.Devices, want) {
		t.Errorf("device specs = %v, want %v", r.Devices, want)
	}
}

func TestListAdvertisesEveryGPUWithNUMA(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}})
	list, _ := p.deviceList()
	if len(list.Devices) != len(e.inv.Devices) {
		t.Fatalf("%d devices advertised, want %d", len(list.Devices), len(e.inv.Devices))
	}
	for i, d := range list.Devices {
		want := &pluginapi.Device{ID: e.uuid(i), Health: pluginapi.Healthy,
			Topology: &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(e.inv.Devices[i].Minor / 4)}}}}
		if !reflect.DeepEqual(d, want) {
			t.Errorf("device %d = %v, want %v", i, d, want)
		}
	}
	if err := p.SetHealth(strconv.Itoa(e.inv.Devices[2].Index), false); err != nil {
		t.Fatal(err)
	}
	list, _ = p.deviceList()
	if list.Devices[2].Health != pluginapi.Unhealthy || list.Devices[1].Health != pluginapi.Healthy {
		t.Errorf("after SetHealth(2, false): %v", list.Devices)
	}
	if err := p.SetHealth("GPU-nope", false); err == nil {
		t.Error("SetHealth of an unknown GPU succeeded")
	}
}

func TestReplicas(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}, Replicas: 3, RenameResource: "nvidia.com/gpu.shared"})
	if p.ResourceName() != "nvidia.com/gpu.shared" {
		t.Errorf("resource name %q", p.ResourceName())
	}
	list, _ := p.deviceList()
	var ids []string
	for _, d := range list.Devices {
		ids = append(ids, d.ID)
	}
	var want []string
	for i := range e.inv.Devices {
		for r := range 3 {
			want = append(want, fmt.Sprintf("%s::%d", e.uuid(i), r))
		}
	}
	if !slices.Equal(ids, want) {
		t.Errorf("advertised %v, want %v", ids, want)
	}
	r := allocate(t, p, e.uuid(4)+"::2", e.uuid(1)+"::0", e.uuid(4)+"::0")
	if want := map[string]string{"NVIDIA_VISIBLE_DEVICES": e.uuid(4) + "," + e.uuid(1)}; !reflect.DeepEqual(r.Envs, want) {
		t.Errorf("envs = %v, want %v", r.Envs, want)
	}
	for _, bad := range []string{e.uuid(1) + "::3", e.uuid(1) + "::x"} {
		if _, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{bad}}}}); err == nil {
			t.Errorf("allocate %q succeeded", bad)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	e := newEnv(t, false)
	for _, cfg := range []Config{
		{DeviceListStrategies: []string{"magic"}},
		{DeviceListStrategies: []string{StrategyEnvvar, StrategyEnvvar}},
		{DeviceListStrategies: []string{StrategyEnvvar}, DeviceIDStrategy: "serial"},
		{DeviceListStrategies: []string{StrategyEnvvar}, Replicas: -1},
		{DeviceListStrategies: []string{StrategyEnvvar}, RenameResource: "nvidia.com/gpu.shared"},
		{DeviceListStrategies: []string{StrategyCDICRI}}, // no edits
	} {
		_, ctx := ktesting.NewTestContext(t)
		if _, err := New(ctx, cfg, e.inv, e.lib, nil); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestCDISpecValidAndResolvesEveryID(t *testing.T) {
	e := newEnv(t, true)
	cdiRoot := filepath.Join(t.TempDir(), "cdi")
	p := e.plugin(t, Config{CDIRoot: cdiRoot, DeviceListStrategies: []string{StrategyCDICRI, StrategyCDIAnnotations}})
	if want := filepath.Join(cdiRoot, "k8s.device-plugin.nvidia.com-gpu.json"); p.CDISpecPath() != want {
		t.Errorf("spec path %s, want %s", p.CDISpecPath(), want)
	}
	fi, err := os.Stat(p.CDISpecPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("spec mode %v, want 0644", fi.Mode().Perm())
	}
	spec, err := cdiapi.ReadSpec(p.CDISpecPath(), 0)
	if err != nil {
		t.Fatalf("CDI library rejects the spec: %v", err)
	}
	if spec.Kind != "k8s.device-plugin.nvidia.com/gpu" {
		t.Errorf("kind %q", spec.Kind)
	}
	if got, want := len(spec.Devices), 2*len(e.inv.Devices)+1; got != want {
		t.Errorf("%d devices in the spec, want %d", got, want)
	}
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(cdiRoot), cdiapi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) != 0 {
		t.Fatalf("CDI cache errors: %v", errs)
	}
	uuids := e.inv.UUIDs()
	// Every ID the cdi-cri strategy returns resolves, under both ID
	// strategies (the spec names GPUs both ways).
	for _, ids := range [][]string{uuids, {"0", "1", "2", "3", "4", "5", "6", "7"}} {
		q := e.plugin(t, Config{CDIRoot: t.TempDir(), DeviceIDStrategy: map[bool]string{true: IDStrategyUUID, false: IDStrategyIndex}[ids[0] == uuids[0]]})
		r := allocate(t, q, ids...)
		for k, d := range r.CdiDevices {
			dev := cache.GetDevice(d.Name)
			if dev == nil {
				t.Errorf("CDI device %s does not resolve", d.Name)
				continue
			}
			// The device's own node is /dev/nvidia<minor>.
			node := fmt.Sprintf("/dev/nvidia%d", e.inv.Devices[k].Minor)
			if len(dev.ContainerEdits.DeviceNodes) == 0 || dev.ContainerEdits.DeviceNodes[0].Path != node {
				t.Errorf("CDI device %s has nodes %v, want %s", d.Name, dev.ContainerEdits.DeviceNodes, node)
			}
		}
	}
	all := cache.GetDevice(cdiName("all"))
	if all == nil || len(all.ContainerEdits.DeviceNodes) != len(e.inv.Devices) {
		t.Errorf("CDI device all: %v", all)
	}
	if !slices.Contains(spec.ContainerEdits.Env, "NVIDIA_VISIBLE_DEVICES=void") {
		t.Errorf("spec env %v lacks NVIDIA_VISIBLE_DEVICES=void", spec.ContainerEdits.Env)
	}
}

// BenchmarkAllocate measures Allocate of all 8 GPUs of a DGX H100 for one
// container, per device-list strategy.
func BenchmarkAllocate(b *testing.B) {
	for _, strategy := range []string{StrategyEnvvar, StrategyVolumeMounts, StrategyCDIAnnotations, StrategyCDICRI} {
		b.Run(strategy, func(b *testing.B) {
			e := newEnv(b, strategy == StrategyCDIAnnotations || strategy == StrategyCDICRI)
			p := e.plugin(b, Config{DeviceListStrategies: []string{strategy}})
			req := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: e.inv.UUIDs()}}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Allocate(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

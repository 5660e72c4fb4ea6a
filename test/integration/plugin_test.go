// Package integration starts the real gpu-kubelet-plugin (mock GPUs, fake API
// server) and drives it over its gRPC sockets with the kubelet's own client
// types, the way the kubelet does.
package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	cdispecs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/plugin"
)

const (
	driverName = "gpu.nvidia.com"
	nodeName   = "node-a"
)

type harness struct {
	t      *testing.T
	ctx    context.Context
	cfg    plugin.Config
	client *fake.Clientset
	plugin *plugin.Plugin
}

// newHarness starts the plugin on a mock DGX H100 with a fake API server,
// its metrics on a free local port.
func newHarness(t *testing.T) *harness {
	t.Helper()
	h := newStoppedHarness(t)
	h.cfg.Metrics.Address = "127.0.0.1:0"
	h.start()
	return h
}

func (h *harness) start() {
	h.t.Helper()
	p, err := plugin.Start(h.ctx, h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.plugin = p
	h.t.Cleanup(p.Stop)
}

func (h *harness) dial(path string) *grpc.ClientConn {
	h.t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (h *harness) draClient() drapb.DRAPluginClient {
	return drapb.NewDRAPluginClient(h.dial(filepath.Join(h.cfg.PluginDataDir(), "dra.sock")))
}

// createClaim stores an allocated claim in the API server, as the scheduler
// leaves it.
func (h *harness) createClaim(name string, devices ...string) *resourceapi.ResourceClaim {
	h.t.Helper()
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name)},
		Status:     resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}},
	}
	for _, d := range devices {
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results, resourceapi.DeviceRequestAllocationResult{
			Request: "gpus", Driver: driverName, Pool: nodeName, Device: d,
		})
	}
	c, err := h.client.ResourceV1().ResourceClaims("default").Create(h.ctx, c, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func ref(c *resourceapi.ResourceClaim) *drapb.Claim {
	return &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
}

func TestKubeletDrivesPrepareAndUnprepareOverGRPC(t *testing.T) {
	h := newHarness(t)
	client := h.draClient()
	one := h.createClaim("one", "gpu-0")
	two := h.createClaim("two", "gpu-1", "gpu-2")
	clash := h.createClaim("clash", "gpu-0")
	three := h.createClaim("three", "gpu-5")

	resp, err := client.NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(one), ref(two)}})
	if err != nil {
		t.Fatal(err)
	}
	// One bad claim fails alone; the good one in the same call is prepared.
	resp2, err := client.NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(clash), ref(three)}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp2.Claims[string(clash.UID)]; r == nil || !strings.Contains(r.Error, "already prepared for claim default/one") {
		t.Errorf("clashing claim: %+v", r)
	}
	if r := resp2.Claims[string(three.UID)]; r == nil || r.Error != "" || len(r.Devices) != 1 {
		t.Errorf("good claim next to a bad one: %+v", r)
	}
	for _, c := range []*resourceapi.ResourceClaim{one, two} {
		r := resp.Claims[string(c.UID)]
		if r == nil || r.Error != "" {
			t.Fatalf("claim %s: %+v", c.Name, r)
		}
		for _, d := range r.Devices {
			// Exclusive claims without config: no spec of their own.
			want := []string{"k8s.gpu.nvidia.com/driver=common", "k8s.gpu.nvidia.com/device=" + d.DeviceName}
			if !slices.Equal(d.CdiDeviceIds, want) || d.PoolName != nodeName {
				t.Errorf("claim %s device %+v, want CDI IDs %v", c.Name, d, want)
			}
		}
	}
	if n := len(resp.Claims[string(two.UID)].Devices); n != 2 {
		t.Errorf("claim two got %d devices", n)
	}

	// The container runtime's view: the CDI library resolves the IDs from
	// the directory and injects the GPU's device node and the driver files.
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(h.cfg.Node.CDIRoot), cdiapi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, id := range resp.Claims[string(one.UID)].Devices[0].CdiDeviceIds {
		dev := cache.GetDevice(id)
		if dev == nil {
			t.Fatalf("CDI cache cannot resolve claim one's device %s; errors: %v", id, cache.GetErrors())
		}
		for _, n := range dev.ContainerEdits.DeviceNodes {
			nodes = append(nodes, n.Path)
		}
		for _, n := range dev.GetSpec().ContainerEdits.DeviceNodes {
			nodes = append(nodes, n.Path)
		}
	}
	// The driver device: its spec holds the driver files.
	dev := cache.GetDevice(resp.Claims[string(one.UID)].Devices[0].CdiDeviceIds[0])
	for _, want := range []string{"/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"} {
		if !contains(nodes, want) {
			t.Errorf("device nodes %v lack %s", nodes, want)
		}
	}
	for _, m := range dev.GetSpec().ContainerEdits.Mounts {
		if _, err := os.Stat(m.HostPath); err != nil {
			t.Errorf("spec mounts a host path that does not exist: %v", err)
		}
	}

	// Repeat: same answer (idempotent).
	again, err := client.NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(one)}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(again.Claims[string(one.UID)].Devices) != fmt.Sprint(resp.Claims[string(one.UID)].Devices) {
		t.Errorf("repeated prepare differs: %v vs %v", again.Claims[string(one.UID)], resp.Claims[string(one.UID)])
	}

	un, err := client.NodeUnprepareResources(h.ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(one), ref(two), ref(three), {Namespace: "default", Name: "ghost", Uid: "uid-ghost"}}})
	if err != nil {
		t.Fatal(err)
	}
	for uid, r := range un.Claims {
		if r.Error != "" {
			t.Errorf("unprepare %s: %s", uid, r.Error)
		}
	}
	if files := specFiles(t, h.cfg.Node.CDIRoot); !slices.Equal(files, []string{"k8s.gpu.nvidia.com-device.json", "k8s.gpu.nvidia.com-driver.json"}) {
		t.Errorf("specs left after unprepare: %v, want only the static device and driver-wide ones", files)
	}

	// gpu-0 is free again for the claim that clashed.
	resp, err = client.NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(clash)}})
	if err != nil || resp.Claims[string(clash.UID)].Error != "" {
		t.Errorf("clash after release: %v %+v", err, resp)
	}

	// Metrics count what happened.
	body := get(t, "http://"+h.plugin.MetricsAddr().String()+"/metrics")
	for _, want := range []string{
		`gpudra_claim_operations_total{operation="prepare",result="success"} 5`,
		`gpudra_claim_operations_total{operation="prepare",result="error"} 1`,
		`gpudra_claim_operations_total{operation="unprepare",result="success"} 4`,
		`gpudra_claim_operation_duration_seconds_count{operation="prepare"} 6`,
		`gpudra_prepared_claims 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if got := get(t, "http://"+h.plugin.MetricsAddr().String()+"/readyz"); got != "ok\n" {
		t.Errorf("readyz = %q", got)
	}
}

func TestPublishesResourceSlicesAndRegisters(t *testing.T) {
	h := newHarness(t)
	var slices *resourceapi.ResourceSliceList
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		slices, err = h.client.ResourceV1().ResourceSlices().List(h.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(slices.Items) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(slices.Items) != 1 {
		t.Fatalf("got %d ResourceSlices, want 1", len(slices.Items))
	}
	s := slices.Items[0]
	if s.Spec.Driver != driverName || s.Spec.NodeName == nil || *s.Spec.NodeName != nodeName || s.Spec.Pool.Name != nodeName || len(s.Spec.Devices) != 8 {
		t.Errorf("slice spec = driver %s node %v pool %s devices %d", s.Spec.Driver, s.Spec.NodeName, s.Spec.Pool.Name, len(s.Spec.Devices))
	}
	uuids := map[string]bool{}
	for _, d := range h.plugin.Inventory().Devices {
		uuids[d.UUID] = true
	}
	for _, d := range s.Spec.Devices {
		u := d.Attributes["uuid"].StringValue
		if u == nil || !uuids[*u] {
			t.Errorf("device %s has uuid %v, not one of the inventory", d.Name, u)
		}
	}

	// The kubelet's registration handshake on the registrar socket.
	reg := registerapi.NewRegistrationClient(h.dial(filepath.Join(h.cfg.Kubelet.RegistrarDir, driverName+"-reg.sock")))
	info, err := reg.GetInfo(h.ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.DRAPlugin || info.Name != driverName || info.Endpoint != filepath.Join(h.cfg.PluginDataDir(), "dra.sock") {
		t.Errorf("registration info = %+v", info)
	}
}

func TestRestartKeepsPreparedClaims(t *testing.T) {
	h := newHarness(t)
	c := h.createClaim("keep", "gpu-4")
	resp, err := h.draClient().NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	if err != nil || resp.Claims[string(c.UID)].Error != "" {
		t.Fatalf("%v %+v", err, resp)
	}
	before := resp.Claims[string(c.UID)].Devices
	// Crash-like stop, lose the tmpfs CDI directory, start again.
	h.plugin.Stop()
	if err := os.RemoveAll(h.cfg.Node.CDIRoot); err != nil {
		t.Fatal(err)
	}
	h.start()
	if files := specFiles(t, h.cfg.Node.CDIRoot); !slices.Equal(files, []string{"k8s.gpu.nvidia.com-device.json", "k8s.gpu.nvidia.com-driver.json"}) {
		t.Errorf("start-up did not re-create the static device and driver-wide specs (the claim has none of its own): %v", files)
	}
	other := h.createClaim("other", "gpu-4")
	resp, err = h.draClient().NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c), ref(other)}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(resp.Claims[string(c.UID)].Devices) != fmt.Sprint(before) {
		t.Errorf("after restart: %v, before %v", resp.Claims[string(c.UID)].Devices, before)
	}
	if resp.Claims[string(other.UID)].Error == "" {
		t.Error("after restart, the restarted plugin gave a device in use to another claim")
	}
}

func TestStartFailsClearlyWithoutNVML(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	cfg := plugin.Config{
		NodeName:   nodeName,
		DriverName: driverName,
		KubeClient: fake.NewClientset(),
		Node:       node.Flags{NVML: node.BackendReal, DriverRoot: t.TempDir(), CDIRoot: t.TempDir()},
		Kubelet:    plugin.KubeletConfig{RegistrarDir: t.TempDir(), PluginsDir: t.TempDir()},
	}
	_, err := plugin.Start(ctx, cfg)
	if !errors.Is(err, inventory.ErrNVMLUnavailable) {
		t.Fatalf("err = %v, want ErrNVMLUnavailable", err)
	}
	if !strings.Contains(err.Error(), "mock") {
		t.Errorf("error %q does not point at the mock backend for GPU-less nodes", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(cfg.Kubelet.RegistrarDir)); len(entries) != 0 {
		t.Errorf("a failed start left a registration socket: %v", names(entries))
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// specFiles lists the regular files of a CDI directory, sorted (without
// the staging directory).
func specFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	return out
}

func names(entries []os.DirEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestMockHostModeLaysOutDriverAndInstallsHook covers the chart's mock mode:
// the plugin itself creates the mock driver installation and installs the
// CDI hook on the host, and its specs name only paths that exist.
func TestMockHostModeLaysOutDriverAndInstallsHook(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	hookSrc := filepath.Join(root, "image-hook")
	if err := os.WriteFile(hookSrc, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}})
	cfg := plugin.Config{
		NodeName:   nodeName,
		DriverName: driverName,
		KubeClient: client,
		Node:       node.Flags{NVML: "mock:dgxa100", MockHostRoot: filepath.Join(root, "mock"), InstallHookFrom: hookSrc, HookPath: filepath.Join(root, "state/bin/nvidia-cdi-hook"), CDIRoot: filepath.Join(root, "cdi")},
		Kubelet:    plugin.KubeletConfig{RegistrarDir: filepath.Join(root, "registry"), PluginsDir: filepath.Join(root, "plugins")},
	}
	if err := os.MkdirAll(cfg.Kubelet.RegistrarDir, 0o750); err != nil {
		t.Fatal(err)
	}
	p, err := plugin.Start(ctx, cfg)
	mockmachinetest.SkipWithoutMknod(t, err)
	defer p.Stop()
	if fi, err := os.Stat(cfg.Node.HookPath); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("hook not installed executable: %v %v", fi, err)
	}
	for _, d := range p.Inventory().Devices {
		fi, err := os.Stat(filepath.Join(cfg.Node.MockHostRoot, "dev", fmt.Sprintf("nvidia%d", d.Minor)))
		if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("mock device node of GPU %d: %v %v", d.Index, fi, err)
		}
	}
	h := &harness{t: t, ctx: ctx, cfg: cfg, client: client, plugin: p}
	c := h.createClaim("mock", "gpu-7")
	resp, err := h.draClient().NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	if err != nil || resp.Claims[string(c.UID)].Error != "" {
		t.Fatalf("%v %+v", err, resp)
	}
	var hostPaths []string
	var hooks []*cdispecs.Hook
	for _, file := range []string{"k8s.gpu.nvidia.com-driver.json", "k8s.gpu.nvidia.com-device.json"} {
		spec, err := cdiapi.ReadSpec(filepath.Join(cfg.Node.CDIRoot, file), 0)
		if err != nil {
			t.Fatal(err)
		}
		hooks = append(hooks, spec.ContainerEdits.Hooks...)
		for _, m := range spec.ContainerEdits.Mounts {
			hostPaths = append(hostPaths, m.HostPath)
		}
		nodes := spec.ContainerEdits.DeviceNodes
		if d := spec.GetDevice("gpu-7"); d != nil {
			nodes = append(nodes, d.ContainerEdits.DeviceNodes...)
		}
		for _, n := range nodes {
			hostPaths = append(hostPaths, n.HostPath)
		}
	}
	for _, hp := range hostPaths {
		if !strings.HasPrefix(hp, cfg.Node.MockHostRoot+"/") {
			t.Errorf("host path %s is outside the mock host root", hp)
		}
		if _, err := os.Stat(hp); err != nil {
			t.Errorf("spec names a host path that does not exist: %v", err)
		}
	}
	if len(hooks) == 0 {
		t.Error("the driver-wide spec has no hook")
	}
	for _, hk := range hooks {
		if hk.Path != cfg.Node.HookPath {
			t.Errorf("hook path %s, want the installed %s", hk.Path, cfg.Node.HookPath)
		}
	}
}

// TestDriverChangeStopsThePlugin: after a driver upgrade the edits computed at
// start name the old libraries, so the plugin stops with an error (and is
// restarted by its DaemonSet) instead of writing stale specs.
func TestDriverChangeStopsThePlugin(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	cfg := plugin.Config{
		NodeName:            nodeName,
		DriverName:          driverName,
		KubeClient:          fake.NewClientset(),
		DriverWatchInterval: 20 * time.Millisecond,
		Node:                node.Flags{NVML: "mock:dgxh100", MockHostRoot: filepath.Join(root, "mock"), HookPath: "/usr/bin/nvidia-cdi-hook", CDIRoot: filepath.Join(root, "cdi")},
		Kubelet:             plugin.KubeletConfig{RegistrarDir: filepath.Join(root, "registry"), PluginsDir: filepath.Join(root, "plugins")},
	}
	if err := os.MkdirAll(cfg.Kubelet.RegistrarDir, 0o750); err != nil {
		t.Fatal(err)
	}
	p, err := plugin.Start(ctx, cfg)
	mockmachinetest.SkipWithoutMknod(t, err)
	defer p.Stop()
	select {
	case <-p.Done():
		t.Fatalf("plugin stopped without a driver change: %v", p.Err())
	case <-time.After(200 * time.Millisecond):
	}
	lib := filepath.Join(cfg.Node.MockHostRoot, mockmachine.LibDir)
	if err := os.WriteFile(filepath.Join(lib, "libnvidia-ml.so.560.28.03"), []byte("new driver"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(lib, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("libnvidia-ml.so.560.28.03", filepath.Join(lib, "libnvidia-ml.so.1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		if !strings.Contains(fmt.Sprint(p.Err()), "driver changed") {
			t.Errorf("stopped with %v, want a driver change", p.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("driver change not noticed")
	}
}

package deviceplugin

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

// migEnv is the mock dgxh100-mig: GPU 0 holds 1g.10gb x2, 2g.20gb, 3g.40gb;
// GPU 1 holds 7g.80gb; GPUs 2-7 are not in MIG mode.
func migEnv(t *testing.T, withCDI bool) (*inventory.Inventory, Inputs) {
	t.Helper()
	lib, inv := mockmachinetest.Machine(t, "dgxh100-mig", "node-a")
	in := Inputs{Inventory: inv, NVML: lib}
	if withCDI {
		root := t.TempDir()
		mockmachinetest.Host(t, root, inv)
		_, ctx := ktesting.NewTestContext(t)
		edits, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: root, HookPath: "/usr/local/bin/nvidia-cdi-hook"}, inv.UUIDs())
		if err != nil {
			t.Fatal(err)
		}
		in.Edits = edits
		var migs []cdi.MIGDevice
		for _, m := range inv.MIGDevices {
			migs = append(migs, cdi.MIGDevice{UUID: m.UUID, ParentUUID: m.ParentUUID, ParentMinor: m.ParentMinor, GPUInstanceID: m.GPUInstanceID, ComputeInstanceID: m.ComputeInstanceID})
		}
		if in.DeviceEdits, err = cdi.WithMIGCaps(edits, migs, mockmachine.MIGCapMinors(inv)); err != nil {
			t.Fatal(err)
		}
	}
	return inv, in
}

func newSet(t *testing.T, cfg Config, in Inputs) (*Set, error) {
	t.Helper()
	if cfg.CDIRoot == "" {
		cfg.CDIRoot = filepath.Join(t.TempDir(), "cdi")
	}
	if cfg.DevicePluginPath == "" {
		cfg.DevicePluginPath = t.TempDir()
	}
	_, ctx := ktesting.NewTestContext(t)
	return NewSet(ctx, cfg, in)
}

func resources(s *Set) map[string]int {
	out := map[string]int{}
	for _, p := range s.Plugins {
		resp, _ := p.deviceList()
		out[p.ResourceName()] = len(resp.Devices)
	}
	return out
}

func TestMIGStrategies(t *testing.T) {
	_, in := migEnv(t, false)
	cfg := Config{DeviceListStrategies: []string{StrategyEnvvar}}
	for _, tc := range []struct {
		strategy string
		want     map[string]int
		err      string
	}{
		{MIGStrategyNone, map[string]int{"nvidia.com/gpu": 8}, ""},
		{MIGStrategyMixed, map[string]int{"nvidia.com/gpu": 6, "nvidia.com/mig-1g.10gb": 2, "nvidia.com/mig-2g.20gb": 1,
			"nvidia.com/mig-3g.40gb": 1, "nvidia.com/mig-7g.80gb": 1}, ""},
		{MIGStrategySingle, nil, "all GPUs of the node must have the same MIG mode"},
	} {
		t.Run(tc.strategy, func(t *testing.T) {
			c := cfg
			c.MIGStrategy = tc.strategy
			s, err := newSet(t, c, in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := resources(s); !mapsEqual(got, tc.want) {
				t.Fatalf("resources %v, want %v", got, tc.want)
			}
			if tc.strategy == MIGStrategyMixed {
				if got := s.Plugins[1].cfg.SocketName; got != "gpudra-nvidia-gpu-mig-1g.10gb.sock" {
					t.Errorf("socket %q", got)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// single: one profile on GPUs all in MIG mode; otherwise an error naming
// the profiles.
func TestMIGStrategySingle(t *testing.T) {
	full, in := migEnv(t, false)
	only := func(gpus []int, migs []int) *inventory.Inventory {
		inv := &inventory.Inventory{}
		for _, i := range gpus {
			inv.Devices = append(inv.Devices, full.Devices[i])
		}
		for _, i := range migs {
			inv.MIGDevices = append(inv.MIGDevices, full.MIGDevices[i])
		}
		return inv
	}
	cfg := Config{DeviceListStrategies: []string{StrategyEnvvar}, MIGStrategy: MIGStrategySingle}
	in.NVML = nil
	in.Inventory = only([]int{1}, []int{4})
	s, err := newSet(t, cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := resources(s); !mapsEqual(got, map[string]int{"nvidia.com/gpu": 1}) {
		t.Fatalf("resources %v", got)
	}
	resp := allocate(t, s.Plugins[0], full.MIGDevices[4].UUID)
	if got := resp.Envs[VisibleDevicesEnv]; got != full.MIGDevices[4].UUID {
		t.Errorf("NVIDIA_VISIBLE_DEVICES=%q", got)
	}
	in.Inventory = only([]int{0}, []int{0, 1, 2, 3})
	if _, err := newSet(t, cfg, in); err == nil || !strings.Contains(err.Error(), "one profile") {
		t.Fatalf("got %v, want a profile error", err)
	}
	in.Inventory = only([]int{0}, nil)
	if _, err := newSet(t, cfg, in); err == nil || !strings.Contains(err.Error(), "no MIG devices") {
		t.Fatalf("got %v, want a no-MIG-devices error", err)
	}
}

// Every strategy names a MIG device so that the container gets its parent's
// device node and its capability nodes, as the DRA plugin's static MIG.
func TestMIGDeviceDelivery(t *testing.T) {
	inv, in := migEnv(t, true)
	if in.Edits == nil {
		return
	}
	m := inv.MIGDevices[0]
	cfg := Config{MIGStrategy: MIGStrategyMixed, PassDeviceSpecs: true,
		DeviceListStrategies: []string{StrategyEnvvar, StrategyVolumeMounts, StrategyCDIAnnotations, StrategyCDICRI}}
	s, err := newSet(t, cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	var p *Plugin
	for _, q := range s.Plugins {
		if q.ResourceName() == "nvidia.com/mig-1g.10gb" {
			p = q
		}
	}
	resp := allocate(t, p, m.UUID)
	if resp.Envs[VisibleDevicesEnv] != m.UUID {
		t.Errorf("envvar: %v", resp.Envs)
	}
	if len(resp.Mounts) != 1 || resp.Mounts[0].ContainerPath != VolumeMountsRoot+"/"+m.UUID {
		t.Errorf("volume-mounts: %v", resp.Mounts)
	}
	if len(resp.CdiDevices) != 1 || resp.CdiDevices[0].Name != cdiName(m.UUID) {
		t.Errorf("cdi-cri: %v", resp.CdiDevices)
	}
	if len(resp.Annotations) != 1 {
		t.Errorf("cdi-annotations: %v", resp.Annotations)
	}
	want, err := in.DeviceEdits.Device(m.UUID)
	if err != nil {
		t.Fatal(err)
	}
	var wantNodes []string
	for _, n := range want.DeviceNodes {
		wantNodes = append(wantNodes, n.Path)
	}
	if !slices.Contains(wantNodes, "/dev/nvidia0") || len(wantNodes) < 3 {
		t.Fatalf("MIG edits have nodes %v: want the parent's and two capability nodes", wantNodes)
	}
	var passed []string
	for _, d := range resp.Devices {
		passed = append(passed, d.ContainerPath)
	}
	for _, n := range wantNodes {
		if !slices.Contains(passed, n) {
			t.Errorf("pass-device-specs: %v lacks %s", passed, n)
		}
	}
	data, err := os.ReadFile(s.CDISpecPath())
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, d := range spec.Devices {
		if d.Name == m.UUID || d.Name == "0:0" {
			found++
			var got []string
			for _, n := range d.ContainerEdits.DeviceNodes {
				got = append(got, n.Path)
			}
			if !slices.Equal(got, wantNodes) {
				t.Errorf("CDI device %s nodes %v, want %v", d.Name, got, wantNodes)
			}
		}
	}
	if found != 2 {
		t.Errorf("CDI spec has %d of the MIG device's names, want 2 (UUID and 0:0)", found)
	}
}

func TestMIGHealthFollowsParent(t *testing.T) {
	inv, in := migEnv(t, false)
	s, err := newSet(t, Config{MIGStrategy: MIGStrategyMixed, DeviceListStrategies: []string{StrategyEnvvar}}, in)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetHealth(inv.Devices[0].UUID, false); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Plugins {
		resp, _ := p.deviceList()
		for _, d := range resp.Devices {
			i, _ := p.gpuOf(d.ID)
			if want := p.gpus[i].dev.Index != 0; (d.Health == pluginapi.Healthy) != want {
				t.Errorf("%s %s health %s", p.ResourceName(), d.ID, d.Health)
			}
		}
	}
	if err := s.SetHealth("GPU-nope", false); err == nil {
		t.Error("unknown device: no error")
	}
}

type fakeMPS struct{ calls map[string]int }

func (f *fakeMPS) Retain(context.Context, []inventory.Device) error { return nil }

func (f *fakeMPS) Ensure(_ context.Context, gpu inventory.Device, replicas int) (specs.ContainerEdits, error) {
	f.calls[gpu.UUID] = replicas
	return specs.ContainerEdits{Env: []string{"CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps"},
		Mounts: []*specs.Mount{{HostPath: "/host/" + gpu.UUID, ContainerPath: "/tmp/nvidia-mps", Options: []string{"rbind", "rw"}}}}, nil
}

func TestMPSSharing(t *testing.T) {
	e := newEnv(t, false)
	f := &fakeMPS{calls: map[string]int{}}
	cfg := Config{DeviceListStrategies: []string{StrategyEnvvar}, Sharing: Sharing{Strategy: SharingMPS,
		Resources: []ReplicatedResource{{Name: DefaultResourceName, Rename: "nvidia.com/gpu.shared", Replicas: 4}}}}
	s, err := newSet(t, cfg, Inputs{Inventory: e.inv, MPS: f})
	if err != nil {
		t.Fatal(err)
	}
	if got := resources(s); !mapsEqual(got, map[string]int{"nvidia.com/gpu.shared": 32}) {
		t.Fatalf("resources %v", got)
	}
	if len(f.calls) != 8 || f.calls[e.uuid(0)] != 4 {
		t.Fatalf("daemons %v", f.calls)
	}
	p := s.Plugins[0]
	resp := allocate(t, p, e.uuid(3)+"::2")
	if resp.Envs["CUDA_MPS_PIPE_DIRECTORY"] != "/tmp/nvidia-mps" || len(resp.Mounts) != 1 || resp.Mounts[0].HostPath != "/host/"+e.uuid(3) {
		t.Errorf("MPS edits missing: %v %v", resp.Envs, resp.Mounts)
	}
	if _, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{e.uuid(3) + "::0", e.uuid(3) + "::1"}}}}); err == nil {
		t.Error("two MPS replicas in one container: no error")
	}
}

func TestMPSRefusedOnMIG(t *testing.T) {
	_, in := migEnv(t, false)
	in.MPS = &fakeMPS{calls: map[string]int{}}
	cfg := Config{MIGStrategy: MIGStrategyMixed, DeviceListStrategies: []string{StrategyEnvvar}, Sharing: Sharing{Strategy: SharingMPS,
		Resources: []ReplicatedResource{{Name: "nvidia.com/mig-1g.10gb", Replicas: 2}}}}
	if _, err := newSet(t, cfg, in); err == nil || !strings.Contains(err.Error(), "not supported for MIG devices") {
		t.Fatalf("got %v, want MPS refused on MIG", err)
	}
	// Time-slicing of a MIG resource works.
	cfg.Sharing.Strategy = SharingTimeSlicing
	s, err := newSet(t, cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := resources(s)["nvidia.com/mig-1g.10gb"]; got != 4 {
		t.Fatalf("mig-1g.10gb replicas %d, want 4", got)
	}
}

func TestMIGResourceName(t *testing.T) {
	for in, want := range map[string]string{"1g.10gb": "nvidia.com/mig-1g.10gb", "1g.10gb+me": "nvidia.com/mig-1g.10gb.me", "1c.3g.40gb": "nvidia.com/mig-1c.3g.40gb"} {
		if got := MIGResourceName(in); got != want {
			t.Errorf("MIGResourceName(%q) = %q, want %q", in, got, want)
		}
	}
}

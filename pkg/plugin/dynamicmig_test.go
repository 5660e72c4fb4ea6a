package plugin

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// openDynamic opens a mock node and its dynamic MIG over an empty
// checkpoint.
func openDynamic(t *testing.T, machine string) (*node.Node, *dynamicMIG) {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	n, err := node.Open(ctx, node.Flags{NVML: "mock:" + machine, MockHostRoot: t.TempDir()}, node.Options{Mode: node.Plugin, Seed: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	store, err := checkpoint.NewStore(filepath.Join(t.TempDir(), "claims"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeName: "node-a", DriverName: "gpu.nvidia.com", DynamicMIG: DynamicMIGConfig{Enabled: true}}
	dm, err := openDynamicMIG(ctx, cfg, n, store)
	if err != nil {
		t.Fatal(err)
	}
	return n, dm
}

// names returns the device names of n's set that have prefix.
func names(n *node.Node, prefix string) []string {
	var out []string
	for _, name := range n.Devices.Names() {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}

func TestDynamicMIGPartitionsGPUsThatCanBePartitioned(t *testing.T) {
	for _, tc := range []struct {
		machine string
		// partitionable GPUs; whole: whether such a GPU is also published
		// whole; gpu0 is what GPU 0 is published as (prefix count).
		partitionable int
		whole         bool
		gpu0Devices   int
	}{
		// Hopper, MIG mode off: every GPU whole and partitioned (7+7+4+3+2+1+1
		// partitions).
		{machine: "dgxh100", partitionable: 8, whole: true, gpu0Devices: 26},
		// Blackwell, MIG mode on without instances: the same.
		{machine: "dgxb200-migon", partitionable: 8, whole: true, gpu0Devices: 26},
		// Ampere, MIG mode off: it needs a reset to enter MIG mode, so it
		// is published whole only, as without dynamic MIG.
		{machine: "dgxa100", partitionable: 0, gpu0Devices: 1},
		// Ampere in MIG mode: partitions only (leaving MIG mode needs a
		// reset).
		{machine: "dgxa100-migon", partitionable: 8, whole: false, gpu0Devices: 25},
		// MIG devices made outside the driver on GPUs 0 and 1: those two
		// are left alone, published with their static MIG devices (4 on
		// GPU 0).
		{machine: "dgxh100-mig", partitionable: 6, whole: true, gpu0Devices: 4},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			n, dm := openDynamic(t, tc.machine)
			if got := len(dm.partitionable); got != tc.partitionable {
				t.Errorf("%d partitionable GPUs, want %d", got, tc.partitionable)
			}
			if got := names(n, "gpu-0"); len(got) != tc.gpu0Devices {
				t.Errorf("GPU 0 is published as %d devices, want %d: %v", len(got), tc.gpu0Devices, got)
			}
			gpu7, ok := n.Devices.Get("gpu-7")
			if tc.partitionable == 8 || tc.machine == "dgxh100-mig" {
				if ok != tc.whole || (ok && !gpu7.Partitionable) {
					t.Errorf("gpu-7: published whole %v (partitionable %v), want whole %v and partitionable", ok, gpu7.Partitionable, tc.whole)
				}
				if len(names(n, "gpu-7-mig-")) != 25 {
					t.Errorf("gpu-7 partitions: %v", names(n, "gpu-7-mig-"))
				}
			}
			if tc.partitionable > 0 {
				if got := len(resourceslice.CounterSets(n.Devices)); got != tc.partitionable {
					t.Errorf("%d counter sets, want one per partitionable GPU (%d)", got, tc.partitionable)
				}
			}
		})
	}
}

func TestDynamicMIGOffChangesNothing(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	n, err := node.Open(ctx, node.Flags{NVML: "mock:dgxh100", MockHostRoot: t.TempDir()}, node.Options{Mode: node.Plugin, Seed: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	before := n.Devices.Names()
	dm, err := openDynamicMIG(context.Background(), Config{}, n, nil)
	if err != nil || dm != nil {
		t.Fatalf("openDynamicMIG with dynamic MIG off = %v, %v; want nil, nil", dm, err)
	}
	if after := n.Devices.Names(); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("devices changed: %v -> %v", before, after)
	}
}

func TestDynamicMIGTaintsAGPUWhoseMIGModeWaitsForAReset(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	flags := node.Flags{NVML: "mock:dgxa100", MockHostRoot: root}
	// An operator asked for MIG mode on GPU 2 of an A100 node and has not
	// reset it yet: the change is pending (the mock keeps it across opens).
	n, err := node.Open(ctx, flags, node.Options{Mode: node.Plugin, Seed: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := n.NVML.DeviceGetHandleByIndex(2)
	if activation, ret := h.SetMigMode(1); ret != 0 || activation == 0 {
		t.Fatalf("SetMigMode on the mock A100: activation %v, ret %v; want a pending change", activation, ret)
	}
	n.Close()

	n, err = node.Open(ctx, flags, node.Options{Mode: node.Plugin, Seed: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	store, err := checkpoint.NewStore(filepath.Join(t.TempDir(), "claims"))
	if err != nil {
		t.Fatal(err)
	}
	dm, err := openDynamicMIG(ctx, Config{NodeName: "node-a", DriverName: "gpu.nvidia.com", DynamicMIG: DynamicMIGConfig{Enabled: true}}, n, store)
	if err != nil {
		t.Fatal(err)
	}
	if len(dm.pending) != 1 || dm.pending[0].Index != 2 {
		t.Fatalf("GPUs waiting for a reset: %+v, want GPU 2", dm.pending)
	}
	taints := dm.pendingTaints("gpu.nvidia.com", n.Devices)
	if ts := taints["gpu-2"]; len(taints) != 1 || len(ts) != 1 || ts[0].Key != "gpu.nvidia.com/mig-mode" || ts[0].Value != "reset-required" || ts[0].Effect != "NoSchedule" {
		t.Errorf("taints = %v, want gpu-2 tainted gpu.nvidia.com/mig-mode=reset-required:NoSchedule", taints)
	}
}

// Dynamic MIG switched off while claims hold MIG devices made on demand:
// the plugin still has a manager to destroy them when the claims go, and
// partitions nothing.
func TestDynamicMIGOffKeepsAManagerForClaimsThatHoldMIGDevices(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	n, err := node.Open(ctx, node.Flags{NVML: "mock:dgxh100", MockHostRoot: t.TempDir()}, node.Options{Mode: node.Plugin, Seed: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	store, err := checkpoint.NewStore(filepath.Join(t.TempDir(), "claims"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &checkpoint.ClaimRecord{ClaimUID: "uid-1", Namespace: "default", Name: "c", Devices: []checkpoint.PreparedDevice{
		{Device: "gpu-0-mig-1g10gb-19-0", MIG: &checkpoint.MIGInstance{ParentUUID: n.Inventory.Devices[0].UUID, GPUInstanceProfileID: 19, Created: true}}}}
	if err := store.Put(rec); err != nil {
		t.Fatal(err)
	}
	before := n.Devices.Names()
	dm, err := openDynamicMIG(ctx, Config{NodeName: "node-a", DriverName: "gpu.nvidia.com"}, n, store)
	if err != nil || dm == nil || dm.manager == nil || len(dm.partitionable) != 0 {
		t.Fatalf("openDynamicMIG = %+v, %v; want a manager and no partitionable GPU", dm, err)
	}
	if after := n.Devices.Names(); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("devices changed: %v -> %v", before, after)
	}
}

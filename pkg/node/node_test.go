package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

func TestOpenLaysOutTheMockHostAndResolvesTheRoots(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := filepath.Join(t.TempDir(), "mock")
	hookSrc := filepath.Join(t.TempDir(), "hook")
	if err := os.WriteFile(hookSrc, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(t.TempDir(), "bin/nvidia-cdi-hook")
	f := Flags{NVML: "mock:dgxh100", DriverRoot: "/ignored", MockHostRoot: root, HookPath: hook, InstallHookFrom: hookSrc}
	n, err := Open(ctx, f, Options{Mode: Plugin, Seed: "node-a", Edits: true})
	mockmachinetest.SkipWithoutMknod(t, err)
	defer n.Close()
	if want := (Roots{DriverRoot: root, HostDriverRoot: root, DevRoot: root, MockHostRoot: root, SysfsRoot: "/sys", HookPath: hook}); n.Roots != want {
		t.Errorf("roots = %+v, want %+v", n.Roots, want)
	}
	if len(n.Inventory.Devices) != 8 || n.Edits == nil {
		t.Fatalf("inventory %d GPUs, edits %v", len(n.Inventory.Devices), n.Edits)
	}
	if _, err := os.Stat(filepath.Join(root, "dev/nvidiactl")); err != nil {
		t.Errorf("mock host not laid out: %v", err)
	}
	if _, err := os.Stat(hook); err != nil {
		t.Errorf("CDI hook not installed: %v", err)
	}

	// The host tool sees the same node through the host root, and lays out
	// nothing.
	tool, err := Open(ctx, Flags{NVML: "mock:dgxh100", MockHostRoot: "/mock"}, Options{Mode: HostTool, Seed: "node-a", HostRoot: filepath.Dir(root)})
	if err != nil {
		t.Fatal(err)
	}
	defer tool.Close()
	if tool.Roots.DriverRoot != root || tool.Roots.HostDriverRoot != "/mock" || tool.Inventory.Devices[0].UUID != n.Inventory.Devices[0].UUID {
		t.Errorf("host tool: roots %+v, first GPU %s (plugin: %s)", tool.Roots, tool.Inventory.Devices[0].UUID, n.Inventory.Devices[0].UUID)
	}
}

func TestOpenRefusesWhatCannotWork(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	f := Flags{NVML: "real", MockHostRoot: t.TempDir()}
	if err := f.Validate(); err == nil || !strings.Contains(err.Error(), "--mock-host-root needs a mock NVML backend") {
		t.Errorf("Validate: %v", err)
	}
	if _, err := Open(ctx, f, Options{}); err == nil || !strings.Contains(err.Error(), "--mock-host-root needs a mock NVML backend") {
		t.Errorf("Open: %v", err)
	}
	missing := Flags{NVML: "mock:dgxh100", MockHostRoot: "/not/laid/out"}
	if err := missing.Validate(); err != nil {
		t.Errorf("Validate of a mock host root: %v", err)
	}
	if _, err := Open(ctx, missing, Options{Mode: HostTool, HostRoot: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "the plugin lays it out when it starts") {
		t.Errorf("host tool without a laid out mock host: %v", err)
	}
}

func TestDeviceEditsAddMIGDevices(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := t.TempDir()
	// With a mock host (the minors file it lays out) and without one (the
	// layout mockmachine would write).
	for _, mockRoot := range []string{root, ""} {
		n, err := Open(ctx, Flags{NVML: "mock:dgxa100" + mockmachine.MIGSuffix, MockHostRoot: mockRoot, HookPath: "/usr/local/bin/nvidia-cdi-hook"},
			Options{Mode: Plugin, Seed: "node-a", Edits: mockRoot != ""})
		mockmachinetest.SkipWithoutMknod(t, err)
		if mockRoot == "" {
			n.Edits, err = cdi.NewEdits(ctx, cdi.EditsOptions{NVML: n.NVML, DriverRoot: root, HookPath: "/usr/local/bin/nvidia-cdi-hook"}, n.Inventory.UUIDs())
			if err != nil {
				t.Fatal(err)
			}
		}
		src, err := n.DeviceEdits(false)
		if err != nil {
			t.Fatal(err)
		}
		e, err := src.Device(n.Inventory.MIGDevices[0].UUID)
		if err != nil {
			t.Fatal(err)
		}
		caps := 0
		for _, d := range e.DeviceNodes {
			if strings.HasPrefix(d.Path, "/dev/nvidia-caps/nvidia-cap") {
				caps++
			}
		}
		if caps != 2 {
			t.Errorf("mock host root %q: MIG device has %d capability nodes, want 2: %+v", mockRoot, caps, e.DeviceNodes)
		}
		n.Close()
	}
	// A real node without the driver's mig-minors file fails clearly.
	if _, err := os.Stat(cdi.MIGMinorsPath); err == nil {
		return // this host has MIG support
	}
	mock, err := Open(ctx, Flags{NVML: "mock:dgxa100" + mockmachine.MIGSuffix}, Options{Mode: HostTool, Seed: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	defer mock.Close()
	real := &Node{Backend: realBackend{}, Inventory: mock.Inventory}
	if _, err := real.DeviceEdits(false); err == nil || !strings.Contains(err.Error(), "mig-minors") {
		t.Errorf("real backend without %s: %v", cdi.MIGMinorsPath, err)
	}
}

// TestPCIeRootReadsTheSysfsRoot: the real backend resolves PCIe roots in the
// sysfs tree at --sysfs-root (a fake one here), the mock backend never.
func TestPCIeRootReadsTheSysfsRoot(t *testing.T) {
	sysfs := t.TempDir()
	dev := filepath.Join(sysfs, "devices/pci0000:17/0000:17:00.0/0000:18:00.0")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "vendor"), []byte("0x10de\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sysfs, "bus/pci/devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../devices/pci0000:17/0000:17:00.0/0000:18:00.0", filepath.Join(sysfs, "bus/pci/devices/0000:18:00.0")); err != nil {
		t.Fatal(err)
	}
	roots, err := resolveRoots(Flags{SysfsRoot: sysfs}, realBackend{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Backend: realBackend{}, Roots: roots}
	if got, err := n.PCIeRoot()("0000:18:00.0"); err != nil || got != "pci0000:17" {
		t.Errorf("PCIe root under %s: %q, %v", sysfs, got, err)
	}
	if roots, _ := resolveRoots(Flags{}, realBackend{}, Options{}); roots.SysfsRoot != "/sys" {
		t.Errorf("default sysfs root %q", roots.SysfsRoot)
	}
	if (&Node{Backend: &mockBackend{}, Roots: roots}).PCIeRoot() != nil {
		t.Error("a mock backend resolves PCIe roots")
	}
}

// TestOpenKeepsTheUsableGPUs: a mock GPU broken by the faults file in the
// driver root does not fail Open; it is in Inventory.Unusable, known to the
// device set as unusable, and the edits cover the other GPUs.
func TestOpenKeepsTheUsableGPUs(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	root := filepath.Join(t.TempDir(), "mock")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, mockmachine.FaultsFile), []byte("5 memory GPU_IS_LOST\n2 handle\n3 all UNKNOWN\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := Open(ctx, Flags{NVML: "mock:dgxh100", MockHostRoot: root, HookPath: "/usr/bin/nvidia-cdi-hook"}, Options{Mode: Plugin, Seed: "node-a", Edits: true})
	mockmachinetest.SkipWithoutMknod(t, err)
	defer n.Close()
	if len(n.Inventory.Devices) != 5 || len(n.Inventory.Unusable) != 3 || n.Inventory.Unusable[2].Index != 5 || !n.Inventory.Unusable[2].Lost() {
		t.Fatalf("inventory: %d GPUs, unusable %+v", len(n.Inventory.Devices), n.Inventory.Unusable)
	}
	if _, ok := n.Devices.Get("gpu-5"); ok {
		t.Error("gpu-5 is preparable")
	}
	if _, ok := n.Devices.Unusable("gpu-5"); !ok {
		t.Error("gpu-5 is not known as unusable")
	}
	for _, d := range n.Inventory.Devices {
		if _, err := n.Edits.Device(d.UUID); err != nil {
			t.Errorf("edits of GPU %d: %v", d.Index, err)
		}
	}

	// A malformed faults file fails clearly.
	if err := os.WriteFile(filepath.Join(root, mockmachine.FaultsFile), []byte("5 melted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, Flags{NVML: "mock:dgxh100", MockHostRoot: "/mock"}, Options{Mode: HostTool, Seed: "node-a", HostRoot: filepath.Dir(root)}); err == nil ||
		!strings.Contains(err.Error(), mockmachine.FaultsFile) || !strings.Contains(err.Error(), "melted") {
		t.Errorf("Open with a malformed faults file: %v", err)
	}
}

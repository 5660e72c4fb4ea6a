package cdi_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

// mockDriver is a mock dgxh100 with its host files laid out in a temp dir.
type mockDriver struct {
	inv   *inventory.Inventory
	root  string
	edits *cdi.Edits
}

func newMockDriver(t testing.TB) *mockDriver {
	t.Helper()
	lib, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	root := t.TempDir()
	mockmachinetest.Host(t, root, inv)
	_, ctx := ktesting.NewTestContext(t)
	edits, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: root, HookPath: "/usr/local/bin/nvidia-cdi-hook"}, inv.UUIDs())
	if err != nil {
		t.Fatal(err)
	}
	return &mockDriver{inv: inv, root: root, edits: edits}
}

func TestEditsCommonNameDriverFilesOfRunningVersion(t *testing.T) {
	m := newMockDriver(t)
	common := m.edits.Common()

	var nodes []string
	for _, n := range common.DeviceNodes {
		nodes = append(nodes, n.Path)
	}
	for _, want := range []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"} {
		if !contains(nodes, want) {
			t.Errorf("common device nodes %v lack %s", nodes, want)
		}
	}
	mounts := map[string]string{}
	for _, mnt := range common.Mounts {
		mounts[mnt.ContainerPath] = mnt.HostPath
	}
	for _, lib := range []string{"libcuda.so.", "libnvidia-ml.so.", "libnvidia-ptxjitcompiler.so."} {
		cpath := filepath.Join("/", mockmachine.LibDir, lib+m.inv.DriverVersion)
		host, ok := mounts[cpath]
		if !ok {
			t.Errorf("no mount of %s in %v", cpath, mounts)
			continue
		}
		if host != filepath.Join(m.root, mockmachine.LibDir, lib+m.inv.DriverVersion) {
			t.Errorf("mount %s comes from %s, want it under the driver root %s", cpath, host, m.root)
		}
	}
	if _, ok := mounts["/usr/bin/nvidia-smi"]; !ok {
		t.Errorf("nvidia-smi is not mounted: %v", mounts)
	}
	hooks := hookArgs(common.Hooks)
	for _, want := range []string{"create-symlinks", "update-ldcache"} {
		if !strings.Contains(hooks, want) {
			t.Errorf("hooks lack %s: %s", want, hooks)
		}
	}
	for _, h := range common.Hooks {
		if h.Path != "/usr/local/bin/nvidia-cdi-hook" {
			t.Errorf("hook path %s, want the configured /usr/local/bin/nvidia-cdi-hook", h.Path)
		}
	}
}

func TestEditsDeviceHasItsOwnNodeOnly(t *testing.T) {
	m := newMockDriver(t)
	for _, d := range m.inv.Devices {
		e, err := m.edits.Device(d.UUID)
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, n := range e.DeviceNodes {
			paths = append(paths, n.Path)
		}
		want := "/dev/nvidia" + itoa(d.Minor)
		if len(paths) != 1 || paths[0] != want {
			t.Errorf("GPU %d: device nodes %v, want exactly [%s]", d.Index, paths, want)
		}
	}
	if _, err := m.edits.Device("GPU-does-not-exist"); err == nil {
		t.Error("edits for an unknown GPU: want an error")
	}
}

func TestNewEditsFailsOnUnusableDriverRoot(t *testing.T) {
	lib, err := mockmachine.New("dgxh100", "x")
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	// An empty driver root has no libraries; discovery itself succeeds but
	// finds nothing to mount, which the test documents.
	e, err := cdi.NewEdits(context.WithoutCancel(ctx), cdi.EditsOptions{NVML: lib, DriverRoot: t.TempDir()}, nil)
	if err != nil {
		return
	}
	if n := len(e.Common().Mounts); n != 0 {
		t.Errorf("empty driver root gave %d mounts", n)
	}
}

func hookArgs(hooks []*specs.Hook) string {
	var s []string
	for _, h := range hooks {
		s = append(s, strings.Join(h.Args, " "))
	}
	return strings.Join(s, "\n")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestHostDriverRootRewritesHostPaths covers a plugin container that sees
// the host's driver root at a mount point of its own.
func TestHostDriverRootRewritesHostPaths(t *testing.T) {
	lib, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	mounted := t.TempDir() // the host's /run/nvidia/driver, as the container sees it
	mockmachinetest.Host(t, mounted, inv)
	_, ctx := ktesting.NewTestContext(t)
	e, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: mounted, HostDriverRoot: "/run/nvidia/driver"}, []string{inv.Devices[0].UUID})
	if err != nil {
		t.Fatal(err)
	}
	common := e.Common()
	if len(common.Mounts) == 0 {
		t.Fatal("no mounts")
	}
	for _, m := range common.Mounts {
		if !strings.HasPrefix(m.HostPath, "/run/nvidia/driver/") || strings.HasPrefix(m.ContainerPath, "/run/nvidia/driver") {
			t.Errorf("mount %s -> %s: host path must be under the host driver root, container path unchanged", m.HostPath, m.ContainerPath)
		}
	}
	dev, err := e.Device(inv.Devices[0].UUID)
	if err != nil {
		t.Fatal(err)
	}
	if n := dev.DeviceNodes[0]; n.Path != "/dev/nvidia0" || n.HostPath != "/run/nvidia/driver/dev/nvidia0" {
		t.Errorf("device node %s from %s", n.Path, n.HostPath)
	}
}

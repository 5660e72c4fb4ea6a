package cdi_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// TestClaimSpecGivesAContainerTheMockNvidiaSMIOfItsGPUs injects a claim spec
// of two GPUs the way a container runtime does and runs the mock nvidia-smi
// it mounts against the device nodes it creates: the claim spec sets no
// variable naming the GPUs (only NVIDIA_VISIBLE_DEVICES=void), so the device
// nodes are what the script goes by.
func TestClaimSpecGivesAContainerTheMockNvidiaSMIOfItsGPUs(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skipf("no /bin/sh to run the mock nvidia-smi: %v", err)
	}
	m := newMockDriver(t)
	n := cdi.NewNaming("gpu.nvidia.com")
	claimed := []int{6, 2}
	var devs []cdi.ClaimDevice
	var ids []string
	for _, i := range claimed {
		d := m.inv.Devices[i]
		e, err := m.edits.Device(d.UUID)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("gpu-%d", d.Index)
		devs = append(devs, cdi.ClaimDevice{Name: name, Edits: e})
		ids = append(ids, n.DeviceID("uid-1", name))
	}
	spec, err := cdi.ClaimSpec(n, "uid-1", m.edits.Common(), devs)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := cdi.NewSpecDir(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Write("uid-1", spec); err != nil {
		t.Fatal(err)
	}
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(filepath.Dir(dir.Path("uid-1"))), cdiapi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	oc := &oci.Spec{Process: &oci.Process{}, Linux: &oci.Linux{}}
	if unresolved, err := cache.InjectDevices(oc, ids...); err != nil || len(unresolved) != 0 {
		t.Fatalf("InjectDevices(%v): unresolved %v, %v", ids, unresolved, err)
	}

	var script string
	for _, mnt := range oc.Mounts {
		if mnt.Destination == "/usr/bin/nvidia-smi" {
			script = mnt.Source
			if slices.Contains(mnt.Options, "noexec") {
				t.Errorf("nvidia-smi is mounted noexec: %v", mnt.Options)
			}
		}
	}
	if want := filepath.Join(m.root, "usr/bin/nvidia-smi"); script != want {
		t.Fatalf("/usr/bin/nvidia-smi is mounted from %q, want the mock driver's %s", script, want)
	}
	for _, env := range oc.Process.Env {
		if strings.HasPrefix(env, "NVIDIA_VISIBLE_DEVICES=") && env != cdi.VisibleDevicesVoid {
			t.Errorf("claim spec sets %s", env)
		}
	}

	// The container's /dev: the nodes the runtime creates.
	container := t.TempDir()
	for _, d := range oc.Linux.Devices {
		p := filepath.Join(container, d.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("/bin/sh", script, "-L")
	cmd.Env = append(os.Environ(), mockmachine.DevRootEnv+"="+container)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nvidia-smi -L: %v\n%s", err, out)
	}
	want := fmt.Sprintf("GPU 0: %s (UUID: %s)\nGPU 1: %s (UUID: %s)\n",
		m.inv.Devices[2].ProductName, m.inv.Devices[2].UUID, m.inv.Devices[6].ProductName, m.inv.Devices[6].UUID)
	if string(out) != want {
		t.Errorf("nvidia-smi -L in the container:\n%s\nwant its two GPUs in minor order:\n%s", out, want)
	}
}

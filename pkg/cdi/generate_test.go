package cdi_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// TestHostSpecResolvesByIndexUUIDAndAll writes the host-wide spec into a
// spec directory and lets the CDI library, as a container runtime would,
// load it and inject nvidia.com/gpu=0, =<uuid> and =all.
func TestHostSpecResolvesByIndexUUIDAndAll(t *testing.T) {
	m := newMockDriver(t)
	spec, err := cdi.HostSpec(m.inv, m.edits, cdi.HostSpecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Kind != "nvidia.com/gpu" {
		t.Errorf("kind %q, want nvidia.com/gpu", spec.Kind)
	}
	if want := 2*len(m.inv.Devices) + 1; len(spec.Devices) != want {
		t.Errorf("%d devices, want %d (index and UUID per GPU, plus all)", len(spec.Devices), want)
	}
	dir := t.TempDir()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nvidia.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(dir), cdiapi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) != 0 {
		t.Fatalf("the CDI library rejects the spec: %v", errs)
	}

	gpu1 := m.inv.Devices[1]
	for _, tc := range []struct {
		device    string
		wantNodes []string
	}{
		{device: cdi.HostDeviceID("0"), wantNodes: []string{"/dev/nvidia0"}},
		{device: cdi.HostDeviceID(gpu1.UUID), wantNodes: []string{"/dev/nvidia1"}},
		{device: cdi.HostDeviceID("all"), wantNodes: allNodes(m.inv)},
	} {
		t.Run(tc.device, func(t *testing.T) {
			oc := &oci.Spec{Process: &oci.Process{}, Linux: &oci.Linux{}}
			unresolved, err := cache.InjectDevices(oc, tc.device)
			if err != nil || len(unresolved) != 0 {
				t.Fatalf("InjectDevices(%s): unresolved %v, %v", tc.device, unresolved, err)
			}
			var got []string
			for _, d := range oc.Linux.Devices {
				got = append(got, d.Path)
			}
			for _, want := range append(tc.wantNodes, "/dev/nvidiactl", "/dev/nvidia-uvm") {
				if !slices.Contains(got, want) {
					t.Errorf("container device nodes %v lack %s", got, want)
				}
			}
			if n := len(got) - len(tc.wantNodes); n != 3 {
				t.Errorf("container device nodes %v: want the GPUs' %v and the 3 control nodes", got, tc.wantNodes)
			}
			var mounted bool
			for _, mnt := range oc.Mounts {
				if mnt.Destination == filepath.Join("/usr/lib/x86_64-linux-gnu", "libcuda.so."+m.inv.DriverVersion) {
					mounted = true
				}
			}
			if !mounted {
				t.Errorf("libcuda.so.%s is not mounted: %v", m.inv.DriverVersion, oc.Mounts)
			}
		})
	}
}

func TestHostSpecKindAndEnvOptions(t *testing.T) {
	m := newMockDriver(t)
	spec, err := cdi.HostSpec(m.inv, m.edits, cdi.HostSpecOptions{Kind: "example.com/gpu", Env: []string{"GPUDRA_TEST=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Kind != "example.com/gpu" || !slices.Contains(spec.ContainerEdits.Env, "GPUDRA_TEST=1") {
		t.Errorf("kind %q env %v: want example.com/gpu with GPUDRA_TEST=1", spec.Kind, spec.ContainerEdits.Env)
	}
	if slices.Contains(m.edits.Common().Env, "GPUDRA_TEST=1") {
		t.Error("HostSpec modified the shared driver-wide edits")
	}
}

func TestHostSpecWithoutGPUsFails(t *testing.T) {
	m := newMockDriver(t)
	if _, err := cdi.HostSpec(&inventory.Inventory{DriverVersion: m.inv.DriverVersion}, m.edits, cdi.HostSpecOptions{}); err == nil {
		t.Error("a spec without GPUs: want an error")
	}
}

func allNodes(inv *inventory.Inventory) []string {
	var out []string
	for _, d := range inv.Devices {
		out = append(out, "/dev/nvidia"+itoa(d.Minor))
	}
	return out
}

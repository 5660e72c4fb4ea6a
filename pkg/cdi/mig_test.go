package cdi_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

func TestParseMIGCaps(t *testing.T) {
	caps, err := cdi.ParseMIGCaps(strings.NewReader("config 1\nmonitor 2\n\ngpu0/gi1/access 12\ngpu0/gi1/ci0/access 13\n"))
	if err != nil {
		t.Fatal(err)
	}
	if caps[cdi.GPUInstanceCap(0, 1)] != 12 || caps[cdi.ComputeInstanceCap(0, 1, 0)] != 13 || len(caps) != 4 {
		t.Errorf("caps = %v", caps)
	}
	if _, err := cdi.ParseMIGCaps(strings.NewReader("gpu0/gi1/access twelve\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("malformed line: %v", err)
	}
}

func TestMIGDeviceEditsFollowParentHostPrefix(t *testing.T) {
	parent := specs.ContainerEdits{DeviceNodes: []*specs.DeviceNode{{Path: "/dev/nvidia3", HostPath: "/run/nvidia/driver/dev/nvidia3"}}}
	m := cdi.MIGDevice{UUID: "MIG-x", ParentUUID: "GPU-x", ParentMinor: 3, GPUInstanceID: 2, ComputeInstanceID: 0}
	caps := cdi.MIGCaps{cdi.GPUInstanceCap(3, 2): 40, cdi.ComputeInstanceCap(3, 2, 0): 41}
	edits, err := cdi.MIGDeviceEdits(parent, m, caps)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range edits.DeviceNodes {
		got = append(got, n.Path+"<-"+n.HostPath)
	}
	want := "/dev/nvidia3<-/run/nvidia/driver/dev/nvidia3,/dev/nvidia-caps/nvidia-cap40<-/run/nvidia/driver/dev/nvidia-caps/nvidia-cap40,/dev/nvidia-caps/nvidia-cap41<-/run/nvidia/driver/dev/nvidia-caps/nvidia-cap41"
	if strings.Join(got, ",") != want {
		t.Errorf("nodes = %v\nwant %s", got, want)
	}
	if len(parent.DeviceNodes) != 1 {
		t.Error("MIGDeviceEdits modified the parent's edits")
	}
	delete(caps, cdi.ComputeInstanceCap(3, 2, 0))
	if _, err := cdi.MIGDeviceEdits(parent, m, caps); err == nil || !strings.Contains(err.Error(), "MIG-x") || !strings.Contains(err.Error(), "restart the plugin") {
		t.Errorf("missing capability: %v", err)
	}
}

// TestWithMIGOnMockHost generates MIG edits with nvcdi's GPU edits on a
// mock dgxa100-mig host, puts them into a claim spec and validates it.
func TestWithMIGOnMockHost(t *testing.T) {
	lib, inv := mockmachinetest.Machine(t, "dgxa100-mig", "node-a")
	root := t.TempDir()
	mockmachinetest.Host(t, root, inv)
	_, ctx := ktesting.NewTestContext(t)
	var uuids []string
	for _, d := range inv.Devices {
		uuids = append(uuids, d.UUID)
	}
	base, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: root, HookPath: "/usr/local/bin/nvidia-cdi-hook"}, uuids)
	if err != nil {
		t.Fatal(err)
	}
	var migs []cdi.MIGDevice
	for _, m := range inv.MIGDevices {
		migs = append(migs, cdi.MIGDevice{UUID: m.UUID, ParentUUID: m.ParentUUID, ParentMinor: m.ParentMinor, GPUInstanceID: m.GPUInstanceID, ComputeInstanceID: m.ComputeInstanceID})
	}
	edits, err := cdi.WithMIG(base, migs, filepath.Join(root, mockmachine.MIGMinorsFile))
	if err != nil {
		t.Fatal(err)
	}
	caps := mockmachine.MIGCapMinors(inv)
	m := inv.MIGDevices[3]
	e, err := edits.Device(m.UUID)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := cdi.ClaimSpec(cdi.NewNaming("gpu.nvidia.com"), "uid-1", edits.Common(), []cdi.ClaimDevice{{Name: "gpu-0-mig-3g20gb-3", Edits: e}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cdi.Validate(spec); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{cdi.GPUInstanceCap(m.ParentMinor, m.GPUInstanceID), cdi.ComputeInstanceCap(m.ParentMinor, m.GPUInstanceID, m.ComputeInstanceID)} {
		p := fmt.Sprintf("/dev/nvidia-caps/nvidia-cap%d", caps[c])
		found := false
		for _, n := range spec.Devices[0].ContainerEdits.DeviceNodes {
			if n.Path == p {
				found = true
				host := n.HostPath
				if host == "" {
					host = n.Path
				}
				if _, err := os.Stat(host); err != nil {
					t.Errorf("%s: host node %s: %v", c, host, err)
				}
			}
		}
		if !found {
			t.Errorf("spec lacks %s (%s): %+v", p, c, spec.Devices[0].ContainerEdits.DeviceNodes)
		}
	}
	// Full GPUs still get their own edits through the wrapper.
	if _, err := edits.Device(inv.Devices[5].UUID); err != nil {
		t.Error(err)
	}
	if _, err := edits.Device("MIG-unknown"); err == nil {
		t.Error("unknown MIG UUID accepted")
	}
}

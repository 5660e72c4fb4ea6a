package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/mockhost/mockhosttest"
	"github.com/gpudra/gpudra/pkg/sharing"
)

func TestNewSharingPicksTheTimeSlicer(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	store, err := checkpoint.NewStore(filepath.Join(t.TempDir(), "claims"))
	if err != nil {
		t.Fatal(err)
	}
	mock := newSharing(ctx, Config{NVMLBackend: "mock:dgxh100", MockHostRoot: t.TempDir(), DriverName: "gpu.nvidia.com"}, store, nil).(sharing.Composite)
	if mock.TimeSlicing == nil || mock.MPS != nil {
		t.Errorf("mock backend: %+v, want time-slicing and no MPS", mock)
	}
	// A real node whose driver root has no nvidia-smi: time-slicing is off.
	real := newSharing(ctx, Config{NVMLBackend: "real", DriverRoot: t.TempDir()}, store, nil).(sharing.Composite)
	if real.TimeSlicing != nil {
		t.Errorf("time-slicing on without nvidia-smi")
	}
}

func TestClaimEditsAddMIGDevices(t *testing.T) {
	lib, inv := mockhosttest.Machine(t, "dgxa100-mig", "node-a")
	root := t.TempDir()
	mockhosttest.Host(t, root, inv)
	_, ctx := ktesting.NewTestContext(t)
	edits, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: root, HookPath: "/usr/local/bin/nvidia-cdi-hook"}, inv.UUIDs())
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{NVMLBackend: "mock:dgxa100-mig", MockHostRoot: root},
		{NVMLBackend: "mock:dgxa100-mig"}, // no mock host: the layout mockhost would write
	} {
		src, err := claimEdits(cfg, inv, edits)
		if err != nil {
			t.Fatal(err)
		}
		e, err := src.Device(inv.MIGDevices[0].UUID)
		if err != nil {
			t.Fatal(err)
		}
		caps := 0
		for _, n := range e.DeviceNodes {
			if strings.HasPrefix(n.Path, "/dev/nvidia-caps/nvidia-cap") {
				caps++
			}
		}
		if caps != 2 {
			t.Errorf("%+v: MIG device has %d capability nodes, want 2: %+v", cfg, caps, e.DeviceNodes)
		}
	}
	// A real node without the driver's mig-minors file fails clearly.
	if _, err := os.Stat(cdi.MIGMinorsPath); err == nil {
		return // this host has MIG support
	}
	if _, err := claimEdits(Config{NVMLBackend: "real"}, inv, edits); err == nil || !strings.Contains(err.Error(), "mig-minors") {
		t.Errorf("real backend without %s: %v", cdi.MIGMinorsPath, err)
	}
}

package cdi_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
)

func TestNamingRoundTrip(t *testing.T) {
	n := cdi.NewNaming("gpu.nvidia.com")
	if got := n.Kind(); got != "k8s.gpu.nvidia.com/claim" {
		t.Errorf("kind %s", got)
	}
	if got := n.SpecFileName("abc-123"); got != "k8s.gpu.nvidia.com-claim_abc-123.json" {
		t.Errorf("spec file name %s", got)
	}
	if got := n.DeviceID("abc-123", "gpu-0"); got != "k8s.gpu.nvidia.com/claim=abc-123-gpu-0" {
		t.Errorf("device ID %s", got)
	}
}

func TestClaimSpecIsAcceptedByTheCDILibrary(t *testing.T) {
	m := newMockDriver(t)
	n := cdi.NewNaming("gpu.nvidia.com")
	var devs []cdi.ClaimDevice
	for _, d := range m.inv.Devices[:2] {
		e, err := m.edits.Device(d.UUID)
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, cdi.ClaimDevice{Name: fmt.Sprintf("gpu-%d", d.Index), Edits: e})
	}
	commonEnv := fmt.Sprint(m.edits.Common().Env)
	spec, err := cdi.ClaimSpec(n, "uid-1", m.edits.Common(), devs)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(strings.Join(spec.ContainerEdits.Env, "\n"), cdi.VisibleDevicesVoid); got != 1 {
		t.Errorf("spec env %v has %s %d times, want once", spec.ContainerEdits.Env, cdi.VisibleDevicesVoid, got)
	}
	dir, err := cdi.NewSpecDir(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Write("uid-1", spec); err != nil {
		t.Fatal(err)
	}
	loaded, err := cdiapi.ReadSpec(dir.Path("uid-1"), 0)
	if err != nil {
		t.Fatalf("CDI library refuses the spec: %v", err)
	}
	if loaded.GetDevice("uid-1-gpu-1") == nil || loaded.GetDevice("uid-1-gpu-0") == nil {
		t.Errorf("devices missing from %v", loaded.Devices)
	}
	// Building a spec must not modify the shared cached edits.
	if env := fmt.Sprint(m.edits.Common().Env); env != commonEnv {
		t.Errorf("ClaimSpec changed the cached common edits: %s, was %s", env, commonEnv)
	}
	uids, err := dir.ClaimUIDs()
	if err != nil || len(uids) != 1 || uids[0] != "uid-1" {
		t.Errorf("ClaimUIDs = %v, %v", uids, err)
	}
	if err := dir.Remove("uid-1"); err != nil {
		t.Fatal(err)
	}
	if err := dir.Remove("uid-1"); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

func TestClaimSpecRejectsInvalidContent(t *testing.T) {
	n := cdi.NewNaming("gpu.nvidia.com")
	for name, tc := range map[string]struct {
		devs []cdi.ClaimDevice
		want string
	}{
		"no devices":        {nil, "no devices"},
		"bad hook":          {[]cdi.ClaimDevice{{Name: "gpu-0", Edits: specs.ContainerEdits{Hooks: []*specs.Hook{{HookName: "bogus", Path: "/bin/true"}}}}}, "gpu-0"},
		"bad device name":   {[]cdi.ClaimDevice{{Name: "gpu 0"}}, "gpu 0"},
		"duplicate devices": {[]cdi.ClaimDevice{{Name: "gpu-0"}, {Name: "gpu-0"}}, "twice"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := cdi.ClaimSpec(n, "uid-1", specs.ContainerEdits{}, tc.devs)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "uid-1") {
				t.Errorf("err = %v, want it to name uid-1 and %q", err, tc.want)
			}
		})
	}
}

func BenchmarkClaimSpec(b *testing.B) {
	m := newMockDriver(b)
	n := cdi.NewNaming("gpu.nvidia.com")
	e, err := m.edits.Device(m.inv.Devices[0].UUID)
	if err != nil {
		b.Fatal(err)
	}
	devs := []cdi.ClaimDevice{{Name: "gpu-0", Edits: e}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cdi.ClaimSpec(n, "uid-1", m.edits.Common(), devs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSpecDirWrite(b *testing.B) {
	m := newMockDriver(b)
	n := cdi.NewNaming("gpu.nvidia.com")
	e, _ := m.edits.Device(m.inv.Devices[0].UUID)
	spec, err := cdi.ClaimSpec(n, "uid-1", m.edits.Common(), []cdi.ClaimDevice{{Name: "gpu-0", Edits: e}})
	if err != nil {
		b.Fatal(err)
	}
	dir, err := cdi.NewSpecDir(filepath.Join(b.TempDir(), "cdi"), n)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := dir.Write("uid-1", spec); err != nil {
			b.Fatal(err)
		}
	}
}

package claimstate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	resourceapi "k8s.io/api/resource/v1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// injected is what a container with devs' CDI IDs gets, resolved by the CDI
// library from the env's CDI directory as the container runtime does.
func (e *env) injected(ids []string) *oci.Spec {
	e.t.Helper()
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(e.cdiDir), cdiapi.WithAutoRefresh(false))
	if err != nil {
		e.t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) != 0 {
		e.t.Fatalf("CDI cache errors: %v", errs)
	}
	spec := &oci.Spec{Process: &oci.Process{}}
	if unresolved, err := cache.InjectDevices(spec, ids...); err != nil {
		e.t.Fatalf("injecting %v: unresolved %v: %v", ids, unresolved, err)
	}
	return spec
}

func (e *env) driverSpecPath() string {
	return filepath.Join(e.cdiDir, cdi.NewNaming(driverName).DriverSpecFileName())
}

// TestClaimGetsTheSameEditsWithTheDriverSpec: a container of a claim
// with sharing edits gets the same edits through the CDI library whether
// the claim's spec is self-contained or uses the driver spec.
func TestClaimGetsTheSameEditsWithTheDriverSpec(t *testing.T) {
	got := map[bool]*oci.Spec{}
	for _, selfContained := range []bool{true, false} {
		e := newEnv(t)
		e.selfContained = selfContained
		e.sharing = sharing.Composite{MPS: editsApplier{}}
		e.restart()
		c := withConfig(claim("uid-1", "mps", result{request: "gpu", device: "gpu-5"}, result{request: "gpu", device: "gpu-2"}), nil,
			`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS"}}`)
		devs, err := e.state.Prepare(e.ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range devs {
			ids = append(ids, d.CDIDeviceIDs...)
		}
		if want := 2 + 2*btoi(!selfContained); len(ids) != want {
			t.Errorf("self-contained %v: CDI IDs %v, want %d", selfContained, ids, want)
		}
		got[selfContained] = e.injected(ids)
	}
	// The environment is the same set; its order differs only because
	// fakeEdits.Common lacks NVIDIA_VISIBLE_DEVICES=void, which a
	// self-contained spec then appends after the sharing variables (the
	// real driver-wide edits have it, see the cdi package's test).
	for _, s := range got {
		slices.Sort(s.Process.Env)
	}
	if !reflect.DeepEqual(got[true], got[false]) {
		a, _ := json.Marshal(got[true])
		b, _ := json.Marshal(got[false])
		t.Errorf("container edits differ:\nself-contained: %s\nwith the driver spec: %s", a, b)
	}
	for _, want := range []string{"CUDA_MPS_PIPE_DIRECTORY=/mps/uid-1", "PER_DEVICE=gpu-5", cdi.VisibleDevicesVoid} {
		if !slices.Contains(got[false].Process.Env, want) {
			t.Errorf("container env %v lacks %s", got[false].Process.Env, want)
		}
	}
	if n := len(got[false].Linux.Devices); n != 3 {
		t.Errorf("container has %d device nodes, want /dev/nvidiactl and two GPUs: %+v", n, got[false].Linux.Devices)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestClaimOfAnOlderPluginKeepsWorking: a claim prepared by a plugin from
// before the driver spec (self-contained spec, one CDI ID per device)
// keeps its IDs after the upgrade, and its re-created spec is still
// self-contained; new claims use the driver spec, which the orphan cleanup
// leaves alone.
func TestClaimOfAnOlderPluginKeepsWorking(t *testing.T) {
	e := newEnv(t)
	e.selfContained = true
	if err := os.Remove(e.driverSpecPath()); err != nil {
		t.Fatal(err)
	}
	e.restart()
	if _, err := os.Stat(e.driverSpecPath()); err == nil {
		t.Fatal("the old plugin has a driver spec")
	}
	old := claim("uid-old", "old", result{request: "gpu", device: "gpu-1"})
	before, err := e.state.Prepare(e.ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if ids := before[0].CDIDeviceIDs; len(ids) != 1 {
		t.Fatalf("old plugin's CDI IDs %v", ids)
	}
	wantEdits := e.injected(before[0].CDIDeviceIDs)

	// Upgrade; the tmpfs CDI directory lost the old spec (a reboot).
	if err := os.Remove(e.specPath("uid-old")); err != nil {
		t.Fatal(err)
	}
	e.selfContained = false
	e.restart()
	report := e.state.Reconcile(e.ctx)
	if report.SpecsRecreated != 1 || report.OrphansRemoved != 0 || len(report.Errors) != 0 {
		t.Errorf("reconcile: %+v", report)
	}
	again, err := e.state.Prepare(e.ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, before) {
		t.Errorf("repeated prepare after the upgrade returned %+v, want the recorded %+v", again, before)
	}
	data, err := os.ReadFile(e.specPath("uid-old"))
	if err != nil || !strings.Contains(string(data), "/dev/nvidiactl") {
		t.Errorf("re-created spec of the old claim is not self-contained: %s %v", data, err)
	}
	if got := e.injected(again[0].CDIDeviceIDs); !reflect.DeepEqual(got, wantEdits) {
		t.Errorf("old claim's container edits after the upgrade %+v, want %+v", got, wantEdits)
	}

	// A new claim next to it uses the driver spec.
	fresh := claim("uid-new", "new", result{request: "gpu", device: "gpu-2"})
	devs, err := e.state.Prepare(e.ctx, fresh)
	if err != nil {
		t.Fatal(err)
	}
	if ids := devs[0].CDIDeviceIDs; len(ids) != 2 || ids[0] != cdi.NewNaming(driverName).DriverDeviceID() {
		t.Errorf("new claim's CDI IDs %v", ids)
	}
	both := e.injected(append(slices.Clone(again[0].CDIDeviceIDs), devs[0].CDIDeviceIDs...))
	if n := len(both.Linux.Devices); n != 3 {
		t.Errorf("a container with both claims has %d device nodes, want /dev/nvidiactl and two GPUs", n)
	}

	// The orphan cleanup never deletes the driver spec.
	for _, c := range []*resourceapi.ResourceClaim{old, fresh} {
		if err := e.state.Unprepare(e.ctx, c.Namespace, c.Name, c.UID); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.state.Reconcile(e.ctx); r.OrphansRemoved != 0 || len(r.Errors) != 0 {
		t.Errorf("reconcile: %+v", r)
	}
	if _, err := cdiapi.ReadSpec(e.driverSpecPath(), 0); err != nil {
		t.Errorf("driver spec after the claims are gone: %v", err)
	}
	if files := e.claimSpecFiles(); len(files) != 0 {
		t.Errorf("CDI directory holds %v", files)
	}
}

// TestDriverSpecIsWrittenBeforeAClaimSpecThatNeedsIt: when the driver
// spec went missing while the plugin runs, the re-creation of a claim's
// spec and a new prepare write it again first.
func TestDriverSpecIsWrittenBeforeAClaimSpecThatNeedsIt(t *testing.T) {
	e := newEnv(t)
	c := claim("uid-1", "one", result{request: "gpu", device: "gpu-0"})
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(e.driverSpecPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{e.specPath("uid-1"), e.driverSpecPath()} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.state.Reconcile(e.ctx); r.SpecsRecreated != 1 || len(r.Errors) != 0 {
		t.Errorf("reconcile: %+v", r)
	}
	if got, err := os.ReadFile(e.driverSpecPath()); err != nil || string(got) != string(want) {
		t.Errorf("driver spec after reconcile: %s %v, want %s", got, err, want)
	}
	if err := os.Remove(e.driverSpecPath()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-1"})); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(e.driverSpecPath()); err != nil || string(got) != string(want) {
		t.Errorf("driver spec after a prepare: %s %v, want %s", got, err, want)
	}
	e.claimSpecFiles() // fails the test on a claim spec without it
}

// TestClaimSpecSize logs the size of a one-GPU claim's spec before and
// after the driver spec, with the fake edits.
func TestClaimSpecSize(t *testing.T) {
	sizes := map[bool]int{}
	for _, selfContained := range []bool{true, false} {
		e := newEnv(t)
		e.selfContained = selfContained
		e.restart()
		if _, err := e.state.Prepare(e.ctx, claim("0c4a5400-0000-4000-8000-000000000001", "one", result{request: "gpu", device: "gpu-0"})); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(e.specPath("0c4a5400-0000-4000-8000-000000000001"))
		if err != nil {
			t.Fatal(err)
		}
		sizes[selfContained] = int(fi.Size())
	}
	t.Logf("one-GPU claim spec with the fake edits: self-contained %d bytes, with the driver spec %d bytes", sizes[true], sizes[false])
	if sizes[false] >= sizes[true] {
		t.Errorf("claim spec with the driver spec is not smaller")
	}
}

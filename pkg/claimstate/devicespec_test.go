package claimstate

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/devices"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/sharing"
)

func newStaticEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.staticDevices = true
	e.restart()
	return e
}

func (e *env) deviceSpecPath() string {
	return filepath.Join(e.cdiDir, cdi.NewNaming(driverName).DeviceSpecFileName())
}

// TestExclusiveClaimNeedsNoSpecOfItsOwn: with the static device spec, an
// exclusive claim without config writes only its record; its IDs name the
// driver device and the device's static entry, and resolve through the
// CDI library to the same container edits as a claim spec gives.
func TestExclusiveClaimNeedsNoSpecOfItsOwn(t *testing.T) {
	e := newStaticEnv(t)
	c := claim("uid-1", "one", result{request: "gpu", device: "gpu-3"}, result{request: "gpu", device: "gpu-4"})
	devs, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	naming := cdi.NewNaming(driverName)
	var ids []string
	for _, d := range devs {
		if want := naming.StaticDeviceIDs(d.DeviceName); !slices.Equal(d.CDIDeviceIDs, want) {
			t.Errorf("device %s: CDI IDs %v, want %v", d.DeviceName, d.CDIDeviceIDs, want)
		}
		ids = append(ids, d.CDIDeviceIDs...)
	}
	if files := e.claimSpecFiles(); len(files) != 0 {
		t.Errorf("CDI directory holds claim specs %v, want none", files)
	}
	if _, err := os.Stat(e.specPath("uid-1")); !os.IsNotExist(err) {
		t.Errorf("claim spec: %v, want none", err)
	}
	e.wantRecorded("uid-1")
	static := e.injected(ids)

	// The same claim in the claim-spec format gives the same container.
	other := newEnv(t)
	devs, err = other.state.Prepare(other.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	ids = nil
	for _, d := range devs {
		ids = append(ids, d.CDIDeviceIDs...)
	}
	withSpec := other.injected(ids)
	if got, want := nodePaths(static), nodePaths(withSpec); !slices.Equal(got, want) {
		t.Errorf("device nodes %v, want %v as with a claim spec", got, want)
	}
	slices.Sort(static.Process.Env)
	slices.Sort(withSpec.Process.Env)
	if !slices.Equal(static.Process.Env, withSpec.Process.Env) {
		t.Errorf("env %v, want %v as with a claim spec", static.Process.Env, withSpec.Process.Env)
	}

	if err := e.state.Unprepare(e.ctx, c.Namespace, c.Name, c.UID); err != nil {
		t.Fatal(err)
	}
	e.wantRecorded()
	if _, err := os.Stat(e.deviceSpecPath()); err != nil {
		t.Errorf("the static device spec after the last claim: %v", err)
	}
}

// nodePaths lists the device nodes a container gets, in order.
func nodePaths(s *oci.Spec) []string {
	var out []string
	for _, d := range s.Linux.Devices {
		out = append(out, d.Path)
	}
	return out
}

// failingEdits fails the edits of one device.
type failingEdits struct {
	EditsSource
	uuid string
}

func (f failingEdits) Device(uuid string) (specs.ContainerEdits, error) {
	if uuid == f.uuid {
		return specs.ContainerEdits{}, errors.New("its device node is missing")
	}
	return f.EditsSource.Device(uuid)
}

// TestClaimsWithSettingsOfTheirOwnGetASpec: a claim with a sharing config
// gets a claim spec even when its devices are in the static device spec.
func TestClaimsWithSettingsOfTheirOwnGetASpec(t *testing.T) {
	e := newStaticEnv(t)
	e.sharing = sharing.Composite{MPS: editsApplier{}}
	e.restart()
	c := withConfig(claim("uid-1", "mps", result{request: "gpu", device: "gpu-5"}), nil,
		`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS"}}`)
	devs, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	naming := cdi.NewNaming(driverName)
	if want := naming.DeviceIDs("uid-1", "gpu-5"); !slices.Equal(devs[0].CDIDeviceIDs, want) {
		t.Errorf("CDI IDs %v, want %v", devs[0].CDIDeviceIDs, want)
	}
	if files := e.claimSpecFiles(); len(files) != 1 {
		t.Errorf("claim specs %v, want the claim's", files)
	}
	// A config without sharing settings changes nothing in the container:
	// no spec of its own.
	plain := withConfig(claim("uid-2", "plain", result{request: "gpu", device: "gpu-6"}), nil,
		`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig"}`)
	devs, err = e.state.Prepare(e.ctx, plain)
	if err != nil {
		t.Fatal(err)
	}
	if want := naming.StaticDeviceIDs("gpu-6"); !slices.Equal(devs[0].CDIDeviceIDs, want) {
		t.Errorf("config without sharing: CDI IDs %v, want %v", devs[0].CDIDeviceIDs, want)
	}
}

// TestStaticClaimsSurviveRestartsAndAWipedDirectory: a claim prepared
// without a spec keeps its IDs across restarts (also when the plugin runs
// without the device spec: its prepare then fails with the fix instead of
// handing out IDs that resolve to nothing), and the specs it references
// are written again when the CDI directory was emptied.
func TestStaticClaimsSurviveRestartsAndAWipedDirectory(t *testing.T) {
	e := newStaticEnv(t)
	c := claim("uid-1", "one", result{request: "gpu", device: "gpu-0"})
	first, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	// A reboot wipes the tmpfs CDI directory: the plugin's start-up and
	// Reconcile bring back what the claim references.
	entries, err := os.ReadDir(e.cdiDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if err := os.RemoveAll(filepath.Join(e.cdiDir, en.Name())); err != nil {
			t.Fatal(err)
		}
	}
	e.bootID = "boot-2"
	e.restart()
	if r := e.state.Reconcile(e.ctx); len(r.Errors) != 0 || r.SpecsRecreated != 0 {
		t.Errorf("reconcile: %+v", r)
	}
	again, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first[0].CDIDeviceIDs, again[0].CDIDeviceIDs) {
		t.Errorf("IDs after the restart %v, want %v", again[0].CDIDeviceIDs, first[0].CDIDeviceIDs)
	}
	e.injected(again[0].CDIDeviceIDs)

	// The specs go missing while the plugin runs: a prepare of the
	// recorded claim writes them again before it reports the IDs.
	for _, p := range []string{e.deviceSpecPath(), e.driverSpecPath()} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	e.injected(again[0].CDIDeviceIDs)

	// A plugin without the device spec keeps the recorded format and
	// says how to fix it rather than returning IDs nothing resolves.
	e.staticDevices = false
	if err := os.Remove(e.deviceSpecPath()); err != nil {
		t.Fatal(err)
	}
	e.restart()
	_, err = e.state.Prepare(e.ctx, c)
	if err == nil || !strings.Contains(err.Error(), "static device CDI spec") || !strings.Contains(err.Error(), "uid-1") {
		t.Errorf("prepare without the device spec: %v, want an error naming the claim and the spec", err)
	}
	// Its unprepare still works.
	if err := e.state.Unprepare(e.ctx, c.Namespace, c.Name, c.UID); err != nil {
		t.Fatal(err)
	}
	e.wantRecorded()
}

// TestStaticDeviceSpecLeavesOutDevicesWithoutEdits: the static device
// spec has every device of the node, by its slice name; a device whose
// edits cannot be built is left out, named in an error, and the others
// stay in. A claim of that device gets a spec of its own, so its prepare
// reports the same error.
func TestStaticDeviceSpecLeavesOutDevicesWithoutEdits(t *testing.T) {
	e := newEnv(t)
	naming := cdi.NewNaming(driverName)
	set := devices.FromInventory(e.inv)
	spec, errs, err := StaticDeviceSpec(naming, set, e.editsSource())
	if err != nil || len(errs) != 0 {
		t.Fatal(err, errs)
	}
	var names []string
	for _, d := range spec.Devices {
		names = append(names, d.Name)
	}
	if want := set.Names(); !sameSet(names, want) {
		t.Errorf("static devices %v, want %v", names, want)
	}
	if spec.Kind != naming.DeviceKind() || !slices.IsSorted(names) {
		t.Errorf("kind %q, devices %v: want kind %q, sorted", spec.Kind, names, naming.DeviceKind())
	}

	gpu2, _ := set.Get("gpu-2")
	spec, errs, err = StaticDeviceSpec(naming, set, failingEdits{e.editsSource(), gpu2.UUID})
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "gpu-2") || !strings.Contains(errs[0].Error(), "device node is missing") {
		t.Errorf("errors %v, want one naming gpu-2 and the cause", errs)
	}
	if len(spec.Devices) != len(set.Names())-1 || slices.ContainsFunc(spec.Devices, func(d specs.Device) bool { return d.Name == "gpu-2" }) {
		t.Errorf("static devices %d, want all but gpu-2", len(spec.Devices))
	}
	e.staticDevices = true
	e.editsOverride = failingEdits{e.edits, gpu2.UUID}
	e.restart()
	_, err = e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-2"}))
	if err == nil || !strings.Contains(err.Error(), "device node is missing") {
		t.Errorf("prepare of gpu-2: %v, want its edits' error", err)
	}
	devs, err := e.state.Prepare(e.ctx, claim("uid-3", "three", result{request: "gpu", device: "gpu-3"}))
	if err != nil {
		t.Fatal(err)
	}
	if want := naming.StaticDeviceIDs("gpu-3"); !slices.Equal(devs[0].CDIDeviceIDs, want) {
		t.Errorf("gpu-3: CDI IDs %v, want %v", devs[0].CDIDeviceIDs, want)
	}
}

func (e *env) wantRecorded(uids ...string) {
	e.t.Helper()
	store, err := checkpoint.NewStore(e.ckptDir)
	if err != nil {
		e.t.Fatal(err)
	}
	recs, _, err := store.List()
	if err != nil {
		e.t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.ClaimUID)
	}
	if !sameSet(got, uids) {
		e.t.Errorf("recorded claims %v, want %v", got, uids)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

package claimstate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/sharing"
	"github.com/gpudra/gpudra/pkg/sharing/timeslicing"
)

// countingSlicer counts the SetTimeSlice calls per GPU and interval.
type countingSlicer struct {
	timeslicing.TimeSlicer
	mu    sync.Mutex
	calls map[string]int // "<uuid>=<interval>"
}

func (c *countingSlicer) SetTimeSlice(ctx context.Context, uuid string, i configapi.TimeSliceInterval) error {
	c.mu.Lock()
	c.calls[uuid+"="+string(i)]++
	c.mu.Unlock()
	return c.TimeSlicer.SetTimeSlice(ctx, uuid, i)
}

func (c *countingSlicer) count(uuid string, i configapi.TimeSliceInterval) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[uuid+"="+string(i)]
}

// useTimeSlicing gives the env a Composite applier with a time-slicing
// Manager over a mock state file and the recorded claims of the env's
// current State (set by restart, as the plugin wires it), and no MPS.
func (e *env) useTimeSlicing() *countingSlicer {
	e.slices = mockmachine.NewTimeSliceFile(filepath.Join(e.t.TempDir(), "timeslice.json"))
	counter := &countingSlicer{TimeSlicer: e.slices, calls: map[string]int{}}
	claims := func() []sharing.Claim { return e.state.SharingClaims() }
	e.sharing = sharing.Composite{TimeSlicing: timeslicing.New(timeslicing.Options{Slicer: counter, Claims: claims})}
	return counter
}

func withConfig(c *resourceapi.ResourceClaim, requests []string, raw string) *resourceapi.ResourceClaim {
	c.Status.Allocation.Devices.Config = append(c.Status.Allocation.Devices.Config, resourceapi.DeviceAllocationConfiguration{
		Source:   resourceapi.AllocationConfigSourceClaim,
		Requests: requests,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver: driverName, Parameters: runtime.RawExtension{Raw: []byte(raw)},
		}},
	})
	return c
}

func tsConfig(interval string) string {
	return fmt.Sprintf(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":%q}}}`, interval)
}

func (e *env) interval(uuid string) configapi.TimeSliceInterval {
	e.t.Helper()
	i, err := e.slices.Interval(uuid)
	if err != nil {
		e.t.Fatal(err)
	}
	return i
}

func TestTimeSlicingAppliedOnceAndRestored(t *testing.T) {
	e := newEnv(t)
	counter := e.useTimeSlicing()
	e.restart()
	gpu := e.inv.Devices[0].UUID
	c := withConfig(claim("uid-1", "ts", result{request: "gpu", device: "gpu-0"}), nil, tsConfig("Long"))
	for range 2 { // a claim shared by several pods is prepared once per pod
		if _, err := e.state.Prepare(e.ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.interval(gpu); got != configapi.LongTimeSlice {
		t.Fatalf("interval after prepare = %s, want Long", got)
	}
	if n := counter.count(gpu, configapi.LongTimeSlice); n != 1 {
		t.Errorf("time slice set %d times for a claim prepared twice, want once", n)
	}
	if got := e.interval(e.inv.Devices[1].UUID); got != configapi.DefaultTimeSlice {
		t.Errorf("another GPU changed to %s", got)
	}
	if err := e.state.Unprepare(e.ctx, "default", "ts", "uid-1"); err != nil {
		t.Fatal(err)
	}
	if got := e.interval(gpu); got != configapi.DefaultTimeSlice {
		t.Errorf("interval after the last unprepare = %s, want Default", got)
	}
	// Unprepare is idempotent.
	if err := e.state.Unprepare(e.ctx, "default", "ts", "uid-1"); err != nil {
		t.Fatal(err)
	}
}

func TestTimeSlicingCountsSurviveRestart(t *testing.T) {
	e := newEnv(t)
	gpu := e.inv.Devices[2].UUID
	// Two claims on one GPU: a workload claim and an admin-access claim.
	a := withConfig(claim("uid-a", "a", result{request: "gpu", device: "gpu-2"}), nil, tsConfig("Long"))
	b := withConfig(claim("uid-b", "b", result{request: "gpu", device: "gpu-2", admin: true}), nil, tsConfig("Short"))
	for _, c := range []*resourceapi.ResourceClaim{a, b} {
		if _, err := e.state.Prepare(e.ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.interval(gpu); got != configapi.ShortTimeSlice {
		t.Fatalf("interval = %s, want Short (the last prepared claim's)", got)
	}
	// A restarted plugin knows nothing in memory.
	e.useTimeSlicing()
	e.restart()
	if err := e.state.Unprepare(e.ctx, "default", "b", "uid-b"); err != nil {
		t.Fatal(err)
	}
	if got := e.interval(gpu); got != configapi.LongTimeSlice {
		t.Errorf("after unpreparing b: interval = %s, want Long (claim a still uses the GPU)", got)
	}
	e.restart()
	if err := e.state.Unprepare(e.ctx, "default", "a", "uid-a"); err != nil {
		t.Fatal(err)
	}
	if got := e.interval(gpu); got != configapi.DefaultTimeSlice {
		t.Errorf("after the last unprepare: interval = %s, want Default", got)
	}
}

func TestTimeSlicingUndoneWhenSpecWriteFails(t *testing.T) {
	e := newEnv(t)
	gpu := e.inv.Devices[3].UUID
	// Replace the CDI directory by a file: the spec write fails, also for root.
	if err := os.RemoveAll(e.cdiDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.cdiDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := withConfig(claim("uid-1", "ts", result{request: "gpu", device: "gpu-3"}), nil, tsConfig("Medium"))
	if _, err := e.state.Prepare(e.ctx, c); err == nil {
		t.Fatal("Prepare succeeded with an unwritable CDI directory")
	}
	if got := e.interval(gpu); got != configapi.DefaultTimeSlice {
		t.Errorf("interval after the failed prepare = %s, want Default", got)
	}
	if got := e.state.PreparedClaims(); len(got) != 0 {
		t.Errorf("prepared claims after failure: %v", got)
	}
	store, _ := checkpoint.NewStore(e.ckptDir)
	if recs, _, _ := store.List(); len(recs) != 0 {
		t.Errorf("records left after failure: %d", len(recs))
	}
	// The GPU is free again for the next claim once the directory is back.
	if err := os.Remove(e.cdiDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.cdiDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := e.interval(gpu); got != configapi.MediumTimeSlice {
		t.Errorf("interval after the retried prepare = %s, want Medium", got)
	}
}

// failingApplier fails Apply and records Undo calls.
type failingApplier struct {
	mu    sync.Mutex
	undos []string
}

func (f *failingApplier) Apply(_ context.Context, c sharing.Claim) (sharing.Edits, error) {
	return sharing.Edits{}, fmt.Errorf("%s: apply failed on purpose", c.Ref())
}

func (f *failingApplier) Undo(_ context.Context, c sharing.Claim) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.undos = append(f.undos, c.UID)
	return nil
}

func TestFailedApplyIsUndoneAndReleasesTheDevice(t *testing.T) {
	e := newEnv(t)
	f := &failingApplier{}
	e.sharing = sharing.Composite{TimeSlicing: f}
	e.restart()
	c := withConfig(claim("uid-1", "ts", result{request: "gpu", device: "gpu-4"}), nil, tsConfig("Short"))
	_, err := e.state.Prepare(e.ctx, c)
	if err == nil || !strings.Contains(err.Error(), "apply failed on purpose") {
		t.Fatalf("Prepare error = %v", err)
	}
	if len(f.undos) != 1 || f.undos[0] != "uid-1" {
		t.Errorf("Undo calls = %v, want one for uid-1", f.undos)
	}
	if _, err := os.Stat(e.specPath("uid-1")); !os.IsNotExist(err) {
		t.Errorf("spec left behind: %v", err)
	}
	// The device is not held by the failed claim.
	if _, err := e.state.Prepare(e.ctx, claim("uid-2", "plain", result{request: "gpu", device: "gpu-4"})); err != nil {
		t.Errorf("device still reserved after a failed prepare: %v", err)
	}
}

func TestSharingEditsGoIntoTheSpec(t *testing.T) {
	e := newEnv(t)
	e.sharing = sharing.Composite{MPS: editsApplier{}}
	e.restart()
	c := withConfig(claim("uid-1", "mps", result{request: "gpu", device: "gpu-5"}), nil,
		`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS"}}`)
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(e.specPath("uid-1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CUDA_MPS_PIPE_DIRECTORY=/mps/uid-1", "PER_DEVICE=gpu-5"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("spec lacks %q:\n%s", want, data)
		}
	}
	// The driver-wide edits are the driver spec's, not the claim's.
	if strings.Contains(string(data), "/dev/nvidiactl") {
		t.Errorf("claim spec repeats the driver-wide edits:\n%s", data)
	}
}

// editsApplier returns fixed edits, like an MPS applier would.
type editsApplier struct{}

func (editsApplier) Apply(_ context.Context, c sharing.Claim) (sharing.Edits, error) {
	return sharing.Edits{
		Claim:   specs.ContainerEdits{Env: []string{"CUDA_MPS_PIPE_DIRECTORY=/mps/" + c.UID}},
		Devices: map[string]specs.ContainerEdits{c.Devices[0].Name: {Env: []string{"PER_DEVICE=" + c.Devices[0].Name}}},
	}, nil
}

func (editsApplier) Undo(context.Context, sharing.Claim) error { return nil }

func TestInvalidSharingConfigsFailThatClaimOnly(t *testing.T) {
	e := newMIGEnv(t)
	mig := "gpu-0-mig-1g5gb-1"
	for _, tc := range []struct {
		name     string
		device   string
		requests []string
		config   string
		want     []string // the claim, the field, the allowed values
	}{
		{"unknown interval", "gpu-3", nil, tsConfig("VeryLong"),
			[]string{"claim default/bad", "sharing.timeSlicingConfig.interval", `"Default", "Short", "Medium" or "Long"`}},
		{"interval in wrong case", "gpu-3", nil, tsConfig("long"),
			[]string{"claim default/bad", "sharing.timeSlicingConfig.interval", "case-sensitive"}},
		{"negative percentage", "gpu-3", nil, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":-5}}}`,
			[]string{"claim default/bad", "defaultActiveThreadPercentage", "1 to 100"}},
		{"unknown strategy", "gpu-3", nil, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"Magic"}}`,
			[]string{"claim default/bad", "sharing.strategy", `"TimeSlicing" or "MPS"`}},
		{"config for a request that does not exist", "gpu-3", []string{"nope"}, tsConfig("Long"),
			[]string{"claim default/bad", `request "nope"`, `"gpu"`}},
		{"MPS without MPS support", "gpu-3", nil, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS"}}`,
			[]string{"claim default/bad", "sharing.strategy", `"MPS"`, `"TimeSlicing"`}},
		{"MPS on a MIG device without MPS support", mig, nil, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS"}}`,
			[]string{"claim default/bad", "sharing.strategy", `"MPS"`}},
		{"time-slice interval on a MIG device", mig, nil, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Long"}}}`,
			[]string{"claim default/bad", "sharing.timeSlicingConfig", "remove timeSlicingConfig"}},
		{"GpuConfig for a MIG device", mig, []string{"gpu"}, tsConfig("Long"),
			[]string{"claim default/bad", "GpuConfig", "MigDeviceConfig"}},
		{"MigDeviceConfig for a full GPU", "gpu-3", []string{"gpu"}, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig"}`,
			[]string{"claim default/bad", "MigDeviceConfig", "GpuConfig"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := withConfig(claim("uid-bad", "bad", result{request: "gpu", device: tc.device}), tc.requests, tc.config)
			_, err := e.state.Prepare(e.ctx, c)
			if err == nil {
				t.Fatal("Prepare succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			if got := e.state.PreparedClaims(); len(got) != 0 {
				t.Errorf("prepared claims: %v", got)
			}
		})
	}
	// Other claims are unaffected: the same devices prepare fine.
	for i, dev := range []string{"gpu-3", mig} {
		if _, err := e.state.Prepare(e.ctx, claim(fmt.Sprintf("uid-ok-%d", i), "ok", result{request: "gpu", device: dev})); err != nil {
			t.Errorf("%s: %v", dev, err)
		}
	}
}

// newMIGEnv is newEnv on the dgxa100-mig mock, with the real MIG edits
// (cdi.WithMIG) over fake GPU edits and a mock mig-minors file.
func newMIGEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	lib, err := mockmachine.New("dgxa100-mig", nodeName)
	if err != nil {
		t.Fatal(err)
	}
	if e.inv, err = inventory.Discover(lib); err != nil {
		t.Fatal(err)
	}
	e.edits = &fakeEdits{inv: e.inv}
	var lines []string
	for c, minor := range mockmachine.MIGCapMinors(e.inv) {
		lines = append(lines, fmt.Sprintf("%s %d", c, minor))
	}
	minors := filepath.Join(t.TempDir(), "mig-minors")
	if err := os.WriteFile(minors, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var migs []cdi.MIGDevice
	for _, m := range e.inv.MIGDevices {
		migs = append(migs, cdi.MIGDevice{UUID: m.UUID, ParentUUID: m.ParentUUID, ParentMinor: m.ParentMinor, GPUInstanceID: m.GPUInstanceID, ComputeInstanceID: m.ComputeInstanceID})
	}
	withMIG, err := cdi.WithMIG(e.edits, migs, minors)
	if err != nil {
		t.Fatal(err)
	}
	e.migEdits = withMIG
	e.restart()
	return e
}

func TestPrepareMIGDevice(t *testing.T) {
	e := newMIGEnv(t)
	var m inventory.MIGDevice
	for _, x := range e.inv.MIGDevices {
		if x.ParentIndex == 0 && x.GPUInstanceID == 3 {
			m = x
		}
	}
	// MIG devices accept MigDeviceConfig; TimeSlicing without settings is
	// the MIG default and needs no applier.
	c := withConfig(claim("uid-1", "mig", result{request: "mig", device: "gpu-0-mig-2g10gb-3"}), nil,
		`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"TimeSlicing"}}`)
	devs, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].DeviceName != "gpu-0-mig-2g10gb-3" {
		t.Fatalf("devices = %+v", devs)
	}
	store, _ := checkpoint.NewStore(e.ckptDir)
	rec, err := store.Get("uid-1")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Devices[0].UUID != m.UUID || !strings.Contains(string(rec.Devices[0].Config), "MigDeviceConfig") {
		t.Errorf("recorded device %+v, want UUID %s and a MigDeviceConfig", rec.Devices[0], m.UUID)
	}
	spec := readSpec(t, e.specPath("uid-1"))
	if err := cdi.Validate(spec); err != nil {
		t.Fatalf("spec does not validate: %v", err)
	}
	caps := mockmachine.MIGCapMinors(e.inv)
	want := []string{
		"/dev/nvidia0",
		fmt.Sprintf("/dev/nvidia-caps/nvidia-cap%d", caps[cdi.GPUInstanceCap(m.ParentMinor, m.GPUInstanceID)]),
		fmt.Sprintf("/dev/nvidia-caps/nvidia-cap%d", caps[cdi.ComputeInstanceCap(m.ParentMinor, m.GPUInstanceID, m.ComputeInstanceID)]),
	}
	var got []string
	for _, n := range spec.Devices[0].ContainerEdits.DeviceNodes {
		got = append(got, n.Path)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("MIG device nodes = %v, want %v", got, want)
	}
	// A GPU in MIG mode cannot be prepared as a whole GPU.
	_, err = e.state.Prepare(e.ctx, claim("uid-2", "whole", result{request: "gpu", device: "gpu-0"}))
	if err == nil || !strings.Contains(err.Error(), `"gpu-0"`) {
		t.Errorf("preparing a GPU in MIG mode as a whole: %v", err)
	}
	if err := e.state.Unprepare(e.ctx, "default", "mig", "uid-1"); err != nil {
		t.Fatal(err)
	}
}

func readSpec(t *testing.T, path string) *specs.Spec {
	t.Helper()
	spec, err := cdiapi.ReadSpec(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	return spec.Spec
}

// editsSource is the env's EditsSource: the MIG-aware edits of newMIGEnv,
// else the fake GPU edits.
func (e *env) editsSource() EditsSource {
	if e.editsOverride != nil {
		return e.editsOverride
	}
	if e.migEdits != nil {
		return e.migEdits
	}
	return e.edits
}

// A reboot resets the GPUs' time slices; the claims of the earlier boot get
// them back at start-up, once, while claims without sharing are left alone.
func TestTimeSlicingReappliedAfterReboot(t *testing.T) {
	e := newEnv(t)
	gpu := e.inv.Devices[0].UUID
	shared := withConfig(claim("uid-ts", "ts", result{request: "gpu", device: "gpu-0"}), nil, tsConfig("Medium"))
	plain := claim("uid-plain", "plain", result{request: "gpu", device: "gpu-1"})
	for _, c := range []*resourceapi.ResourceClaim{shared, plain} {
		if _, err := e.state.Prepare(e.ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// The reboot: the driver forgets the time slice; the CDI directory and
	// the checkpoint are kept.
	if err := e.slices.SetTimeSlice(e.ctx, gpu, configapi.DefaultTimeSlice); err != nil {
		t.Fatal(err)
	}
	e.bootID = "boot-2"
	counter := e.useTimeSlicing()
	e.restart()
	report := e.state.Reconcile(e.ctx)
	if len(report.Errors) != 0 || report.FromPreviousBoot != 2 || report.SharingReapplied != 1 {
		t.Fatalf("report = %+v, want 2 claims from the previous boot, 1 re-applied, no errors", report)
	}
	if got := e.interval(gpu); got != configapi.MediumTimeSlice {
		t.Fatalf("interval after reboot = %s, want Medium again", got)
	}
	// Both are recorded under the new boot: the next start applies nothing
	// again.
	e.restart()
	report = e.state.Reconcile(e.ctx)
	if report.FromPreviousBoot != 0 || report.SharingReapplied != 0 || counter.count(gpu, configapi.MediumTimeSlice) != 1 {
		t.Fatalf("second start: report %+v, Medium set %d times; want nothing re-applied", report, counter.count(gpu, configapi.MediumTimeSlice))
	}
	// And the prepared claims still give the same CDI IDs and unprepare.
	for _, c := range []*resourceapi.ResourceClaim{shared, plain} {
		if _, err := e.state.Prepare(e.ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := e.state.Unprepare(e.ctx, c.Namespace, c.Name, c.UID); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.interval(gpu); got != configapi.DefaultTimeSlice {
		t.Errorf("interval after unprepare = %s, want Default", got)
	}
}

// A claim whose prepare has recorded it and applied its time slice counts
// for the other claims on the GPU before the prepare returns: unpreparing
// another claim meanwhile keeps its interval.
func TestTimeSlicingCountsAClaimBeingPrepared(t *testing.T) {
	e := newEnv(t)
	gpu := e.inv.Devices[2].UUID
	a := withConfig(claim("uid-a", "a", result{request: "gpu", device: "gpu-2"}), nil, tsConfig("Long"))
	b := withConfig(claim("uid-b", "b", result{request: "gpu", device: "gpu-2", admin: true}), nil, tsConfig("Short"))
	if _, err := e.state.Prepare(e.ctx, a); err != nil {
		t.Fatal(err)
	}
	// The spec of b is built after its time slice is set: unprepare a
	// from there.
	armed := true
	var unprepareErr error
	e.edits.hook = func(uuid string) {
		if armed && uuid == gpu {
			armed = false
			unprepareErr = e.state.Unprepare(e.ctx, "default", "a", "uid-a")
		}
	}
	if _, err := e.state.Prepare(e.ctx, b); err != nil {
		t.Fatal(err)
	}
	if armed || unprepareErr != nil {
		t.Fatalf("unprepare of a during the prepare of b: ran %v, error %v", !armed, unprepareErr)
	}
	if got := e.interval(gpu); got != configapi.ShortTimeSlice {
		t.Errorf("interval = %s, want Short: claim b, being prepared, still uses the GPU", got)
	}
	if err := e.state.Unprepare(e.ctx, "default", "b", "uid-b"); err != nil {
		t.Fatal(err)
	}
	if got := e.interval(gpu); got != configapi.DefaultTimeSlice {
		t.Errorf("after the last unprepare: interval = %s, want Default", got)
	}
}

func TestSharingClaimsAreTheRecordedSharedClaimsOldestFirst(t *testing.T) {
	e := newEnv(t)
	for _, c := range []*resourceapi.ResourceClaim{
		withConfig(claim("uid-2", "second", result{request: "gpu", device: "gpu-0"}), nil, tsConfig("Long")),
		claim("uid-plain", "plain", result{request: "gpu", device: "gpu-1"}),
		withConfig(claim("uid-1", "third", result{request: "gpu", device: "gpu-2"}), nil, tsConfig("Short")),
	} {
		if _, err := e.state.Prepare(e.ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		var got []string
		for _, c := range e.state.SharingClaims() {
			got = append(got, c.UID+"/"+c.Name)
			if len(c.Devices) != 1 || c.Devices[0].Strategy() != configapi.TimeSlicingStrategy || c.Devices[0].Type != devices.KindGPU {
				t.Errorf("%s: claim %s has devices %+v", when, c.UID, c.Devices)
			}
		}
		if want := "uid-2/second,uid-1/third"; strings.Join(got, ",") != want {
			t.Errorf("%s: SharingClaims = %v, want %s (prepare order, only claims with sharing settings)", when, got, want)
		}
	}
	check("after prepare")
	e.restart()
	check("after restart")
}

func TestNewRequiresDevicesAndSharing(t *testing.T) {
	e := newEnv(t)
	naming := cdi.NewNaming(driverName)
	specDir, err := cdi.NewSpecDir(e.cdiDir, naming)
	if err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.NewStore(e.ckptDir)
	if err != nil {
		t.Fatal(err)
	}
	base := Options{DriverName: driverName, PoolName: nodeName, Devices: devices.FromInventory(e.inv), Edits: e.edits,
		Specs: specDir, Naming: naming, Checkpoints: store, BootID: e.bootID, Sharing: sharing.Composite{}}
	noDevices, noSharing := base, base
	noDevices.Devices = nil
	noSharing.Sharing = nil
	for field, opts := range map[string]Options{"Devices": noDevices, "Sharing": noSharing} {
		if _, _, err := New(e.ctx, opts); err == nil || !strings.Contains(err.Error(), "Options."+field+" is nil") {
			t.Errorf("New without %s: %v", field, err)
		}
	}
	if _, _, err := New(e.ctx, base); err != nil {
		t.Errorf("New with sharing.Composite{}: %v", err)
	}
}

// A record whose config cannot be decoded (written by another version, or
// damaged) loads, holds its device, and fails the steps that need its
// sharing settings with an error that names the device; the time-sliced
// devices of the other claims are unaffected.
func TestRecordWithUndecodableConfig(t *testing.T) {
	e := newEnv(t)
	c := withConfig(claim("uid-bad", "bad", result{request: "gpu", device: "gpu-3"}), nil, tsConfig("Long"))
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.NewStore(e.ckptDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Get("uid-bad")
	if err != nil || rec == nil {
		t.Fatalf("record: %v %v", rec, err)
	}
	rec.Devices[0].Config = []byte(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","bogus":1}}`)
	if err := store.Put(rec); err != nil {
		t.Fatal(err)
	}
	e.emptyCDIDir()
	e.restart()
	if got := e.state.PreparedClaims(); len(got) != 1 || got[0] != "uid-bad" {
		t.Fatalf("prepared claims = %v", got)
	}
	report := e.state.Reconcile(e.ctx)
	if len(report.Errors) != 1 || !strings.Contains(report.Errors[0].Error(), "device gpu-3: its recorded config cannot be decoded") ||
		!strings.Contains(report.Errors[0].Error(), "default/bad") {
		t.Errorf("reconcile errors = %v", report.Errors)
	}
	if _, err := e.state.Prepare(e.ctx, c); err == nil || !strings.Contains(err.Error(), "its recorded config cannot be decoded") {
		t.Errorf("prepare of the claim again: %v", err)
	}
	if _, err := e.state.Prepare(e.ctx, claim("uid-other", "other", result{request: "gpu", device: "gpu-3"})); err == nil {
		t.Error("the device of the undecodable claim was given to another claim")
	}
	ts := withConfig(claim("uid-ts", "ts", result{request: "gpu", device: "gpu-4"}), nil, tsConfig("Medium"))
	if _, err := e.state.Prepare(e.ctx, ts); err != nil {
		t.Fatal(err)
	}
	if err := e.state.Unprepare(e.ctx, "default", "ts", "uid-ts"); err != nil {
		t.Fatal(err)
	}
	if got := e.interval(e.inv.Devices[4].UUID); got != configapi.DefaultTimeSlice {
		t.Errorf("interval of another claim's GPU after its unprepare = %s, want Default", got)
	}
}

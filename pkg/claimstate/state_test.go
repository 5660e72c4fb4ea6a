package claimstate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/sharing"
)

const (
	driverName = "gpu.nvidia.com"
	nodeName   = "node-a"
)

// fakeEdits gives each GPU one device node; hook, when set, runs inside
// Device (to observe concurrency).
type fakeEdits struct {
	inv  *inventory.Inventory
	hook func(uuid string)
}

func (f *fakeEdits) Common() specs.ContainerEdits {
	return specs.ContainerEdits{
		DeviceNodes: []*specs.DeviceNode{{Path: "/dev/nvidiactl", Type: "c", Major: 195, Minor: 255}},
		Mounts:      []*specs.Mount{{HostPath: "/usr/lib/libcuda.so.1", ContainerPath: "/usr/lib/libcuda.so.1", Options: []string{"ro", "bind"}}},
	}
}

func (f *fakeEdits) Device(uuid string) (specs.ContainerEdits, error) {
	if f.hook != nil {
		f.hook(uuid)
	}
	d, ok := f.inv.DeviceByUUID(uuid)
	if !ok {
		return specs.ContainerEdits{}, fmt.Errorf("unknown GPU %s", uuid)
	}
	return specs.ContainerEdits{DeviceNodes: []*specs.DeviceNode{{Path: fmt.Sprintf("/dev/nvidia%d", d.Minor), Type: "c", Major: 195, Minor: int64(d.Minor)}}}, nil
}

type env struct {
	t       testing.TB
	ctx     context.Context
	inv     *inventory.Inventory
	edits   *fakeEdits
	cdiDir  string
	ckptDir string
	bootID  string
	state   *State
	// sharing is the State's Applier; newEnv sets a time-slicing one
	// that records into slices (see sharing_test.go).
	sharing sharing.Applier
	slices  *mockmachine.TimeSliceFile
	// migEdits, when set, replaces edits (newMIGEnv).
	migEdits cdi.DeviceEdits
	// api, when set (useAPI), answers the State's claim lookups and
	// records the stale claims it reports; now, when set, is its clock.
	api *fakeAPI
	now func() time.Time
	// set and mig, when set (newDynamicMIGEnv), replace the devices of
	// inv and give the State its MIG devices.
	set *devices.Set
	mig MIGDevices
	// computeShares is Options.ComputeShares.
	computeShares int64
	// selfContained turns Options.UseDriverSpec off: claims get the specs
	// of plugins from before the driver-wide spec.
	selfContained bool
	// staticDevices writes the static device spec and passes it
	// (Options.DeviceSpec), as the plugin does.
	staticDevices bool
	// editsOverride, when set, is the State's EditsSource.
	editsOverride EditsSource
}

func newEnv(t testing.TB) *env {
	t.Helper()
	lib, err := mockmachine.New("dgxh100", nodeName)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	e := &env{t: t, ctx: ctx, inv: inv, edits: &fakeEdits{inv: inv}, cdiDir: t.TempDir(), ckptDir: filepath.Join(t.TempDir(), "claims"), bootID: "boot-1"}
	e.useTimeSlicing()
	e.restart()
	return e
}

// restart builds a new State over the same directories, as a restarted
// plugin does: it writes the driver-wide spec first (unless selfContained).
func (e *env) restart() {
	e.t.Helper()
	naming := cdi.NewNaming(driverName)
	specDir, err := cdi.NewSpecDir(e.cdiDir, naming)
	if err != nil {
		e.t.Fatal(err)
	}
	if !e.selfContained {
		spec, err := cdi.DriverSpec(naming, e.editsSource().Common())
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := specDir.WriteDriverSpec(spec); err != nil {
			e.t.Fatal(err)
		}
	}
	store, err := checkpoint.NewStore(e.ckptDir)
	if err != nil {
		e.t.Fatal(err)
	}
	set := e.set
	if set == nil {
		set = devices.FromInventory(e.inv)
	}
	var deviceSpec *specs.Spec
	if e.staticDevices {
		// A device left out (errors) is what some tests check.
		if deviceSpec, _, err = StaticDeviceSpec(naming, set, e.editsSource()); err != nil {
			e.t.Fatal(err)
		}
		if _, err := specDir.WriteDeviceSpec(deviceSpec); err != nil {
			e.t.Fatal(err)
		}
	}
	opts := Options{
		DeviceSpec: deviceSpec,
		DriverName: driverName, PoolName: nodeName, Devices: set, Edits: e.editsSource(),
		Specs: specDir, Naming: naming, UseDriverSpec: !e.selfContained, Checkpoints: store, BootID: e.bootID, Sharing: e.sharing, Now: e.now, MIG: e.mig, ComputeShares: e.computeShares,
	}
	if e.api != nil {
		opts.LookupClaim, opts.OnStaleClaim = e.api.lookup, e.api.onStale
	}
	s, loadErrs, err := New(e.ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(loadErrs) != 0 {
		e.t.Fatalf("load errors: %v", loadErrs)
	}
	e.state = s
}

type result struct {
	request, device string
	driver, pool    string
	admin           bool
}

func claim(uid, name string, results ...result) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(uid)},
		Status:     resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}},
	}
	for _, r := range results {
		if r.driver == "" {
			r.driver = driverName
		}
		if r.pool == "" {
			r.pool = nodeName
		}
		ar := resourceapi.DeviceRequestAllocationResult{Request: r.request, Driver: r.driver, Pool: r.pool, Device: r.device}
		if r.admin {
			ar.AdminAccess = ptr.To(true)
		}
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results, ar)
	}
	return c
}

// claimSpecFiles lists the CDI directory without the driver-wide spec,
// which stays whatever the claims; it fails the test if a claim spec
// without the driver-wide edits (fakeEdits.Common's /dev/nvidiactl) exists
// without the driver-wide spec.
func (e *env) claimSpecFiles() []string {
	e.t.Helper()
	entries, err := os.ReadDir(e.cdiDir)
	if err != nil {
		e.t.Fatal(err)
	}
	driverSpec := cdi.NewNaming(driverName).DriverSpecFileName()
	var names []string
	haveDriverSpec := false
	for _, en := range entries {
		if en.IsDir() || en.Name() == cdi.NewNaming(driverName).DeviceSpecFileName() {
			continue // the staging directory, the static device spec
		}
		if en.Name() == driverSpec {
			haveDriverSpec = true
		} else {
			names = append(names, en.Name())
		}
	}
	for _, name := range names {
		if haveDriverSpec || durable.IsTemp(name) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(e.cdiDir, name))
		if err == nil && !strings.Contains(string(data), `"/dev/nvidiactl"`) {
			e.t.Errorf("claim spec %s needs the driver-wide spec, which does not exist", name)
		}
	}
	return names
}

func (e *env) specPath(uid string) string {
	return filepath.Join(e.cdiDir, cdi.NewNaming(driverName).SpecFileName(uid))
}

func TestPrepareWritesValidSpecAndCheckpoint(t *testing.T) {
	e := newEnv(t)
	c := claim("uid-1", "one", result{request: "gpu", device: "gpu-0"}, result{request: "gpu", device: "gpu-3"})
	devs, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 {
		t.Fatalf("got %d devices, want 2", len(devs))
	}
	for i, want := range []string{"gpu-0", "gpu-3"} {
		d := devs[i]
		if d.DeviceName != want || d.PoolName != nodeName || len(d.Requests) != 1 || d.Requests[0] != "gpu" {
			t.Errorf("device %d = %+v", i, d)
		}
		wantIDs := []string{"k8s.gpu.nvidia.com/driver=common", "k8s.gpu.nvidia.com/claim=uid-1-" + want}
		if !slices.Equal(d.CDIDeviceIDs, wantIDs) {
			t.Errorf("CDI IDs %v, want %v", d.CDIDeviceIDs, wantIDs)
		}
	}

	// The CDI library itself must accept the spec and resolve the IDs.
	spec, err := cdiapi.ReadSpec(e.specPath("uid-1"), 0)
	if err != nil {
		t.Fatalf("the CDI library refuses the spec: %v", err)
	}
	for _, n := range []string{"uid-1-gpu-0", "uid-1-gpu-3"} {
		if spec.GetDevice(n) == nil {
			t.Errorf("spec lacks device %s", n)
		}
	}
	if got := spec.GetDevice("uid-1-gpu-3").ContainerEdits.DeviceNodes[0].Path; got != "/dev/nvidia3" {
		t.Errorf("gpu-3 gets %s", got)
	}
	// The claim's spec holds only its own edits; the driver-wide ones are
	// the driver spec's.
	if edits := spec.ContainerEdits; len(edits.Env)+len(edits.DeviceNodes)+len(edits.Mounts)+len(edits.Hooks) != 0 {
		t.Errorf("claim spec has driver-wide edits %+v", edits)
	}
	driverSpec, err := cdiapi.ReadSpec(filepath.Join(e.cdiDir, cdi.NewNaming(driverName).DriverSpecFileName()), 0)
	if err != nil {
		t.Fatalf("the CDI library refuses the driver spec: %v", err)
	}
	if dev := driverSpec.GetDevice(cdi.DriverDevice); dev == nil || !containsStr(dev.ContainerEdits.Env, cdi.VisibleDevicesVoid) {
		t.Errorf("driver spec device %+v lacks %s", dev, cdi.VisibleDevicesVoid)
	}
	if n := driverSpec.ContainerEdits.DeviceNodes; len(n) != 1 || n[0].Path != "/dev/nvidiactl" {
		t.Errorf("driver spec device nodes %v, want the driver-wide /dev/nvidiactl", n)
	}
	fi, err := os.Stat(e.specPath("uid-1"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("spec file mode: %v %v", fi.Mode(), err)
	}

	store, _ := checkpoint.NewStore(e.ckptDir)
	rec, err := store.Get("uid-1")
	if err != nil || rec == nil {
		t.Fatalf("checkpoint record: %v %v", rec, err)
	}
	if rec.BootID != "boot-1" || rec.Namespace != "default" || rec.Name != "one" || len(rec.Devices) != 2 || rec.Devices[1].UUID != e.inv.Devices[3].UUID {
		t.Errorf("record = %+v", rec)
	}
}

func TestPrepareIsIdempotentAndRecreatesMissingSpec(t *testing.T) {
	e := newEnv(t)
	c := claim("uid-1", "one", result{request: "gpu", device: "gpu-1"})
	first, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(first) != fmt.Sprint(again) {
		t.Errorf("repeated prepare: %v, first %v", again, first)
	}
	if err := os.Remove(e.specPath("uid-1")); err != nil {
		t.Fatal(err)
	}
	again, err = e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(first) != fmt.Sprint(again) {
		t.Errorf("prepare after spec loss: %v, first %v", again, first)
	}
	if _, err := cdiapi.ReadSpec(e.specPath("uid-1"), 0); err != nil {
		t.Errorf("spec not re-created: %v", err)
	}
}

func TestUnprepareRemovesEverythingAndIsIdempotent(t *testing.T) {
	e := newEnv(t)
	c := claim("uid-1", "one", result{request: "gpu", device: "gpu-1"})
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := e.state.Unprepare(e.ctx, "default", "one", "uid-1"); err != nil {
			t.Fatalf("unprepare #%d: %v", i, err)
		}
	}
	if _, err := os.Stat(e.specPath("uid-1")); !os.IsNotExist(err) {
		t.Errorf("spec still there: %v", err)
	}
	if entries, _ := os.ReadDir(e.ckptDir); len(entries) != 0 {
		t.Errorf("checkpoint dir not empty: %v", entries)
	}
	if err := e.state.Unprepare(e.ctx, "default", "never", "uid-never-seen"); err != nil {
		t.Errorf("unprepare of an unknown claim: %v", err)
	}
	// The device is free again.
	if _, err := e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-1"})); err != nil {
		t.Errorf("device not released: %v", err)
	}
}

func TestDeviceOfAnotherClaimIsRefusedUnlessAdminAccess(t *testing.T) {
	e := newEnv(t)
	if _, err := e.state.Prepare(e.ctx, claim("uid-1", "one", result{request: "gpu", device: "gpu-2"})); err != nil {
		t.Fatal(err)
	}
	_, err := e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-2"}, result{request: "gpu", device: "gpu-4"}))
	if err == nil {
		t.Fatal("second claim got a device already prepared for another claim")
	}
	for _, want := range []string{"default/two", "uid-2", "gpu-2", "default/one", "uid-1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// A refused claim holds nothing: gpu-4 is still free.
	if _, err := e.state.Prepare(e.ctx, claim("uid-3", "three", result{request: "gpu", device: "gpu-4"})); err != nil {
		t.Errorf("refused claim kept a reservation: %v", err)
	}
	// Admin access (monitoring) may use a device in use.
	if _, err := e.state.Prepare(e.ctx, claim("uid-4", "admin", result{request: "gpu", device: "gpu-2", admin: true})); err != nil {
		t.Errorf("admin access refused: %v", err)
	}
	// And the restarted plugin still knows who holds gpu-2.
	e.restart()
	if _, err := e.state.Prepare(e.ctx, claim("uid-5", "five", result{request: "gpu", device: "gpu-2"})); err == nil {
		t.Error("after restart, a device in use was given to another claim")
	}
}

func TestBadClaimsGetClearErrors(t *testing.T) {
	e := newEnv(t)
	notAllocated := claim("uid-x", "x")
	notAllocated.Status.Allocation = nil
	for name, tc := range map[string]struct {
		claim *resourceapi.ResourceClaim
		want  []string
	}{
		"not allocated":       {notAllocated, []string{"default/x", "not allocated"}},
		"other node's pool":   {claim("uid-p", "p", result{request: "gpu", device: "gpu-0", pool: "node-b"}), []string{"default/p", "node-b", "another node"}},
		"unknown device":      {claim("uid-u", "u", result{request: "gpu", device: "gpu-42"}), []string{"default/u", "gpu-42", "stale"}},
		"only another driver": {claim("uid-o", "o", result{request: "nic", device: "nic-0", driver: "nic.example.com"}), []string{"default/o", "no device of driver"}},
		"uid with path chars": {claim("../../etc/passwd", "evil", result{request: "gpu", device: "gpu-0"}), []string{"default/evil", "uid"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.state.Prepare(e.ctx, tc.claim)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	if entries := e.claimSpecFiles(); len(entries) != 0 {
		t.Errorf("bad claims left specs: %v", entries)
	}
}

func TestResultsOfOtherDriversAreIgnored(t *testing.T) {
	e := newEnv(t)
	devs, err := e.state.Prepare(e.ctx, claim("uid-1", "mixed",
		result{request: "nic", device: "nic-0", driver: "nic.example.com", pool: "other"},
		result{request: "gpu", device: "gpu-5"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].DeviceName != "gpu-5" {
		t.Errorf("devices = %+v", devs)
	}
}

func TestOpaqueConfigIsDecodedAndRecorded(t *testing.T) {
	e := newEnv(t)
	c := claim("uid-1", "ts", result{request: "gpu", device: "gpu-0"})
	c.Status.Allocation.Devices.Config = []resourceapi.DeviceAllocationConfiguration{{
		Source: resourceapi.AllocationConfigSourceClaim,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver:     driverName,
			Parameters: runtime.RawExtension{Raw: []byte(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Long"}}}`)},
		}},
	}}
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	store, _ := checkpoint.NewStore(e.ckptDir)
	rec, _ := store.Get("uid-1")
	if !strings.Contains(string(rec.Devices[0].Config), `"Long"`) {
		t.Errorf("recorded config %s lacks the interval", rec.Devices[0].Config)
	}

	bad := claim("uid-2", "bad", result{request: "gpu", device: "gpu-1"})
	bad.Status.Allocation.Devices.Config = []resourceapi.DeviceAllocationConfiguration{{
		Source: resourceapi.AllocationConfigSourceClaim,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver:     driverName,
			Parameters: runtime.RawExtension{Raw: []byte(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","bogus":1}}`)},
		}},
	}}
	_, err := e.state.Prepare(e.ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "bogus") || !strings.Contains(err.Error(), "default/bad") {
		t.Errorf("bad config error = %v", err)
	}
}

func TestReconcileRecreatesLostSpecsAndRemovesOrphans(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < 3; i++ {
		uid := fmt.Sprintf("uid-%d", i)
		if _, err := e.state.Prepare(e.ctx, claim(uid, uid, result{request: "gpu", device: fmt.Sprintf("gpu-%d", i)})); err != nil {
			t.Fatal(err)
		}
	}
	// Reboot: tmpfs /var/run/cdi is empty, a new boot ID, and an orphaned
	// spec of this driver plus another vendor's spec lie around.
	entries, _ := os.ReadDir(e.cdiDir)
	for _, en := range entries {
		_ = os.Remove(filepath.Join(e.cdiDir, en.Name()))
	}
	orphan := e.specPath("uid-orphan")
	if err := os.WriteFile(orphan, []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(e.cdiDir, "nvidia.com-gpu.yaml")
	if err := os.WriteFile(foreign, []byte(`x`), 0o644); err != nil {
		t.Fatal(err)
	}
	e.bootID = "boot-2"
	e.restart()
	report := e.state.Reconcile(e.ctx)
	if report.SpecsRecreated != 3 || report.OrphansRemoved != 1 || report.FromPreviousBoot != 3 || len(report.Errors) != 0 {
		t.Errorf("report = %+v", report)
	}
	for i := 0; i < 3; i++ {
		if _, err := cdiapi.ReadSpec(e.specPath(fmt.Sprintf("uid-%d", i)), 0); err != nil {
			t.Errorf("spec %d: %v", i, err)
		}
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Error("orphan spec kept")
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("another vendor's spec was touched: %v", err)
	}
	// A second reconcile has nothing to do.
	if r := e.state.Reconcile(e.ctx); r.SpecsRecreated != 0 || r.OrphansRemoved != 0 {
		t.Errorf("second reconcile = %+v", r)
	}
}

// TestPreparesOfDifferentClaimsRunInParallel fails if a lock shared by all
// claims is held while a claim's edits are built: the two prepares must
// meet inside Device at the same time.
func TestPreparesOfDifferentClaimsRunInParallel(t *testing.T) {
	e := newEnv(t)
	var arrived sync.WaitGroup
	arrived.Add(2)
	met := make(chan struct{})
	go func() { arrived.Wait(); close(met) }()
	e.edits.hook = func(string) {
		arrived.Done()
		select {
		case <-met:
		case <-time.After(10 * time.Second):
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := 0; i < 2; i++ {
		wg.Go(func() {
			uid := fmt.Sprintf("uid-%d", i)
			_, errs[i] = e.state.Prepare(e.ctx, claim(uid, uid, result{request: "gpu", device: fmt.Sprintf("gpu-%d", i)}))
		})
	}
	wg.Wait()
	select {
	case <-met:
	default:
		t.Fatal("the two prepares never ran at the same time")
	}
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestConcurrentPrepareUnprepareKeepsStateConsistent(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for round := 0; round < 20; round++ {
				uid := fmt.Sprintf("uid-%d-%d", w, round)
				c := claim(uid, uid, result{request: "gpu", device: fmt.Sprintf("gpu-%d", w)})
				if _, err := e.state.Prepare(e.ctx, c); err != nil {
					t.Error(err)
					return
				}
				if err := e.state.Unprepare(e.ctx, "default", uid, types.UID(uid)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(e.state.PreparedClaims()); n != 0 {
		t.Errorf("%d claims still prepared", n)
	}
	if entries := e.claimSpecFiles(); len(entries) != 0 {
		t.Errorf("specs left: %v", entries)
	}
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

package claimstate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/gpudra/gpudra/pkg/checkpoint"
)

// emptyCDIDir removes every file of the CDI directory, as a reboot does to a
// tmpfs /var/run/cdi.
func (e *env) emptyCDIDir() {
	e.t.Helper()
	entries, err := os.ReadDir(e.cdiDir)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, en := range entries {
		if err := os.Remove(filepath.Join(e.cdiDir, en.Name())); err != nil {
			e.t.Fatal(err)
		}
	}
}

// TestRebootSameBootPrepareRecreatesSpec: the CDI directory was emptied but
// the checkpoint kept (a plugin restart after someone cleaned
// /var/run/cdi). Without a reconcile, the kubelet's next prepare re-creates
// the spec, byte for byte, with the same CDI IDs.
func TestRebootSameBootPrepareRecreatesSpec(t *testing.T) {
	e := newEnv(t)
	c := claim("uid-1", "one", result{request: "gpu", device: "gpu-2"}, result{request: "gpu", device: "gpu-3"})
	first, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(e.specPath("uid-1"))
	if err != nil {
		t.Fatal(err)
	}
	e.emptyCDIDir()
	e.restart()
	again, err := e.state.Prepare(e.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("prepare after the CDI directory was emptied: %v, before %v", again, first)
	}
	after, err := os.ReadFile(e.specPath("uid-1"))
	if err != nil {
		t.Fatalf("spec not re-created: %v", err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("re-created spec differs:\n%s\nwas\n%s", after, before)
	}
}

// TestRebootNewBootID is the reboot the design describes (reconcile.go):
// /var/run/cdi is a tmpfs and comes back empty, the checkpoint on disk
// survives, the boot ID changes. The start-up reconcile keeps the records of
// the previous boot (the kubelet decides: it unprepares the claims whose pods
// are gone and prepares again those it needs), re-creates their specs so
// that restarted containers find their devices, and still refuses their
// devices to other claims until they are unprepared.
func TestRebootNewBootID(t *testing.T) {
	e := newEnv(t)
	var want [][]string
	for i := range 3 {
		uid := fmt.Sprintf("uid-%d", i)
		devs, err := e.state.Prepare(e.ctx, claim(uid, uid, result{request: "gpu", device: fmt.Sprintf("gpu-%d", i)}))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, devs[0].CDIDeviceIDs)
	}
	e.emptyCDIDir()
	e.bootID = "boot-2"
	e.restart()

	// Start-up reconcile.
	report := e.state.Reconcile(e.ctx)
	if report.FromPreviousBoot != 3 || report.SpecsRecreated != 3 || report.OrphansRemoved != 0 || len(report.Errors) != 0 {
		t.Fatalf("reconcile after reboot = %+v, want 3 claims of the previous boot, 3 specs re-created", report)
	}
	if got := e.state.PreparedClaims(); !slices.Equal(got, []string{"uid-0", "uid-1", "uid-2"}) {
		t.Errorf("prepared claims after reboot: %v", got)
	}
	for i := range 3 {
		if _, err := os.Stat(e.specPath(fmt.Sprintf("uid-%d", i))); err != nil {
			t.Errorf("spec of uid-%d not re-created: %v", i, err)
		}
	}
	// The records are adopted into the current boot, so that the next
	// start-up does not count them again.
	store, err := checkpoint.NewStore(e.ckptDir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := store.Get("uid-0")
	if err != nil || rec == nil || rec.BootID != "boot-2" {
		t.Errorf("record of uid-0 after reboot: %+v %v, want boot ID boot-2", rec, err)
	}

	// The kubelet prepares again a claim it still needs: same IDs.
	devs, err := e.state.Prepare(e.ctx, claim("uid-0", "uid-0", result{request: "gpu", device: "gpu-0"}))
	if err != nil || !slices.Equal(devs[0].CDIDeviceIDs, want[0]) {
		t.Errorf("prepare after reboot: %v %v, want %v", devs, err, want[0])
	}
	// A device of a claim from the previous boot is still held.
	if _, err := e.state.Prepare(e.ctx, claim("uid-new", "new", result{request: "gpu", device: "gpu-1"})); err == nil {
		t.Error("a device of a claim prepared before the reboot was given to another claim before the kubelet unprepared it")
	}
	// The kubelet unprepares a claim whose pod is gone: everything goes,
	// and its device is free.
	if err := e.state.Unprepare(e.ctx, "default", "uid-1", types.UID("uid-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.specPath("uid-1")); !os.IsNotExist(err) {
		t.Errorf("spec of uid-1 after unprepare: %v", err)
	}
	if rec, err := store.Get("uid-1"); err != nil || rec != nil {
		t.Errorf("record of uid-1 after unprepare: %+v %v", rec, err)
	}
	if _, err := e.state.Prepare(e.ctx, claim("uid-new", "new", result{request: "gpu", device: "gpu-1"})); err != nil {
		t.Errorf("device of an unprepared claim from the previous boot not released: %v", err)
	}

	// A second reconcile in the same boot changes nothing.
	if r := e.state.Reconcile(e.ctx); r.SpecsRecreated != 0 || r.OrphansRemoved != 0 || len(r.Errors) != 0 {
		t.Errorf("second reconcile = %+v", r)
	}
}

// TestRebootLeftoverSpecWithoutRecordIsRemoved: a CDI directory on disk (not
// tmpfs) keeps a spec whose record is gone (the checkpoint directory was
// wiped, or an older version crashed between spec and record): the
// start-up reconcile deletes it, so the runtime cannot inject a GPU that no
// claim holds.
func TestRebootLeftoverSpecWithoutRecordIsRemoved(t *testing.T) {
	e := newEnv(t)
	if _, err := e.state.Prepare(e.ctx, claim("uid-1", "one", result{request: "gpu", device: "gpu-0"})); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(e.ckptDir); err != nil {
		t.Fatal(err)
	}
	e.bootID = "boot-2"
	e.restart()
	report := e.state.Reconcile(e.ctx)
	if report.OrphansRemoved != 1 || report.FromPreviousBoot != 0 || len(report.Errors) != 0 {
		t.Errorf("reconcile = %+v, want the orphaned spec removed", report)
	}
	if _, err := os.Stat(e.specPath("uid-1")); !os.IsNotExist(err) {
		t.Errorf("orphaned spec kept: %v", err)
	}
}

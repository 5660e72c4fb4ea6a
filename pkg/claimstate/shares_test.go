package claimstate

import (
	"context"
	"strings"
	"sync"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/sharing"
)

// shareRecorder is a sharing.Applier for shares that records what it was
// given and adds an env variable with the share's memory limit.
type shareRecorder struct {
	mu      sync.Mutex
	applied map[string]sharing.Claim // by claim UID
	undone  []string
}

func (r *shareRecorder) Apply(_ context.Context, c sharing.Claim) (sharing.Edits, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied[c.UID] = c
	e := sharing.Edits{Devices: map[string]specs.ContainerEdits{}}
	for _, d := range c.Devices {
		e.Devices[d.Name] = specs.ContainerEdits{Env: []string{"SHARE_MEMORY=" + resource.NewQuantity(d.Share.MemoryBytes, resource.BinarySI).String()}}
	}
	return e, nil
}

func (r *shareRecorder) Undo(_ context.Context, c sharing.Claim) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.undone = append(r.undone, c.UID)
	delete(r.applied, c.UID)
	return nil
}

func newSharesEnv(t *testing.T) (*env, *shareRecorder) {
	e := newEnv(t)
	rec := &shareRecorder{applied: map[string]sharing.Claim{}}
	e.sharing = sharing.Composite{Shares: rec}
	e.restart()
	return e, rec
}

// shareClaim is a claim for a share of device with the consumed capacity.
func shareClaim(uid, device, memory string, shares int64) *resourceapi.ResourceClaim {
	c := claim(uid, uid, result{request: "gpu", device: device})
	r := &c.Status.Allocation.Devices.Results[0]
	id := types.UID("5ba7e000-0000-4000-8000-" + strings.Repeat("0", 12-len(uid)) + uid)
	r.ShareID = &id
	r.ConsumedCapacity = map[resourceapi.QualifiedName]resource.Quantity{CapacityMemory: resource.MustParse(memory)}
	if shares > 0 {
		r.ConsumedCapacity[CapacityShares] = *resource.NewQuantity(shares, resource.DecimalSI)
	}
	return c
}

func TestSharesOfOneGPUArePreparedSideBySide(t *testing.T) {
	e, rec := newSharesEnv(t)
	for _, uid := range []string{"a", "b", "c", "d"} {
		devs, err := e.state.Prepare(e.ctx, shareClaim(uid, "gpu-0", "20Gi", 0))
		if err != nil {
			t.Fatalf("share %s: %v", uid, err)
		}
		if devs[0].ShareID == nil || !strings.HasSuffix(string(*devs[0].ShareID), uid) {
			t.Errorf("share %s: result %+v lacks its share ID", uid, devs[0])
		}
	}
	if len(rec.applied) != 4 || rec.applied["b"].Devices[0].Share.MemoryBytes != 20<<30 {
		t.Fatalf("shares applied: %v", rec.applied)
	}
	// The GPU's 80Gi are taken: a fifth share and an exclusive use are
	// refused, naming the holders.
	if _, err := e.state.Prepare(e.ctx, shareClaim("e", "gpu-0", "1Gi", 0)); err == nil || !strings.Contains(err.Error(), "does not fit") ||
		!strings.Contains(err.Error(), "default/a") || !strings.Contains(err.Error(), "81920 MiB") {
		t.Errorf("fifth share: %v, want a capacity refusal naming the holders", err)
	}
	if _, err := e.state.Prepare(e.ctx, claim("x", "x", result{request: "gpu", device: "gpu-0"})); err == nil || !strings.Contains(err.Error(), "either by one claim or as shares") {
		t.Errorf("exclusive use of a shared GPU: %v", err)
	}
	// Shares survive a restart with their limits, and unprepare one by one.
	e.restart()
	if got := e.state.PreparedClaims(); len(got) != 4 {
		t.Fatalf("prepared after restart: %v", got)
	}
	spec := readSpec(t, e.specPath("a"))
	if !containsStr(spec.Devices[0].ContainerEdits.Env, "SHARE_MEMORY=20Gi") {
		t.Errorf("spec of share a: env %v lacks its limit", spec.Devices[0].ContainerEdits.Env)
	}
	if err := e.state.Unprepare(e.ctx, "default", "a", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.state.Prepare(e.ctx, shareClaim("e", "gpu-0", "20Gi", 0)); err != nil {
		t.Errorf("a share in the freed capacity: %v", err)
	}
}

func TestShareOfTheWholeCapacityIsExclusive(t *testing.T) {
	e, rec := newSharesEnv(t)
	if _, err := e.state.Prepare(e.ctx, shareClaim("w", "gpu-1", "80Gi", 0)); err != nil {
		t.Fatal(err)
	}
	if len(rec.applied) != 0 {
		t.Errorf("a share of all of the GPU went to the shares applier: %v", rec.applied)
	}
	if _, err := e.state.Prepare(e.ctx, shareClaim("s", "gpu-1", "1Gi", 0)); err == nil || !strings.Contains(err.Error(), "default/w") {
		t.Errorf("share next to a whole-GPU allocation: %v", err)
	}
}

func TestComputeSharesAreCheckedAndLimited(t *testing.T) {
	e, rec := newSharesEnv(t)
	e.computeShares = 4
	e.restart()
	for _, uid := range []string{"p", "q"} {
		if _, err := e.state.Prepare(e.ctx, shareClaim(uid, "gpu-2", "0", 2)); err != nil {
			t.Fatal(err)
		}
	}
	if s := rec.applied["p"].Devices[0].Share; s.ComputeShares != 2 || s.ComputeTotal != 4 || s.ActiveThreadPercentage() != 50 {
		t.Errorf("share p = %+v", s)
	}
	if _, err := e.state.Prepare(e.ctx, shareClaim("r", "gpu-2", "0", 1)); err == nil || !strings.Contains(err.Error(), "shares: it consumed 1") {
		t.Errorf("a fifth compute share: %v", err)
	}
}

func TestTwoSharesOfOneGPUInOneClaimAreRefused(t *testing.T) {
	e, _ := newSharesEnv(t)
	c := shareClaim("t", "gpu-3", "10Gi", 0)
	second := c.Status.Allocation.Devices.Results[0]
	second.Request = "more"
	id := types.UID("5ba7e000-0000-4000-8000-00000000ffff")
	second.ShareID = &id
	c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results, second)
	if _, err := e.state.Prepare(e.ctx, c); err == nil || !strings.Contains(err.Error(), "each got a share of device gpu-3") {
		t.Errorf("two shares in one claim: %v", err)
	}
}

// After a reboot (new boot ID, CDI directory emptied, every MPS daemon
// gone), Reconcile applies each share again and writes its spec with its
// limits; the shares keep their IDs and their capacity accounting.
func TestSharesAreReappliedAfterAReboot(t *testing.T) {
	e, rec := newSharesEnv(t)
	for _, uid := range []string{"a", "b"} {
		if _, err := e.state.Prepare(e.ctx, shareClaim(uid, "gpu-4", "30Gi", 0)); err != nil {
			t.Fatal(err)
		}
	}
	e.emptyCDIDir()
	rec.applied = map[string]sharing.Claim{} // what the reboot wiped
	e.bootID = "boot-2"
	e.restart()
	report := e.state.Reconcile(e.ctx)
	if report.SharingReapplied != 2 || len(report.Errors) != 0 {
		t.Fatalf("report = %+v, want both shares re-applied", report)
	}
	if len(rec.applied) != 2 || rec.applied["a"].Devices[0].Share.ID == "" || rec.applied["b"].Devices[0].Share.MemoryBytes != 30<<30 {
		t.Errorf("re-applied shares: %+v", rec.applied)
	}
	if spec := readSpec(t, e.specPath("b")); !containsStr(spec.Devices[0].ContainerEdits.Env, "SHARE_MEMORY=30Gi") {
		t.Errorf("re-created spec of share b: env %v", spec.Devices[0].ContainerEdits.Env)
	}
	// 60Gi of 80Gi are still held after the reboot.
	if _, err := e.state.Prepare(e.ctx, shareClaim("c", "gpu-4", "30Gi", 0)); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("a third 30Gi share after the reboot: %v", err)
	}
}

// Admin access (monitoring) takes nothing from a GPU: as the API allocates
// it next to exclusive claims, it is prepared next to shares.
func TestAdminAccessBesideShares(t *testing.T) {
	e, _ := newSharesEnv(t)
	if _, err := e.state.Prepare(e.ctx, shareClaim("a", "gpu-5", "40Gi", 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.state.Prepare(e.ctx, claim("mon", "mon", result{request: "gpu", device: "gpu-5", admin: true})); err != nil {
		t.Errorf("admin access beside a share: %v", err)
	}
	if _, err := e.state.Prepare(e.ctx, shareClaim("b", "gpu-5", "40Gi", 0)); err != nil {
		t.Errorf("a share beside a share and admin access: %v", err)
	}
}

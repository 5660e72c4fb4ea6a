package claimstate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/checkpoint"
)

// fakeAPI is the API server's view of the claims, as Options.LookupClaim
// reads it, and the stale claims the State reported (Options.OnStaleClaim).
type fakeAPI struct {
	mu     sync.Mutex
	claims map[string]*resourceapi.ResourceClaim // by namespace/name
	// errs fails the lookups of a claim (by namespace/name, "" for all).
	errs  map[string]error
	calls map[string]int
	stale []StaleClaim
}

func (f *fakeAPI) lookup(_ context.Context, namespace, name string) (*resourceapi.ResourceClaim, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := namespace + "/" + name
	f.calls[key]++
	if err := f.errs[key]; err != nil {
		return nil, err
	}
	if err := f.errs[""]; err != nil {
		return nil, err
	}
	c := f.claims[key]
	if c == nil {
		return nil, apierrors.NewNotFound(resourceapi.Resource("resourceclaims"), name)
	}
	return c.DeepCopy(), nil
}

func (f *fakeAPI) onStale(_ context.Context, c StaleClaim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stale = append(f.stale, c)
}

func (f *fakeAPI) put(c *resourceapi.ResourceClaim) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims[c.Namespace+"/"+c.Name] = c.DeepCopy()
}

func (f *fakeAPI) delete(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.claims, "default/"+name)
}

func (f *fakeAPI) fail(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs[name] = err
}

func (f *fakeAPI) callsFor(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls["default/"+name]
}

func (f *fakeAPI) reported() []StaleClaim {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.stale)
}

// useAPI gives the env a fake API server and a settable clock, and restarts
// its State with them.
func (e *env) useAPI() (*fakeAPI, *fakeClock) {
	e.api = &fakeAPI{claims: map[string]*resourceapi.ResourceClaim{}, errs: map[string]error{}, calls: map[string]int{}}
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	e.now = clock.Now
	e.restart()
	return e.api, clock
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// prepareLive stores c in the fake API server, as the scheduler leaves it,
// and prepares it.
func (e *env) prepareLive(c *resourceapi.ResourceClaim) {
	e.t.Helper()
	e.api.put(c)
	if _, err := e.state.Prepare(e.ctx, c); err != nil {
		e.t.Fatal(err)
	}
}

// assertPrepared fails unless exactly the claims uids are prepared, each
// with its record and its spec.
func (e *env) assertPrepared(uids ...string) {
	e.t.Helper()
	slices.Sort(uids)
	if got := e.state.PreparedClaims(); fmt.Sprint(got) != fmt.Sprint(uids) {
		e.t.Errorf("prepared claims %v, want %v", got, uids)
	}
	store, _ := checkpoint.NewStore(e.ckptDir)
	records, _, err := store.List()
	if err != nil {
		e.t.Fatal(err)
	}
	var recorded []string
	for _, r := range records {
		recorded = append(recorded, r.ClaimUID)
	}
	slices.Sort(recorded)
	if fmt.Sprint(recorded) != fmt.Sprint(uids) {
		e.t.Errorf("recorded claims %v, want %v", recorded, uids)
	}
	entries := e.claimSpecFiles()
	if len(entries) != len(uids) {
		e.t.Errorf("%d CDI specs, want %d", len(entries), len(uids))
	}
	for _, uid := range uids {
		if _, err := os.Stat(e.specPath(uid)); err != nil {
			e.t.Errorf("spec of %s: %v", uid, err)
		}
	}
}

// wantTodaysRefusal checks the error of a prepare of claim two (uid-2)
// refused because claim one (uid-1) holds device.
func wantTodaysRefusal(t *testing.T, err error, device string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the prepare was not refused although a live claim holds %s", device)
	}
	for _, want := range []string{"default/two", "uid-2", "device " + device, "is already prepared for claim default/one (uid uid-1)", "a GPU is given to one claim at a time"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestPrepareUnpreparesAHolderGoneFromTheAPI: a device held by a recorded
// claim that no kubelet can use any more is freed by the prepare that
// needs it, whichever way the claim went.
func TestPrepareUnpreparesAHolderGoneFromTheAPI(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(api *fakeAPI, holder *resourceapi.ResourceClaim)
		reason string
	}{
		"deleted": {func(api *fakeAPI, _ *resourceapi.ResourceClaim) { api.delete("one") }, "no longer exists"},
		"created again with another UID": {func(api *fakeAPI, h *resourceapi.ResourceClaim) {
			h.UID = "uid-1-again"
			api.put(h)
		}, "has uid uid-1-again"},
		"deallocated": {func(api *fakeAPI, h *resourceapi.ResourceClaim) {
			h.Status.Allocation = nil
			api.put(h)
		}, "no longer allocated"},
		"allocated on another node": {func(api *fakeAPI, h *resourceapi.ResourceClaim) {
			h.Status.Allocation.Devices.Results[0].Pool = "node-b"
			api.put(h)
		}, "no device of gpu.nvidia.com in this node's pool node-a"},
		"allocated only devices of another driver": {func(api *fakeAPI, h *resourceapi.ResourceClaim) {
			h.Status.Allocation.Devices.Results[0].Driver = "nic.example.com"
			api.put(h)
		}, "no device of gpu.nvidia.com"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			api, _ := e.useAPI()
			holder := claim("uid-1", "one", result{request: "gpu", device: "gpu-2"})
			e.prepareLive(holder)
			tc.change(api, holder)

			two := claim("uid-2", "two", result{request: "gpu", device: "gpu-2"})
			api.put(two)
			if _, err := e.state.Prepare(e.ctx, two); err != nil {
				t.Fatalf("prepare with a stale holder: %v", err)
			}
			e.assertPrepared("uid-2")
			got := api.reported()
			if len(got) != 1 {
				t.Fatalf("stale claims reported: %+v, want claim one", got)
			}
			sc := got[0]
			if sc.Namespace != "default" || sc.Name != "one" || sc.UID != "uid-1" || fmt.Sprint(sc.Devices) != "[gpu-2]" ||
				sc.For != "default/two" || sc.Device != "gpu-2" || sc.PreparedAt.IsZero() || !strings.Contains(sc.Reason, tc.reason) {
				t.Errorf("reported %+v, want claim one on gpu-2 found by default/two, reason with %q", sc, tc.reason)
			}
			// The stale claim's own unprepare, should the kubelet send one
			// after all, is a no-op.
			if err := e.state.Unprepare(e.ctx, "default", "one", "uid-1"); err != nil {
				t.Error(err)
			}
			e.assertPrepared("uid-2")
		})
	}
}

// TestPrepareKeepsALiveHolder: a claim that exists with the recorded UID
// and an allocation on this node is never touched, even while it is being
// deleted (its pods may still run); the prepare fails with today's error.
func TestPrepareKeepsALiveHolder(t *testing.T) {
	e := newEnv(t)
	api, clock := e.useAPI()
	holder := claim("uid-1", "one", result{request: "gpu", device: "gpu-2"})
	e.prepareLive(holder)
	two := claim("uid-2", "two", result{request: "gpu", device: "gpu-2"})
	api.put(two)
	_, err := e.state.Prepare(e.ctx, two)
	wantTodaysRefusal(t, err, "gpu-2")
	if strings.Contains(err.Error(), "API server") {
		t.Errorf("refusal for a live holder mentions the API server: %v", err)
	}
	if n := api.callsFor("one"); n != 1 {
		t.Errorf("the holder was looked up %d times, want once", n)
	}

	now := metav1.NewTime(clock.Now())
	holder.DeletionTimestamp = &now
	holder.Finalizers = []string{"resource.kubernetes.io/delete-protection"}
	api.put(holder)
	_, err = e.state.Prepare(e.ctx, two)
	wantTodaysRefusal(t, err, "gpu-2")

	clock.Step(time.Hour)
	if removed, errs := e.state.SweepStale(e.ctx, time.Minute); len(removed) != 0 || len(errs) != 0 {
		t.Errorf("sweep removed %+v, errors %v; want a live claim kept", removed, errs)
	}
	e.assertPrepared("uid-1")
	if got := api.reported(); len(got) != 0 {
		t.Errorf("stale claims reported: %+v", got)
	}
}

// TestPrepareKeepsAHolderWhenTheAPIServerCannotBeAsked: unknown is never
// gone; the refusal says that the API server could not be asked.
func TestPrepareKeepsAHolderWhenTheAPIServerCannotBeAsked(t *testing.T) {
	e := newEnv(t)
	api, clock := e.useAPI()
	e.prepareLive(claim("uid-1", "one", result{request: "gpu", device: "gpu-2"}))
	api.delete("one")
	api.fail("", apierrors.NewServiceUnavailable("etcd is down"))
	_, err := e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-2"}))
	wantTodaysRefusal(t, err, "gpu-2")
	if !strings.Contains(err.Error(), "could not ask the API server") || !strings.Contains(err.Error(), "etcd is down") {
		t.Errorf("error %q does not say that the API server could not be asked", err)
	}
	clock.Step(time.Hour)
	removed, errs := e.state.SweepStale(e.ctx, time.Minute)
	if len(removed) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "default/one") || !strings.Contains(errs[0].Error(), "etcd is down") {
		t.Errorf("sweep removed %+v, errors %v; want claim one kept with an error naming it", removed, errs)
	}
	e.assertPrepared("uid-1")

	// Once the API server answers, the stale claim goes.
	api.fail("", nil)
	if _, err := e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-2"})); err != nil {
		t.Fatal(err)
	}
	e.assertPrepared("uid-2")
}

// TestPrepareDoesNotAskAboutAClaimBeingPrepared: a device reserved by a
// prepare that has not returned yet is refused at once: the kubelet wants
// that claim, whatever a lookup would say.
func TestPrepareDoesNotAskAboutAClaimBeingPrepared(t *testing.T) {
	e := newEnv(t)
	api, _ := e.useAPI()
	gpu3 := e.inv.Devices[3].UUID
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.edits.hook = func(uuid string) {
		if uuid == gpu3 {
			once.Do(func() { close(inside) })
			<-release
		}
	}
	done := make(chan error, 1)
	go func() {
		// Not in the fake API server: a lookup would call it gone.
		_, err := e.state.Prepare(e.ctx, claim("uid-1", "one", result{request: "gpu", device: "gpu-3"}))
		done <- err
	}()
	<-inside
	_, err := e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-3"}))
	close(release)
	wantTodaysRefusal(t, err, "gpu-3")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := api.callsFor("one"); n != 0 {
		t.Errorf("a claim being prepared was looked up %d times", n)
	}
	e.assertPrepared("uid-1")
}

// TestPrepareUndoesTheSharingOfAStaleHolder: the stale claim is
// unprepared the way Unprepare does it: spec, sharing settings, record.
func TestPrepareUndoesTheSharingOfAStaleHolder(t *testing.T) {
	e := newEnv(t)
	api, _ := e.useAPI()
	gpu := e.inv.Devices[0].UUID
	e.prepareLive(withConfig(claim("uid-1", "one", result{request: "gpu", device: "gpu-0"}), nil, tsConfig("Long")))
	if got := e.interval(gpu); got != configapi.LongTimeSlice {
		t.Fatalf("interval %s, want Long", got)
	}
	// The plugin restarts, and the claim is deleted meanwhile.
	e.restart()
	api.delete("one")
	if _, err := e.state.Prepare(e.ctx, claim("uid-2", "two", result{request: "gpu", device: "gpu-0"})); err != nil {
		t.Fatal(err)
	}
	if got := e.interval(gpu); got != configapi.DefaultTimeSlice {
		t.Errorf("interval after the stale claim went: %s, want Default", got)
	}
	e.assertPrepared("uid-2")
}

// TestPrepareFreesTheDevicesOfSeveralStaleHolders: each device's holder is
// checked; stale ones go even when a live one then refuses the prepare.
func TestPrepareFreesTheDevicesOfSeveralStaleHolders(t *testing.T) {
	e := newEnv(t)
	api, _ := e.useAPI()
	e.prepareLive(claim("uid-a", "a", result{request: "gpu", device: "gpu-0"}))
	e.prepareLive(claim("uid-b", "b", result{request: "gpu", device: "gpu-1"}))
	e.prepareLive(claim("uid-one", "one", result{request: "gpu", device: "gpu-2"}))
	e.prepareLive(claim("uid-c", "c", result{request: "gpu", device: "gpu-3"}))
	api.delete("a")
	api.delete("b")
	api.delete("c")
	if _, err := e.state.Prepare(e.ctx, claim("uid-x", "x", result{request: "gpu", device: "gpu-0"}, result{request: "gpu", device: "gpu-1"})); err != nil {
		t.Fatalf("prepare over two stale holders: %v", err)
	}
	_, err := e.state.Prepare(e.ctx, claim("uid-y", "y", result{request: "gpu", device: "gpu-3"}, result{request: "gpu", device: "gpu-2"}))
	if err == nil || !strings.Contains(err.Error(), "device gpu-2") || !strings.Contains(err.Error(), "already prepared for claim default/one") {
		t.Errorf("prepare over a stale and a live holder: %v, want refused for gpu-2", err)
	}
	e.assertPrepared("uid-x", "uid-one")
	var names []string
	for _, sc := range api.reported() {
		names = append(names, sc.Name)
	}
	slices.Sort(names)
	if fmt.Sprint(names) != "[a b c]" {
		t.Errorf("stale claims reported: %v, want a, b and c", names)
	}
}

// TestSweepStaleRemovesOnlyOldStaleRecords: the sweep leaves alone records
// younger than the grace period, live claims, claims the API server cannot
// be asked about and claims being worked on.
func TestSweepStaleRemovesOnlyOldStaleRecords(t *testing.T) {
	e := newEnv(t)
	api, clock := e.useAPI()
	for i, name := range []string{"old-gone", "live", "unknown", "busy"} {
		e.prepareLive(claim("uid-"+name, name, result{request: "gpu", device: fmt.Sprintf("gpu-%d", i)}))
	}
	clock.Step(10 * time.Minute)
	e.prepareLive(claim("uid-young-gone", "young-gone", result{request: "gpu", device: "gpu-4"}))
	clock.Step(time.Minute)
	for _, name := range []string{"old-gone", "unknown", "busy", "young-gone"} {
		api.delete(name)
	}
	api.fail("default/unknown", errors.New("connection refused"))
	unlockBusy := e.state.claims.Lock("uid-busy") // as a running prepare or unprepare holds it

	removed, errs := e.state.SweepStale(e.ctx, 5*time.Minute)
	if len(removed) != 1 || removed[0].Name != "old-gone" || removed[0].For != "" || fmt.Sprint(removed[0].Devices) != "[gpu-0]" {
		t.Errorf("removed %+v, want only old-gone", removed)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "default/unknown") || !strings.Contains(errs[0].Error(), "connection refused") {
		t.Errorf("errors %v, want one naming claim unknown", errs)
	}
	if n := api.callsFor("young-gone"); n != 0 {
		t.Errorf("a record younger than the grace period was looked up %d times", n)
	}
	if n := api.callsFor("busy"); n != 0 {
		t.Errorf("a claim being worked on was looked up %d times", n)
	}
	e.assertPrepared("uid-live", "uid-unknown", "uid-busy", "uid-young-gone")
	if got := api.reported(); len(got) != 1 || got[0].Name != "old-gone" {
		t.Errorf("reported %+v, want old-gone", got)
	}

	unlockBusy()
	clock.Step(5 * time.Minute)
	removed, _ = e.state.SweepStale(e.ctx, 5*time.Minute)
	var names []string
	for _, sc := range removed {
		names = append(names, sc.Name)
	}
	slices.Sort(names)
	if fmt.Sprint(names) != "[busy young-gone]" {
		t.Errorf("second sweep removed %v, want busy and young-gone", names)
	}
	e.assertPrepared("uid-live", "uid-unknown")

	// A grace period of zero checks every record; the live ones stay.
	api.fail("default/unknown", nil)
	removed, errs = e.state.SweepStale(e.ctx, 0)
	if len(removed) != 1 || removed[0].Name != "unknown" || len(errs) != 0 {
		t.Errorf("third sweep removed %+v, errors %v; want unknown", removed, errs)
	}
	e.assertPrepared("uid-live")
}

// TestSweepStaleWithoutLookupDoesNothing: without an API client the State
// keeps today's behaviour.
func TestSweepStaleWithoutLookupDoesNothing(t *testing.T) {
	e := newEnv(t)
	if _, err := e.state.Prepare(e.ctx, claim("uid-1", "one", result{request: "gpu", device: "gpu-0"})); err != nil {
		t.Fatal(err)
	}
	if removed, errs := e.state.SweepStale(e.ctx, 0); len(removed) != 0 || len(errs) != 0 {
		t.Errorf("removed %+v, errors %v", removed, errs)
	}
	e.assertPrepared("uid-1")
}

// TestEightClaimsDeletedWhileThePluginWasDown is the reported case: a
// kubelet-side client prepared 8 claims, the plugin crashed, the claims
// were deleted from the API server. The restarted plugin prepares a new
// claim on one of their GPUs, and the sweep removes the other seven.
func TestEightClaimsDeletedWhileThePluginWasDown(t *testing.T) {
	e := newEnv(t)
	api, clock := e.useAPI()
	for i := range 8 {
		name := fmt.Sprintf("bench-%d", i)
		e.prepareLive(claim("uid-"+name, name, result{request: "gpu", device: fmt.Sprintf("gpu-%d", i)}))
	}
	e.restart()
	for i := range 8 {
		api.delete(fmt.Sprintf("bench-%d", i))
	}
	e.prepareLive(claim("uid-new", "new", result{request: "gpu", device: "gpu-0"}))
	if got := len(e.state.PreparedClaims()); got != 8 {
		t.Errorf("%d claims prepared, want the new one and the 7 stale ones the prepare did not need", got)
	}
	clock.Step(time.Hour)
	removed, errs := e.state.SweepStale(e.ctx, 5*time.Minute)
	if len(removed) != 7 || len(errs) != 0 {
		t.Errorf("sweep removed %d claims, errors %v; want 7", len(removed), errs)
	}
	e.assertPrepared("uid-new")
	for i := 1; i < 8; i++ {
		if _, err := e.state.Prepare(e.ctx, claim(fmt.Sprintf("uid-next-%d", i), "next", result{request: "gpu", device: fmt.Sprintf("gpu-%d", i)})); err != nil {
			t.Errorf("gpu-%d after the sweep: %v", i, err)
		}
	}
}

// TestSweepNeverTouchesLiveClaimsUnderLoad runs sweeps (grace zero) while
// live claims are prepared and unprepared: none of them is ever reported
// stale, and the state stays consistent.
func TestSweepNeverTouchesLiveClaimsUnderLoad(t *testing.T) {
	e := newEnv(t)
	api, _ := e.useAPI()
	stop := make(chan struct{})
	var sweeps sync.WaitGroup
	sweeps.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, errs := e.state.SweepStale(e.ctx, 0); len(errs) != 0 {
				t.Errorf("sweep: %v", errs)
			}
		}
	})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for round := range 20 {
				uid := fmt.Sprintf("uid-%d-%d", w, round)
				c := claim(uid, uid, result{request: "gpu", device: fmt.Sprintf("gpu-%d", w)})
				api.put(c)
				if _, err := e.state.Prepare(e.ctx, c); err != nil {
					t.Error(err)
					return
				}
				if err := e.state.Unprepare(e.ctx, "default", uid, types.UID(uid)); err != nil {
					t.Error(err)
					return
				}
				// The kubelet unprepares before the claim goes.
				api.delete(uid)
			}
		})
	}
	wg.Wait()
	close(stop)
	sweeps.Wait()
	if got := api.reported(); len(got) != 0 {
		t.Errorf("live claims reported stale: %+v", got)
	}
	e.assertPrepared()
}

func TestKeyedMutexTryLock(t *testing.T) {
	k := newKeyedMutex()
	unlock, ok := k.TryLock("a")
	if !ok {
		t.Fatal("TryLock of a free key failed")
	}
	if _, ok := k.TryLock("a"); ok {
		t.Fatal("TryLock of a held key succeeded")
	}
	if u, ok := k.TryLock("b"); !ok {
		t.Fatal("TryLock of another key failed")
	} else {
		u()
	}
	unlock()
	unlock = k.Lock("a")
	if _, ok := k.TryLock("a"); ok {
		t.Fatal("TryLock of a key held by Lock succeeded")
	}
	unlock()
	if u, ok := k.TryLock("a"); !ok {
		t.Fatal("TryLock after unlock failed")
	} else {
		u()
	}
	if len(k.locks) != 0 {
		t.Errorf("%d entries left", len(k.locks))
	}
}

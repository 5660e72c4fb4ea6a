package mps

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	k8stesting "k8s.io/client-go/testing"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// recorded is a fake claim state: the claims recorded, as claims() of
// NewSharedGPUs returns them.
type recorded struct {
	mu     sync.Mutex
	claims map[string]sharing.Claim
}

func (r *recorded) add(c sharing.Claim) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claims[c.UID] = c
}

func (r *recorded) remove(uid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.claims, uid)
}

func (r *recorded) list() []sharing.Claim {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]sharing.Claim, 0, len(r.claims))
	for _, c := range r.claims {
		out = append(out, c)
	}
	return out
}

type sharedFixture struct {
	*fixture
	rec    *recorded
	shared *SharedGPUs
	inv    *inventory.Inventory
}

func newSharedFixture(t *testing.T, ready bool) *sharedFixture {
	t.Helper()
	f := &sharedFixture{fixture: newFixture(t, ready), rec: &recorded{claims: map[string]sharing.Claim{}}, inv: machine(t)}
	f.shared = f.newShared(t)
	return f
}

func (f *sharedFixture) newShared(t *testing.T) *SharedGPUs {
	t.Helper()
	s, err := NewSharedGPUs(f.opts, f.rec.list)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// share returns a claim with UID uid holding a share of GPU i of the mock
// machine.
func (f *sharedFixture) share(uid string, i int, memory int64, computeShares, computeTotal int64) sharing.Claim {
	d := f.inv.Devices[i]
	return sharing.Claim{UID: uid, Namespace: "team-a", Name: "share-" + uid[:8], Devices: []sharing.Device{{
		Name: devices.GPUName(d), Type: devices.KindGPU, UUID: d.UUID, Requests: []string{"gpu"},
		Share: &sharing.Share{ID: "share-" + uid, MemoryBytes: memory, ComputeShares: computeShares, ComputeTotal: computeTotal},
	}}}
}

// apply records the claim, as the claim state does before it calls Apply,
// and applies it.
func (f *sharedFixture) apply(t *testing.T, c sharing.Claim) sharing.Edits {
	t.Helper()
	f.rec.add(c)
	e, err := f.shared.Apply(f.ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// unprepare undoes the claim and then removes its record, as the claim
// state does.
func (f *sharedFixture) unprepare(t *testing.T, c sharing.Claim) {
	t.Helper()
	if err := f.shared.Undo(f.ctx, c); err != nil {
		t.Fatal(err)
	}
	f.rec.remove(c.UID)
}

func (f *sharedFixture) gpuPod(t *testing.T, i int) (*corev1.Pod, bool) {
	t.Helper()
	p, err := f.client.CoreV1().Pods(testNamespace).Get(context.Background(), GPUPodName(f.inv.Devices[i].UUID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return p, true
}

func (f *sharedFixture) gpuDir(i int) string {
	return filepath.Join(f.opts.BaseDir, "gpu-"+f.inv.Devices[i].UUID)
}

func uid(n int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n) }

const gib = 1 << 30

func TestFirstShareStartsTheGPUDaemonAndSecondReusesIt(t *testing.T) {
	f := newSharedFixture(t, true)
	gpu := f.inv.Devices[0].UUID
	name := devices.GPUName(f.inv.Devices[0])
	a := f.share(uid(1), 0, 4*gib, 30, 100)
	b := f.share(uid(2), 0, 8*gib+512<<10, 0, 0) // no compute limit; memory not a whole MiB

	ea := f.apply(t, a)
	p, ok := f.gpuPod(t, 0)
	if !ok {
		t.Fatal("no daemon pod after the first share's Apply")
	}
	if p.Name != "gpudra-mps-"+strings.ToLower(gpu) || p.Labels[LabelGPUUUID] != gpu || p.Annotations[annotationGPUUUID] != gpu ||
		p.Labels[LabelClaimUID] != "" || p.Spec.NodeName != testNode {
		t.Errorf("pod %s: labels %v, annotations %v, node %q", p.Name, p.Labels, p.Annotations, p.Spec.NodeName)
	}
	ctr := p.Spec.Containers[0]
	if got := envValue(ctr, "CUDA_VISIBLE_DEVICES"); got != gpu {
		t.Errorf("CUDA_VISIBLE_DEVICES = %q, want the one GPU %q", got, gpu)
	}
	if !slices.Equal(ctr.Command, []string{mockDaemonBinary}) {
		t.Errorf("command = %q: the daemon of a shared GPU has no limits of its own", ctr.Command)
	}
	for _, sub := range []string{"pipe", "log", "shm"} {
		if !exists(filepath.Join(f.gpuDir(0), sub)) {
			t.Errorf("directory %s/%s not created", f.gpuDir(0), sub)
		}
	}

	eb := f.apply(t, b)
	if n := creates(f.client); n != 1 {
		t.Errorf("%d pod creations for two shares of one GPU, want 1", n)
	}
	for _, tc := range []struct {
		edits sharing.Edits
		env   []string
	}{
		{ea, []string{"CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4096M", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=30"}},
		{eb, []string{"CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8192M"}},
	} {
		if len(tc.edits.Claim.Env) != 0 || len(tc.edits.Claim.Mounts) != 0 || len(tc.edits.Devices) != 1 {
			t.Fatalf("edits %+v, want edits of device %s only", tc.edits, name)
		}
		e := tc.edits.Devices[name]
		if !slices.Equal(e.Env, tc.env) {
			t.Errorf("env = %q, want %q", e.Env, tc.env)
		}
		mounts := map[string]string{}
		for _, m := range e.Mounts {
			mounts[m.ContainerPath] = m.HostPath
		}
		want := map[string]string{"/tmp/nvidia-mps": filepath.Join(f.gpuDir(0), "pipe"), "/dev/shm": filepath.Join(f.gpuDir(0), "shm")}
		if !reflect.DeepEqual(mounts, want) {
			t.Errorf("mounts = %v, want %v (no log directory: it names other claims' processes)", mounts, want)
		}
	}

	again, err := f.shared.Apply(f.ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, ea) || creates(f.client) != 1 {
		t.Errorf("a repeated Apply changed the edits or the daemon (%d creations):\n%+v\n%+v", creates(f.client), ea, again)
	}
}

func TestUndoStopsTheGPUDaemonWithTheLastShareOnly(t *testing.T) {
	f := newSharedFixture(t, true)
	a, b, c := f.share(uid(1), 0, gib, 0, 0), f.share(uid(2), 0, gib, 0, 0), f.share(uid(3), 0, 2*gib, 0, 0)
	f.apply(t, a)
	f.apply(t, b)

	f.unprepare(t, a)
	if _, ok := f.gpuPod(t, 0); !ok || !exists(f.gpuDir(0)) {
		t.Fatal("Undo of one of two shares stopped the GPU's daemon, which the other share uses")
	}
	// The claim state still lists b while it undoes it.
	for i := range 2 { // idempotent
		if err := f.shared.Undo(f.ctx, b); err != nil {
			t.Fatalf("Undo #%d: %v", i+1, err)
		}
		if _, ok := f.gpuPod(t, 0); ok {
			t.Errorf("daemon pod still there after Undo #%d of the last share", i+1)
		}
		if exists(f.gpuDir(0)) {
			t.Errorf("GPU directory still there after Undo #%d of the last share", i+1)
		}
	}
	f.rec.remove(b.UID)

	// A share prepared right after gets a daemon of its own.
	e := f.apply(t, c)
	_, ok := f.gpuPod(t, 0)
	if !ok || creates(f.client) != 2 || !exists(filepath.Join(f.gpuDir(0), "pipe")) {
		t.Fatalf("no fresh daemon for a share after the last Undo (pod %v, %d creations)", ok, creates(f.client))
	}
	if !slices.Contains(e.Devices[c.Devices[0].Name].Env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=2048M") {
		t.Errorf("edits of the new share: %v", e.Devices)
	}
}

func TestSharesOfDifferentGPUsHaveTheirOwnDaemons(t *testing.T) {
	f := newSharedFixture(t, true)
	a, b := f.share(uid(1), 0, gib, 0, 0), f.share(uid(2), 1, gib, 0, 0)
	ea, eb := f.apply(t, a), f.apply(t, b)
	if creates(f.client) != 2 {
		t.Fatalf("%d pod creations for shares of two GPUs, want 2", creates(f.client))
	}
	pipe := func(e sharing.Edits) string { return e.Devices[devices.GPUName(f.inv.Devices[0])].Mounts[0].HostPath }
	if got := pipe(ea); got != filepath.Join(f.gpuDir(0), "pipe") {
		t.Errorf("share of GPU 0 connects to %s", got)
	}
	if got := eb.Devices[devices.GPUName(f.inv.Devices[1])].Mounts[0].HostPath; got != filepath.Join(f.gpuDir(1), "pipe") {
		t.Errorf("share of GPU 1 connects to %s", got)
	}
	f.unprepare(t, a)
	if _, ok := f.gpuPod(t, 0); ok {
		t.Error("GPU 0's daemon kept although its only share was released")
	}
	if _, ok := f.gpuPod(t, 1); !ok {
		t.Error("releasing a share of GPU 0 stopped GPU 1's daemon")
	}
}

func TestShareClaimsThatCannotWorkAreRefusedWithoutSideEffects(t *testing.T) {
	f := newSharedFixture(t, false) // an idle fake kubelet makes no API calls
	g0, g1 := f.inv.Devices[0], f.inv.Devices[1]
	twoGPUs := f.share(uid(1), 0, gib, 0, 0)
	twoGPUs.Devices = append(twoGPUs.Devices, f.share(uid(1), 1, gib, 0, 0).Devices[0])
	mig := f.share(uid(2), 0, gib, 0, 0)
	mig.Devices[0].Type, mig.Devices[0].UUID, mig.Devices[0].ParentUUID = devices.KindMIG, "MIG-5c5c5c5c-0000-4000-8000-000000000001", g0.UUID
	badUUID := f.share(uid(3), 0, gib, 0, 0)
	badUUID.Devices[0].UUID = "GPU-../../etc"

	for _, tc := range []struct {
		name  string
		claim sharing.Claim
		want  []string
	}{
		{"shares of two GPUs", twoGPUs, []string{twoGPUs.Ref(), devices.GPUName(g0), g0.UUID, devices.GPUName(g1), g1.UUID,
			"one MPS control daemon", "one claim per GPU"}},
		{"share of a MIG device", mig, []string{mig.Ref(), "MIG device", "request the MIG device whole"}},
		{"invalid UUID", badUUID, []string{badUUID.Ref(), "not a GPU UUID"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.shared.Apply(f.ctx, tc.claim)
			if err == nil {
				t.Fatal("Apply accepted the claim")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if err := f.shared.Undo(f.ctx, tc.claim); err != nil {
				t.Errorf("Undo after the refused Apply: %v", err)
			}
		})
	}
	for _, a := range f.client.Actions() {
		if a.GetVerb() != "delete" && a.GetVerb() != "get" { // Undo's idempotent cleanup may look
			t.Errorf("API call for a refused claim: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	if entries, _ := os.ReadDir(f.opts.BaseDir); len(entries) != 0 {
		t.Errorf("directories created for refused claims: %v", entries)
	}
}

func TestClaimsWithoutSharesCostNothing(t *testing.T) {
	f := newSharedFixture(t, false)
	claim := claimOf(gpuDevice(f.inv.Devices[0], nil))
	if e, err := f.shared.Apply(f.ctx, claim); err != nil || !reflect.DeepEqual(e, sharing.Edits{}) {
		t.Fatalf("Apply of a claim without shares: %+v, %v", e, err)
	}
	if err := f.shared.Undo(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	if n := len(f.client.Actions()); n != 0 {
		t.Errorf("%d API calls for a claim without shares", n)
	}
}

func TestConcurrentSharesOfOneGPUKeepTheDaemonIffAShareIsHeld(t *testing.T) {
	f := newSharedFixture(t, true)
	// prepared holds the shares whose Apply returned and whose Undo has
	// not begun: no daemon Pod of their GPU may be deleted meanwhile. The
	// fake API server checks that at every delete, after some latency that
	// widens the window between a last Undo's decision and the deletion,
	// where a new Apply must not slip in.
	var prepared sync.Map // claim UID -> GPU pod name
	violations := make(chan string, 100)
	f.client.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		time.Sleep(time.Millisecond) // API latency
		name := a.(k8stesting.DeleteAction).GetName()
		prepared.Range(func(uid, pod any) bool {
			if pod == name {
				select {
				case violations <- fmt.Sprintf("daemon pod %s deleted while share %s is prepared", name, uid):
				default:
				}
			}
			return true
		})
		return false, nil, nil
	})
	const workers, rounds = 8, 16
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	held := make([]bool, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gpu := w % 2 // shares of two GPUs, in parallel
			for r := range rounds {
				c := f.share(uid(1+w*rounds+r), gpu, int64(1+w)*gib, 1, 100)
				f.rec.add(c)
				if _, err := f.shared.Apply(f.ctx, c); err != nil {
					errs <- fmt.Errorf("Apply of %s: %w", c.UID, err)
					return
				}
				// No other share's Undo stops the daemon that this
				// prepared share uses.
				p, err := f.client.CoreV1().Pods(testNamespace).Get(f.ctx, GPUPodName(f.inv.Devices[gpu].UUID), metav1.GetOptions{})
				if err != nil || !podReady(p) || !exists(filepath.Join(f.gpuDir(gpu), "pipe")) {
					errs <- fmt.Errorf("share %s prepared, but its GPU's daemon is gone or not ready (%v)", c.UID, err)
					return
				}
				prepared.Store(c.UID, GPUPodName(f.inv.Devices[gpu].UUID))
				if r == rounds-1 && w%4 == 0 { // shares of GPU 0 stay prepared, none of GPU 1
					held[w] = true
					continue
				}
				prepared.Delete(c.UID)
				if err := f.shared.Undo(f.ctx, c); err != nil {
					errs <- fmt.Errorf("Undo of %s: %w", c.UID, err)
					return
				}
				f.rec.remove(c.UID)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for len(violations) > 0 {
		t.Error(<-violations)
	}
	prepared.Clear() // the shares that stayed are released below
	for gpu := range 2 {
		want := false
		for w := gpu; w < workers; w += 2 {
			want = want || held[w]
		}
		_, pod := f.gpuPod(t, gpu)
		if pod != want || exists(f.gpuDir(gpu)) != want {
			t.Errorf("GPU %d: daemon pod %v, directories %v; want both %v (a share held: %v)", gpu, pod, exists(f.gpuDir(gpu)), want, want)
		}
	}
	// Releasing the shares that stayed leaves nothing behind.
	for _, c := range f.rec.list() {
		f.unprepare(t, c)
	}
	for gpu := range 2 {
		if _, ok := f.gpuPod(t, gpu); ok || exists(f.gpuDir(gpu)) {
			t.Errorf("GPU %d: daemon or directories left after every share was released", gpu)
		}
	}
}

func TestSharesWaitForAStartingDaemonWithoutHoldingOthersUp(t *testing.T) {
	f := newSharedFixture(t, false) // the daemon does not become ready yet
	a, b, other := f.share(uid(1), 0, gib, 0, 0), f.share(uid(2), 0, gib, 0, 0), f.share(uid(3), 0, gib, 0, 0)
	done := make(chan error, 2)
	go func() { _, err := f.shared.Apply(f.ctx, a); done <- err }() // not recorded: only in progress
	poll := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(f.ctx, 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	poll("daemon pod created", func() bool { _, ok := f.gpuPod(t, 0); return ok })

	// While a waits for the daemon, the Undo of another claim of the GPU
	// returns at once, and keeps the daemon that a's Apply uses.
	undone := make(chan error, 1)
	go func() { undone <- f.shared.Undo(f.ctx, other) }()
	select {
	case err := <-undone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Undo of another claim waited for the daemon to become ready")
	}
	if _, ok := f.gpuPod(t, 0); !ok {
		t.Fatal("Undo stopped the daemon that an Apply in progress waits for")
	}
	go func() { _, err := f.shared.Apply(f.ctx, b); done <- err }()
	f.kubelet.ready.Store(true)
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if creates(f.client) != 1 {
		t.Errorf("%d pod creations, want 1", creates(f.client))
	}
}

func TestUndoAfterAFailedShareApplyRemovesTheDaemon(t *testing.T) {
	f := newSharedFixture(t, false)
	f.opts.ReadyTimeout = 200 * time.Millisecond
	f.shared = f.newShared(t)
	a := f.share(uid(1), 0, gib, 0, 0)
	f.rec.add(a)
	_, err := f.shared.Apply(f.ctx, a)
	if err == nil {
		t.Fatal("Apply succeeded although the daemon never became ready")
	}
	for _, want := range []string{a.Ref(), GPUPodName(f.inv.Devices[0].UUID), f.inv.Devices[0].UUID, "not ready after 200ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	f.unprepare(t, a)
	if _, ok := f.gpuPod(t, 0); ok || exists(f.gpuDir(0)) {
		t.Error("daemon or directories left by Undo after a failed Apply")
	}
}

func TestRestartedSharedGPUsKeepTheDaemonAndUndo(t *testing.T) {
	f := newSharedFixture(t, true)
	a := f.share(uid(1), 0, gib, 50, 100)
	before := f.apply(t, a)

	// A restarted, then upgraded plugin: new SharedGPUs, same records.
	after, err := f.newShared(t).Apply(f.ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	f.opts.Image = "localhost/gpudra/gpudra:next"
	if _, err := f.newShared(t).Apply(f.ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.gpuPod(t, 0); !ok || creates(f.client) != 1 {
		t.Errorf("a restart or upgrade replaced the running daemon of a shared GPU (%d creations)", creates(f.client))
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("edits changed across the restart:\n%+v\n%+v", before, after)
	}
	if err := f.newShared(t).Undo(f.ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.gpuPod(t, 0); ok || exists(f.gpuDir(0)) {
		t.Error("Undo by a restarted SharedGPUs left the daemon or its directories")
	}
}

func TestSharedSweepRemovesDaemonsOfGPUsWithoutPreparedShares(t *testing.T) {
	f := newSharedFixture(t, true)
	kept, orphan := f.share(uid(1), 0, gib, 0, 0), f.share(uid(2), 1, gib, 0, 0)
	f.apply(t, kept)
	f.apply(t, orphan)
	f.rec.remove(orphan.UID) // a crash before its record was written
	claimDaemon, _ := twoGPUClaim(t)
	if _, err := f.mgr.Apply(f.ctx, claimDaemon); err != nil {
		t.Fatal(err)
	}
	// A shared-GPU daemon of another node, and a stray directory.
	otherNode := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: GPUPodName(f.inv.Devices[2].UUID) + "-x", Namespace: testNamespace,
		Labels:      map[string]string{LabelComponent: componentValue, LabelGPUUUID: f.inv.Devices[2].UUID},
		Annotations: map[string]string{annotationGPUUUID: f.inv.Devices[2].UUID}}, Spec: corev1.PodSpec{NodeName: "node-2"}}
	if _, err := f.client.CoreV1().Pods(testNamespace).Create(f.ctx, otherNode, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.gpuDir(2), "pipe"), 0o755); err != nil {
		t.Fatal(err)
	}

	// Manager's Sweep leaves the shared GPUs' daemons and directories alone.
	if err := f.newManager(t).Sweep(f.ctx, func(uid string) bool { return uid == claimDaemon.UID }); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if !exists(f.gpuDir(i)) {
			t.Fatalf("Manager.Sweep removed the directory of shared GPU %d", i)
		}
	}
	if _, ok := f.gpuPod(t, 1); !ok {
		t.Fatal("Manager.Sweep removed a shared GPU's daemon")
	}

	heldGPUs := map[string]bool{f.inv.Devices[0].UUID: true}
	if err := f.newShared(t).Sweep(f.ctx, func(gpu string) bool { return heldGPUs[gpu] }); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.gpuPod(t, 0); !ok || !exists(f.gpuDir(0)) {
		t.Error("Sweep removed the daemon of a GPU with a prepared share")
	}
	if _, ok := f.gpuPod(t, 1); ok || exists(f.gpuDir(1)) {
		t.Error("Sweep left the daemon of a GPU without prepared shares")
	}
	if exists(f.gpuDir(2)) {
		t.Error("Sweep left the stray directory of a GPU without prepared shares")
	}
	if _, err := f.client.CoreV1().Pods(testNamespace).Get(f.ctx, otherNode.Name, metav1.GetOptions{}); err != nil {
		t.Error("Sweep removed a daemon of another node")
	}
	if _, ok := f.pod(t); !ok || !exists(filepath.Join(f.opts.BaseDir, claimDaemon.UID)) {
		t.Error("SharedGPUs.Sweep removed a claim's daemon")
	}
}

func TestGPUDaemonPodRunsTheDriversDaemonWithoutLimits(t *testing.T) {
	const gpu = "GPU-8F3E2A10-0000-4000-8000-00000000CAFE"
	p := buildPod(podSpec{Meta: gpuPodMeta(gpu), Config: &daemonConfig{UUIDs: []string{gpu}}, Dirs: newGPUDirs("/var/lib/gpudra/mps", gpu),
		Namespace: testNamespace, NodeName: testNode, Image: "img", HostDriverRoot: "/run/nvidia/driver"})
	if errs := validation.IsDNS1123Label(p.Name); len(errs) > 0 || p.Name != "gpudra-mps-"+strings.ToLower(gpu) {
		t.Errorf("pod name %q: %v", p.Name, errs)
	}
	if errs := validation.IsValidLabelValue(p.Labels[LabelGPUUUID]); len(errs) > 0 {
		t.Errorf("GPU label %q: %v", p.Labels[LabelGPUUUID], errs)
	}
	ctr := p.Spec.Containers[0]
	script := ctr.Command[len(ctr.Command)-1]
	if !strings.Contains(script, "nvidia-cuda-mps-control -f &") || strings.Contains(script, "set_default") {
		t.Errorf("script of a shared GPU's daemon:\n%s", script)
	}
	if envValue(ctr, "CUDA_VISIBLE_DEVICES") != gpu {
		t.Errorf("env %v", ctr.Env)
	}
	hostPaths := map[string]bool{}
	for _, v := range p.Spec.Volumes {
		hostPaths[v.HostPath.Path] = true
	}
	if !hostPaths["/var/lib/gpudra/mps/gpu-"+gpu+"/pipe"] {
		t.Errorf("volumes %v", hostPaths)
	}
	if long := "GPU-" + strings.Repeat("a", 80); len(validation.IsDNS1123Label(GPUPodName(long))) > 0 || GPUPodName(long) == GPUPodName(long+"b") {
		t.Errorf("GPUPodName of a long UUID: %q", GPUPodName(long))
	}
}

func TestNewSharedGPUsNeedsTheRecordedClaims(t *testing.T) {
	f := newFixture(t, false)
	if _, err := NewSharedGPUs(f.opts, nil); err == nil || !strings.Contains(err.Error(), "recorded claims") {
		t.Errorf("NewSharedGPUs without claims: %v", err)
	}
}

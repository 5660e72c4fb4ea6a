// Package crash kills the claim state's process with SIGKILL at random
// points during prepares and unprepares, restarts it, and checks after every
// restart that the checkpoint and the CDI directory are consistent with what
// the killed process reported as done.
//
// The test binary runs itself as the child (TestCrashChild). Kill points are
// chosen several ways, each seeded and logged:
//   - "delay": a random delay (0-30 ms) after the child is ready, while its
//     workers prepare and unprepare;
//   - "fsevent": right after the k-th file-system event (inotify) that the
//     child causes in the CDI or checkpoint directory, k random: a temporary
//     file created, written, renamed into place, a file removed. The kill
//     then lands inside a durable write or removal (between the rename and
//     the directory fsync, between a spec and its record...), without any
//     hook in the production code;
//   - "startup": a random delay from the child's start, so that some kills
//     land in the checkpoint load and the start-up reconcile;
//   - "migevent" (TestCrashConsistencyDynamicMIG only): right after the k-th
//     file-system event in the directory of the mock machine's MIG state
//     file, which the mock rewrites durably at every MIG mode switch and
//     GPU/compute instance creation or destruction: the kill then lands
//     inside a MIG device's creation or destruction (between its GPU
//     instance and its compute instance...);
//   - "shareevent" (TestCrashConsistencyShares only): right after the k-th
//     file-system event in the directory of the fake shares applier's
//     per-GPU daemon markers: the kill then lands inside the start or the
//     stop of a shared GPU's daemon;
//   - "driverspec": right after the k-th file-system event on the
//     driver-wide CDI spec or its temporary file, in a child whose start-up
//     writes it (it is missing, or the parent made it stale): the kill then
//     lands inside that write.
//
// TestCrashConsistencyDynamicMIG runs the same kills over partitionable
// GPUs whose MIG devices the claims' prepares create (see dynamicmig_test.go),
// TestCrashConsistencyShares over claims that share GPUs by consumable
// capacity (see shares_test.go).
//
// Each child starts as the plugin does: it writes the driver-wide CDI spec,
// then opens the claim state with Options.UseDriverSpec, so that every
// prepared device has the CDI IDs Naming.DeviceIDs (the driver spec's
// device, then the claim's) and claim specs hold only their own edits (see
// driverspec_test.go for the driver spec's invariants).
// TestCrashConsistencyLegacySpecs runs the static kills with a plugin from
// before the driver spec (self-contained claim specs); pkg/claimstate's
// TestClaimOfAnOlderPluginKeepsWorking covers the upgrade between both.
//
// GPUDRA_CRASH_KILLS sets the number of kills (default 200, 40 with -short);
// GPUDRA_CRASH_SEED replays a run.
package crash

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

const (
	driverName = "gpu.nvidia.com"
	nodeName   = "node-crash"
	machine    = "dgxh100"
	hookPath   = "/usr/bin/nvidia-cdi-hook"
	bootID     = "crash-test-boot"
	// workers is how many goroutines of the child prepare and unprepare
	// at the same time; each owns its own claims.
	workers = 3
	// childTimeout bounds one child's run before it is killed regardless.
	childTimeout = 20 * time.Second
)

// dirs are the directories that survive the child: the plugin's state.
type dirs struct {
	DriverRoot string `json:"driverRoot"`
	CDI        string `json:"cdi"`
	Checkpoint string `json:"checkpoint"`
	// MIGState is the mock machine's MIG state file (dynamic MIG), alone
	// in its directory.
	MIGState string `json:"migState,omitempty"`
	// Shares is the directory of the fake shares applier's daemon
	// markers (GPU shares); empty: no shares applier.
	Shares string `json:"shares,omitempty"`
}

// scenario selects a variant of the test; the zero value is the static one.
type scenario struct {
	// DynamicMIG: partitionable GPUs, the MIG manager over a mock machine
	// whose MIG state lives in Dirs.MIGState, and the claims of
	// migTestClaims.
	DynamicMIG bool `json:"dynamicMIG,omitempty"`
	// Shares: the claims of shareTestClaims, shares of GPUs applied by
	// the fake shares applier over Dirs.Shares.
	Shares bool `json:"shares,omitempty"`
	// LegacySpecs: a plugin from before the driver-wide spec, whose claim
	// specs are self-contained (no driver spec, no UseDriverSpec).
	LegacySpecs bool `json:"legacySpecs,omitempty"`
}

func (sc scenario) String() string {
	switch {
	case sc.DynamicMIG:
		return "dynamic MIG"
	case sc.Shares:
		return "GPU shares"
	case sc.LegacySpecs:
		return "static, self-contained claim specs"
	}
	return "static"
}

// testClaims are the claims the child works on: one GPU each, and one with
// three GPUs. Their UIDs and devices never change, so their CDI device IDs
// are known in advance.
func testClaims() []*resourceapi.ResourceClaim {
	return makeClaims("claim", 0, [][]string{{"gpu-0"}, {"gpu-1"}, {"gpu-2"}, {"gpu-3"}, {"gpu-4"}, {"gpu-5", "gpu-6", "gpu-7"}})
}

// scenarioClaims are the claims of the scenario.
func scenarioClaims(sc scenario) []*resourceapi.ResourceClaim {
	switch {
	case sc.DynamicMIG:
		return migTestClaims()
	case sc.Shares:
		return shareTestClaims()
	}
	return testClaims()
}

// makeClaims returns one allocated claim per device list, named
// <name>-<i>, their UIDs told apart by group.
func makeClaims(name string, group int, devices [][]string) []*resourceapi.ResourceClaim {
	var out []*resourceapi.ResourceClaim
	for i, devs := range devices {
		c := &resourceapi.ResourceClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "crash", Name: fmt.Sprintf("%s-%d", name, i), UID: types.UID(fmt.Sprintf("0c4a5400-0000-4000-8%03d-%012d", group, i))},
			Status:     resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}},
		}
		for _, d := range devs {
			c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results,
				resourceapi.DeviceRequestAllocationResult{Request: "gpus", Driver: driverName, Pool: nodeName, Device: d})
		}
		out = append(out, c)
	}
	return out
}

// wantShareIDs are the share IDs of c's results, "" for a result without
// one: those a prepare of c must return.
func wantShareIDs(c *resourceapi.ResourceClaim) []string {
	var ids []string
	for _, r := range c.Status.Allocation.Devices.Results {
		id := ""
		if r.ShareID != nil {
			id = string(*r.ShareID)
		}
		ids = append(ids, id)
	}
	return ids
}

// wantIDs are the CDI device IDs a prepare of c must return: per device,
// the driver spec's device and the claim's (Naming.DeviceIDs), or the
// claim's alone with legacySpecs.
func wantIDs(c *resourceapi.ResourceClaim, legacySpecs bool) []string {
	n := cdi.NewNaming(driverName)
	var ids []string
	for _, r := range c.Status.Allocation.Devices.Results {
		if legacySpecs {
			ids = append(ids, n.DeviceID(string(c.UID), r.Device))
		} else {
			ids = append(ids, n.DeviceIDs(string(c.UID), r.Device)...)
		}
	}
	return ids
}

// claimModel is what the parent knows about one claim from the child's
// reports.
type claimModel struct {
	prepared bool   // state after the last completed operation
	inflight string // operation begun but not reported done ("" if none)
	// touched tells that the child began an operation on the claim in
	// this round.
	touched bool
	// migUUIDs are the recorded UUIDs of the claim's dynamic MIG devices
	// at the last check (nil when it was not prepared).
	migUUIDs []string
}

type killMode string

const (
	killDelay   killMode = "delay"
	killFSEvent killMode = "fsevent"
	killStartup killMode = "startup"
	killMIG     killMode = "migevent"
	killShare   killMode = "shareevent"
	// killDriverSpec: right after the k-th file-system event on the
	// driver-wide spec or its temporary file, when the child's start-up
	// has to write it (see driverspec_test.go).
	killDriverSpec killMode = "driverspec"
)

// stats count what the run covered; they are logged at the end.
type stats struct {
	kills             map[killMode]int
	killedInFlight    int // kills with at least one operation in flight
	inflightPrepared  int // interrupted operations found prepared after restart
	inflightGone      int // interrupted operations found not prepared
	opsDone           int
	maxTempsLeft      map[string]int // by directory
	readyBeforeKill   int
	startupTimeTotal  time.Duration
	startupTimeCount  int
	checkedRestarts   int
	repeatedPrepares  int
	specsRecreated    int
	orphansRemoved    int
	childOutputErrors int
	mig               migStats    // dynamic MIG only
	shares            sharesStats // GPU shares only
	driver            driverSpecStats
}

func killCount(t *testing.T) int {
	if s := os.Getenv("GPUDRA_CRASH_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("GPUDRA_CRASH_KILLS=%q: want a positive number", s)
		}
		return n
	}
	if testing.Short() {
		return 40
	}
	return 200
}

func seed(t *testing.T) uint64 {
	if s := os.Getenv("GPUDRA_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GPUDRA_CRASH_SEED=%q: want a number", s)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

func TestCrashConsistency(t *testing.T) {
	runCrashTest(t, scenario{})
}

// TestCrashConsistencyLegacySpecs: the static kills with a plugin from
// before the driver-wide spec.
func TestCrashConsistencyLegacySpecs(t *testing.T) {
	runCrashTest(t, scenario{LegacySpecs: true})
}

// runCrashTest kills children, over static GPUs, partitionable ones
// (sc.DynamicMIG) or shared ones (sc.Shares), and checks the invariants
// after every kill.
func runCrashTest(t *testing.T, sc scenario) {
	if os.Getenv(childEnv) != "" {
		t.Skip("this is the child process")
	}
	kills, sd := killCount(t), seed(t)
	t.Logf("crash test (%s): %d kills, seed %d (replay with GPUDRA_CRASH_SEED=%d GPUDRA_CRASH_KILLS=%d)", sc, kills, sd, sd, kills)
	rng := rand.New(rand.NewPCG(sd, 0))

	root := t.TempDir()
	d := dirs{DriverRoot: filepath.Join(root, "driver"), CDI: filepath.Join(root, "cdi"), Checkpoint: filepath.Join(root, "plugin", "claims")}
	watched := []string{d.CDI, d.Checkpoint}
	if sc.DynamicMIG {
		d.MIGState = filepath.Join(root, "mig", mockmachine.MIGStateFile)
		watched = append(watched, filepath.Dir(d.MIGState))
	}
	if sc.Shares {
		d.Shares = filepath.Join(root, "shares")
		watched = append(watched, d.Shares)
	}
	_, inv := mockmachinetest.Machine(t, machine, nodeName)
	mockmachinetest.Host(t, d.DriverRoot, inv)
	ctx := klog.NewContext(context.Background(), logr.Discard())
	for _, dir := range watched {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	for _, dir := range watched {
		if err := watcher.Add(dir); err != nil {
			t.Fatal(err)
		}
	}

	claims := scenarioClaims(sc)
	if sc.DynamicMIG {
		checkMIGScenario(t, ctx, d, claims)
	}
	if sc.Shares {
		checkSharesScenario(t, ctx, d, claims)
	}
	model := map[string]*claimModel{}
	for _, c := range claims {
		model[string(c.UID)] = &claimModel{}
	}
	st := &stats{kills: map[killMode]int{}, maxTempsLeft: map[string]int{}}
	modes := []killMode{killDelay, killFSEvent, killStartup}
	if sc.DynamicMIG {
		modes = append(modes, killMIG)
	}
	if sc.Shares {
		modes = append(modes, killShare)
	}
	for i := range kills {
		mode := modes[rng.IntN(len(modes))]
		if w := driverSpecToWrite(t, d, sc, st); w == writeMissing || (w == writeStale && rng.IntN(2) == 0) {
			mode = killDriverSpec
		}
		childSeed := rng.Uint64()
		cfg := childConfig{Dirs: d, Seed: childSeed, scenario: sc}
		events, waitErr, stderr := runAndKill(t, cfg, mode, rng, watcher, st)
		st.kills[mode]++
		applyEvents(t, i, mode, events, model, st)
		if ws, ok := waitErr.(*exec.ExitError); !ok || ws.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d (%s): the child did not die of SIGKILL: %v\nstderr:\n%s", i, mode, waitErr, stderr)
		}
		if bytes.Contains(stderr, []byte("DATA RACE")) {
			t.Fatalf("kill %d: the child reported a data race:\n%s", i, stderr)
		}
		if t.Failed() {
			t.Fatalf("kill %d (%s, child seed %d) broke an invariant; stderr of the child:\n%s", i, mode, childSeed, stderr)
		}
		verifyAfterRestart(t, ctx, i, d, sc, claims, model, st, rng)
		if t.Failed() {
			t.Fatalf("kill %d (%s, child seed %d) broke an invariant", i, mode, childSeed)
		}
	}
	finalCleanup(t, ctx, d, sc, claims)

	t.Logf("kill points tried: %d (delay after ready %d, file-system event %d, start-up %d); kills with an operation in flight: %d; "+
		"interrupted operations found prepared %d / not prepared %d; operations completed by the children: %d; repeated prepares checked: %d; "+
		"specs re-created by reconcile: %d; orphans removed: %d; temporary files of interrupted writes left at most in the CDI dir %d, in the checkpoint dir %d; mean child start-up: %v",
		kills, st.kills[killDelay], st.kills[killFSEvent], st.kills[killStartup], st.killedInFlight,
		st.inflightPrepared, st.inflightGone, st.opsDone, st.repeatedPrepares, st.specsRecreated, st.orphansRemoved, st.maxTempsLeft[d.CDI], st.maxTempsLeft[d.Checkpoint],
		meanStartup(st))
	if sc.DynamicMIG {
		logMIGStats(t, st)
	}
	if sc.Shares {
		logSharesStats(t, st)
	}
	logDriverSpecStats(t, st)
	if kills >= 50 && st.killedInFlight == 0 {
		t.Errorf("no kill landed while an operation was in flight: the kill points do not exercise the writes")
	}
}

func meanStartup(st *stats) time.Duration {
	if st.startupTimeCount == 0 {
		return 0
	}
	return st.startupTimeTotal / time.Duration(st.startupTimeCount)
}

// runAndKill starts a child and kills it with SIGKILL at a point chosen by
// mode. It returns the child's progress events, its Wait error and stderr.
func runAndKill(t *testing.T, child childConfig, mode killMode, rng *rand.Rand, watcher *fsnotify.Watcher, st *stats) ([]event, error, []byte) {
	t.Helper()
	cfg, err := json.Marshal(child)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Forget the events of the previous round and of the parent's checks.
	drain(watcher)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	lines := make(chan []event, 1)
	go func() {
		var evs []event
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		signaled := false
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), opPrefix)
			if !ok {
				continue
			}
			var e event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				e = event{Op: "fail", Err: fmt.Sprintf("unreadable progress line %q: %v", line, err)}
			}
			evs = append(evs, e)
			if e.Op == "ready" && !signaled {
				signaled = true
				close(ready)
			}
		}
		lines <- evs
	}()

	timeout := time.After(childTimeout)
	switch mode {
	case killStartup:
		// Uniform over the typical start-up, so that some kills hit the
		// reconcile and some the first operations.
		span := 200 * time.Millisecond
		if m := meanStartup(st); m > 0 {
			span = m + m/5
		}
		select {
		case <-time.After(time.Duration(rng.Int64N(int64(span)))):
		case <-timeout:
		}
	case killDelay:
		select {
		case <-ready:
			st.startupTimeTotal += time.Since(start)
			st.startupTimeCount++
			// A MIG device's creation or destruction takes several
			// durable writes of the mock's MIG state: give the children
			// of the dynamic MIG test time to complete operations too.
			span := 30 * time.Millisecond
			if child.DynamicMIG {
				span = 200 * time.Millisecond
			}
			time.Sleep(time.Duration(rng.Int64N(int64(span))))
		case <-timeout:
		}
	case killDriverSpec:
		// A write is a temporary file created, written, renamed: the
		// kill lands before, inside or after the rename. The ready
		// child has written it.
		k := 1 + rng.IntN(4)
	driverWait:
		for seen := 0; seen < k; {
			select {
			case ev := <-watcher.Events:
				if isDriverSpecFile(filepath.Base(ev.Name)) {
					seen++
				}
			case err := <-watcher.Errors:
				t.Logf("inotify: %v", err)
			case <-ready:
				break driverWait
			case <-timeout:
				break driverWait
			}
		}
	case killFSEvent, killMIG, killShare:
		// Events of the child's start-up (reconcile) count too.
		k := 1 + rng.IntN(40)
		if child.DynamicMIG {
			k = 1 + rng.IntN(120)
		}
		// only, when set, is the one directory whose events count.
		only := ""
		switch mode {
		case killMIG:
			k = 1 + rng.IntN(60)
			only = filepath.Dir(child.Dirs.MIGState)
		case killShare:
			k = 1 + rng.IntN(30)
			only = child.Dirs.Shares
		}
	wait:
		for seen := 0; seen < k; {
			select {
			case ev := <-watcher.Events:
				if only == "" || filepath.Dir(ev.Name) == only {
					seen++
				}
			case err := <-watcher.Errors:
				t.Logf("inotify: %v", err)
			case <-timeout:
				break wait
			}
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	evs := <-lines
	waitErr := cmd.Wait()
	return evs, waitErr, stderr.Bytes()
}

func drain(w *fsnotify.Watcher) {
	for {
		select {
		case <-w.Events:
		case <-w.Errors:
		default:
			return
		}
	}
}

// applyEvents folds the child's reports into the model.
func applyEvents(t *testing.T, round int, mode killMode, events []event, model map[string]*claimModel, st *stats) {
	t.Helper()
	for _, e := range events {
		switch e.Op {
		case "fail":
			t.Errorf("kill %d (%s): the child failed before it was killed: %s", round, mode, e.Err)
		case "ready":
			st.readyBeforeKill++
			// The child's view at start must match the parent's model
			// (which the previous round's checks made exact).
			for uid, m := range model {
				if got := slices.Contains(e.Prepared, uid); got != m.prepared {
					t.Errorf("kill %d: child started with claim %s prepared=%v, want %v", round, uid, got, m.prepared)
				}
			}
		case "prepare", "unprepare":
			m := model[e.UID]
			if m == nil {
				t.Errorf("kill %d: report about unknown claim %s", round, e.UID)
				continue
			}
			m.touched = true
			if e.Phase == "begin" {
				m.inflight = e.Op
				continue
			}
			m.inflight = ""
			m.prepared = e.Op == "prepare"
			st.opsDone++
		}
	}
	for _, m := range model {
		if m.inflight != "" {
			st.killedInFlight++
			break
		}
	}
}

// verifyAfterRestart opens a fresh state over the directories, as the
// restarted plugin does, and checks every invariant against the model. It
// leaves the model exact (no operation in flight).
//
// With dynamic MIG it also checks the MIG devices (see verifyMIG), and may
// switch a GPU that a claim gets whole into MIG mode for the next child's
// prepare to switch it out (rng). With GPU shares it also checks the
// daemon markers, the specs' limits and the records' shares (see
// verifyShares). It checks the driver-wide spec before and after the
// restart, and may make it stale or remove it for the next child's
// start-up to write (see driverspec_test.go).
func verifyAfterRestart(t *testing.T, ctx context.Context, round int, d dirs, sc scenario,
	claims []*resourceapi.ResourceClaim, model map[string]*claimModel, st *stats, rng *rand.Rand) {
	t.Helper()
	dynamicMIG := sc.DynamicMIG
	// A fresh machine: with dynamic MIG, the MIG state the child left.
	p, err := startPlugin(ctx, d, dynamicMIG)
	if err != nil {
		t.Fatalf("kill %d: restart: %v", round, err)
	}
	if dynamicMIG {
		censusBeforeReconcile(t, round, d, p, st)
	}
	if sc.Shares {
		// What the kill left, before the reconcile re-applies anything.
		sharesBeforeReconcile(t, round, d, p, claims, model, st)
	}
	// What the kill left of the driver spec, before the restart writes it.
	checkDriverSpecAfterKill(t, round, d, sc, p, st)
	state, specDir, loadErrs, err := openState(ctx, d, p, sc.LegacySpecs)
	if err != nil {
		t.Fatalf("kill %d: restart: %v", round, err)
	}
	checkDriverSpecAfterRestart(t, round, d, sc, p)
	if len(loadErrs) > 0 {
		t.Errorf("kill %d: the checkpoint holds unreadable records (torn write?): %v", round, loadErrs)
	}
	report := state.Reconcile(ctx)
	if len(report.Errors) > 0 {
		t.Errorf("kill %d: reconcile: %v", round, report.Errors)
	}
	st.specsRecreated += report.SpecsRecreated
	st.orphansRemoved += report.OrphansRemoved
	st.checkedRestarts++
	if dynamicMIG {
		st.mig.rolledBack += report.MIGRolledBack
		st.mig.unpreparesFinished += report.UnpreparesFinished
		if report.MIGRecreated != 0 {
			// No reboot here: a created MIG device of a claim whose spec
			// exists was destroyed by someone.
			t.Errorf("kill %d: reconcile re-created the MIG devices of %d claims, without a reboot", round, report.MIGRecreated)
		}
	}

	prepared := state.PreparedClaims()
	var driverSpec *cdiapi.Spec
	if !sc.LegacySpecs {
		if driverSpec, err = cdiapi.ReadSpec(driverSpecPath(d), 0); err != nil {
			t.Errorf("kill %d: the driver spec is unusable: %v", round, err)
		}
	}
	cache := newCDICache(t, round, d)
	for _, c := range claims {
		uid := string(c.UID)
		m := model[uid]
		got := slices.Contains(prepared, uid)
		switch {
		case m.inflight == "" && got != m.prepared:
			if m.prepared {
				t.Errorf("kill %d: claim %s was reported prepared and is lost after the restart", round, uid)
			} else {
				t.Errorf("kill %d: claim %s was reported unprepared and is prepared again after the restart", round, uid)
			}
		case m.inflight != "":
			if got {
				st.inflightPrepared++
			} else {
				st.inflightGone++
			}
		}
		m.inflight, m.prepared = "", got

		specPath := specDir.Path(uid)
		if !got {
			if _, err := os.Stat(specPath); !os.IsNotExist(err) {
				t.Errorf("kill %d: claim %s is not prepared but its spec %s exists (%v)", round, uid, specPath, err)
			}
			continue
		}
		// The spec is complete and valid for the CDI library, and a
		// repeated prepare returns the same IDs.
		spec, err := cdiapi.ReadSpec(specPath, 0)
		if err != nil {
			t.Errorf("kill %d: claim %s is prepared but its spec is unusable: %v", round, uid, err)
			continue
		}
		for _, id := range wantIDs(c, sc.LegacySpecs) {
			_, class, name := parseID(id)
			switch {
			case class == cdi.DriverClass && sc.LegacySpecs:
				t.Errorf("kill %d: claim %s of a plugin from before the driver spec references it (%s)", round, uid, id)
			case class == cdi.DriverClass:
				if driverSpec != nil && driverSpec.GetDevice(name) == nil {
					t.Errorf("kill %d: the driver spec lacks device %s of claim %s", round, name, uid)
				}
			case spec.GetDevice(name) == nil:
				t.Errorf("kill %d: spec of claim %s lacks device %s", round, uid, name)
			}
		}
		claimSpecFormat(t, round, uid, spec, sc, p)
		checkInjection(t, round, cache, c, sc, p, st)
		devs, err := state.Prepare(ctx, c)
		if err != nil {
			t.Errorf("kill %d: repeated prepare of claim %s: %v", round, uid, err)
			continue
		}
		st.repeatedPrepares++
		var ids, shareIDs []string
		for _, dev := range devs {
			ids = append(ids, dev.CDIDeviceIDs...)
			id := ""
			if dev.ShareID != nil {
				id = string(*dev.ShareID)
			}
			shareIDs = append(shareIDs, id)
		}
		if want := wantIDs(c, sc.LegacySpecs); !slices.Equal(ids, want) {
			t.Errorf("kill %d: repeated prepare of claim %s returned %v, want %v", round, uid, ids, want)
		}
		if !slices.Equal(shareIDs, wantShareIDs(c)) {
			t.Errorf("kill %d: repeated prepare of claim %s returned share IDs %q, want %q", round, uid, shareIDs, wantShareIDs(c))
		}
	}

	// No orphans: the specs of this driver are exactly the prepared claims'.
	uids, err := specDir.ClaimUIDs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(uids, prepared) {
		t.Errorf("kill %d: specs of this driver %v, prepared claims %v", round, uids, prepared)
	}
	// Nothing else lies in the directories but temporary files, which
	// neither the CDI library nor the checkpoint reader picks up.
	expected := map[string]bool{}
	if !sc.LegacySpecs {
		expected[driverSpecPath(d)] = true
	}
	for _, uid := range prepared {
		expected[filepath.Join(d.CDI, filepath.Base(specDir.Path(uid)))] = true
		expected[filepath.Join(d.Checkpoint, uid+".json")] = true
	}
	for _, dir := range []string{d.CDI, d.Checkpoint} {
		temps := 0
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			switch {
			case durable.IsTemp(name):
				temps++
			case expected[filepath.Join(dir, name)]:
			case dir == d.CDI && e.IsDir() && name == cdi.NewNaming(driverName).StagingDirName():
				// The spec writes' staging directory: temporary files only.
				staged, err := os.ReadDir(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range staged {
					if !durable.IsTemp(f.Name()) {
						t.Errorf("kill %d: unexpected file %s in the staging directory %s", round, f.Name(), name)
					}
					temps++
				}
			default:
				t.Errorf("kill %d: unexpected file %s in %s", round, name, dir)
			}
		}
		st.maxTempsLeft[dir] = max(st.maxTempsLeft[dir], temps)
	}
	if dynamicMIG {
		verifyMIG(t, round, d, p, specDir, claims, prepared, model, st)
		switchWholeGPUsIntoMIG(t, round, p, claims, prepared, rng, st)
	}
	if sc.Shares {
		verifyShares(t, round, d, p, specDir, claims, prepared, st)
	}
	for _, m := range model {
		m.touched = false
	}
	// For the next child's start-up to (re)write.
	changeDriverSpec(t, d, sc, p, rng, st, round)
}

// parseID splits a qualified CDI device ID.
func parseID(id string) (vendor, class, name string) {
	kind, name, _ := strings.Cut(id, "=")
	vendor, class, _ = strings.Cut(kind, "/")
	return vendor, class, name
}

// finalCleanup unprepares every claim after the last restart: nothing of
// this driver may be left.
func finalCleanup(t *testing.T, ctx context.Context, d dirs, sc scenario, claims []*resourceapi.ResourceClaim) {
	t.Helper()
	p, err := startPlugin(ctx, d, sc.DynamicMIG)
	if err != nil {
		t.Fatal(err)
	}
	state, specDir, _, err := openState(ctx, d, p, sc.LegacySpecs)
	if err != nil {
		t.Fatal(err)
	}
	state.Reconcile(ctx)
	for _, c := range claims {
		if err := state.Unprepare(ctx, c.Namespace, c.Name, c.UID); err != nil {
			t.Errorf("final unprepare of %s: %v", c.UID, err)
		}
	}
	if p := state.PreparedClaims(); len(p) != 0 {
		t.Errorf("claims still prepared after unpreparing all: %v", p)
	}
	if uids, err := specDir.ClaimUIDs(); err != nil || len(uids) != 0 {
		t.Errorf("specs left after unpreparing all: %v %v", uids, err)
	}
	// The driver spec stays: nothing removes it.
	checkDriverSpecAfterRestart(t, -1, d, sc, p)
	store, err := checkpoint.NewStore(d.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if recs, loadErrs, err := store.List(); err != nil || len(recs)+len(loadErrs) != 0 {
		t.Errorf("checkpoint records left after unpreparing all: %v %v %v", recs, loadErrs, err)
	}
	if sc.DynamicMIG {
		noMIGInstancesLeft(t, ctx, d)
	}
	if sc.Shares {
		noDaemonsLeft(t, d)
	}
}

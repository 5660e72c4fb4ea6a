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
//     child causes in the CDI directory, its staging directory or the
//     checkpoint directory, k random: a temporary file created, written,
//     renamed into place, a file removed. The kill
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
//   - "driverspec", "devicespec": right after the k-th file-system event
//     of the write of the driver-wide CDI spec, or of the static device
//     spec (its temporary file's creation, write, chmod and rename in the
//     staging directory, its creation in the CDI directory by the rename),
//     in a child whose start-up writes it (it is missing, or the parent
//     made it stale): the kill then lands inside that write.
//
// The parent watches the CDI directory, its staging directory (where every
// spec write stages its temporary file, so that the CDI directory sees one
// event per write) and the checkpoint directory.
//
// TestCrashConsistencyDynamicMIG runs the same kills over partitionable
// GPUs whose MIG devices the claims' prepares create (see dynamicmig_test.go),
// TestCrashConsistencyShares over claims that share GPUs by consumable
// capacity (see shares_test.go).
//
// Each child starts as the plugin of its format (specFormat) does (see
// openState). The format of the plugin, formatStatic, writes the driver-wide
// spec, then the static device spec, and gives an exclusive claim without
// settings of its own (no sharing config, no share with limits, no dynamic
// MIG device) the CDI IDs Naming.StaticDeviceIDs and no claim spec, and
// every other claim a claim spec holding only its own edits, referenced by
// Naming.DeviceIDs (the driver spec's device, then the claim's). The
// previous format, formatClaimSpecs, gives every claim such a claim spec;
// formatLegacy, from before the driver spec, self-contained claim specs.
// Whatever the format of the restarted plugin, a recorded claim keeps the
// format of its recorded IDs. TestCrashConsistency runs the plugin's format
// over the static GPUs (every claim static), the dynamic MIG and shares
// tests too (there only the whole-GPU claims are static);
// TestCrashConsistencyClaimSpecs starts with the previous format and
// switches between it and the plugin's at random restarts (an upgrade, and
// a downgrade once the claims with static IDs are unprepared), so that
// claims recorded in one format are reopened and reconciled in the other;
// TestCrashConsistencyLegacySpecs runs the static kills with self-contained
// claim specs. See driverspec_test.go for the shared specs' invariants.
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
	"tags.cncf.io/container-device-interface/specs-go"

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
	// ClaimSpecs: a plugin of the previous format (formatClaimSpecs) at
	// first, the format switching at random restarts between it and the
	// plugin's (formatStatic).
	ClaimSpecs bool `json:"claimSpecs,omitempty"`
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
	case sc.ClaimSpecs:
		return "static, claim specs of the previous format and the static device spec by turns"
	case sc.LegacySpecs:
		return "static, self-contained claim specs"
	}
	return "static"
}

// firstFormat is the format of the scenario's first child.
func (sc scenario) firstFormat() specFormat {
	switch {
	case sc.LegacySpecs:
		return formatLegacy
	case sc.ClaimSpecs:
		return formatClaimSpecs
	}
	return formatStatic
}

// specFormat is the CDI format of a plugin version: which shared specs its
// start-up writes (see openState), and which IDs its new claims get.
type specFormat string

const (
	// formatStatic is the plugin's: the driver-wide and static device
	// specs; idsStatic for an exclusive claim without settings of its
	// own, idsClaimSpec for the others.
	formatStatic specFormat = "static"
	// formatClaimSpecs is the plugin's before the static device spec:
	// the driver-wide spec; idsClaimSpec for every claim.
	formatClaimSpecs specFormat = "claimSpecs"
	// formatLegacy is the plugin's before the driver-wide spec: no shared
	// spec; idsSelfContained for every claim.
	formatLegacy specFormat = "legacy"
)

// idFormat is the format of a prepared claim's CDI IDs, which it keeps for
// as long as it is recorded.
type idFormat int

const (
	idsNone idFormat = iota // not prepared
	// idsStatic: Naming.StaticDeviceIDs, no claim spec.
	idsStatic
	// idsClaimSpec: Naming.DeviceIDs, a claim spec referencing the
	// driver-wide spec.
	idsClaimSpec
	// idsSelfContained: Naming.DeviceID alone, a self-contained claim
	// spec.
	idsSelfContained
)

func (f idFormat) String() string {
	return [...]string{"not prepared", "static", "claim spec", "self-contained claim spec"}[f]
}

// newClaimFormat is the format of the IDs that a plugin of format gives a
// claim it prepares anew; static tells whether the claim qualifies for the
// static device spec (see staticClaims).
func newClaimFormat(format specFormat, static bool) idFormat {
	switch {
	case format == formatLegacy:
		return idsSelfContained
	case format == formatStatic && static:
		return idsStatic
	}
	return idsClaimSpec
}

// staticClaims tells, by UID, which claims a plugin of the static format
// prepares with the static device spec: all of whose devices are in p's
// device spec, without a share that leaves room for others (the test
// claims have no configs).
func staticClaims(t *testing.T, p *plugin, claims []*resourceapi.ResourceClaim) map[string]bool {
	t.Helper()
	spec, err := p.deviceSpec()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, c := range claims {
		static := true
		for _, r := range c.Status.Allocation.Devices.Results {
			inSpec := slices.ContainsFunc(spec.Devices, func(d specs.Device) bool { return d.Name == r.Device })
			static = static && inSpec && !(r.ShareID != nil && shareOfResult(t, p, r).limited)
		}
		out[string(c.UID)] = static
	}
	return out
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

// wantIDs are the CDI device IDs that a prepare of c in format f must
// return: per device, the driver spec's device then the static device
// spec's (idsStatic) or the claim's (idsClaimSpec), or the claim's alone
// (idsSelfContained).
func wantIDs(c *resourceapi.ResourceClaim, f idFormat) []string {
	n := cdi.NewNaming(driverName)
	var ids []string
	for _, r := range c.Status.Allocation.Devices.Results {
		switch f {
		case idsStatic:
			ids = append(ids, n.StaticDeviceIDs(r.Device)...)
		case idsClaimSpec:
			ids = append(ids, n.DeviceIDs(string(c.UID), r.Device)...)
		case idsSelfContained:
			ids = append(ids, n.DeviceID(string(c.UID), r.Device))
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
	// claim is the claim; static tells whether a plugin of the static
	// format prepares it with the static device spec (staticClaims).
	claim  *resourceapi.ResourceClaim
	static bool
	// format is the format of its IDs when prepared (idsNone when not).
	format idFormat
}

// afterPrepare is the format of m's IDs once a prepare by a plugin of
// format returned: a prepared claim keeps its own.
func (m *claimModel) afterPrepare(format specFormat) idFormat {
	if m.prepared {
		return m.format
	}
	return newClaimFormat(format, m.static)
}

type killMode string

const (
	killDelay   killMode = "delay"
	killFSEvent killMode = "fsevent"
	killStartup killMode = "startup"
	killMIG     killMode = "migevent"
	killShare   killMode = "shareevent"
	// killDriverSpec, killDeviceSpec: right after the k-th file-system
	// event on the driver-wide spec, or the static device spec, or its
	// temporary file, when the child's start-up has to write it (see
	// driverspec_test.go).
	killDriverSpec killMode = "driverspec"
	killDeviceSpec killMode = "devicespec"
)

// specWriteEvents are the file-system events of one staged spec write in
// the watched directories: the temporary file's creation, write and chmod,
// its rename out of the staging directory, the spec's creation by the
// rename.
const specWriteEvents = 5

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
	// killsInWrite counts the kills that left a new temporary file of a
	// claim spec's or a record's write (landed inside it), by kind;
	// tempsSeen are the temporary files seen so far, by path.
	killsInWrite map[string]int
	tempsSeen    map[string]bool
	mig          migStats    // dynamic MIG only
	shares       sharesStats // GPU shares only
	driver       driverSpecStats
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

// TestCrashConsistencyClaimSpecs: the static kills with the previous format
// (a claim spec for every claim) and the plugin's by turns.
func TestCrashConsistencyClaimSpecs(t *testing.T) {
	runCrashTest(t, scenario{ClaimSpecs: true})
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
	// The staging directory too: the temporary files of the spec writes
	// live there, and their events are kill points inside the writes.
	watched := []string{d.CDI, stagingDir(d), d.Checkpoint}
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
	p0, err := startPlugin(ctx, d, sc.DynamicMIG)
	if err != nil {
		t.Fatal(err)
	}
	static := staticClaims(t, p0, claims)
	model := map[string]*claimModel{}
	for _, c := range claims {
		model[string(c.UID)] = &claimModel{claim: c, static: static[string(c.UID)]}
	}
	st := &stats{kills: map[killMode]int{}, maxTempsLeft: map[string]int{}, killsInWrite: map[string]int{}, tempsSeen: map[string]bool{}}
	modes := []killMode{killDelay, killFSEvent, killStartup}
	if sc.DynamicMIG {
		modes = append(modes, killMIG)
	}
	if sc.Shares {
		modes = append(modes, killShare)
	}
	format := sc.firstFormat()
	for i := range kills {
		mode := modes[rng.IntN(len(modes))]
		var targets []sharedSpec
		for _, k := range sharedSpecs {
			if w := sharedSpecToWrite(t, k, d, format, st); w == writeMissing || (w == writeStale && rng.IntN(2) == 0) {
				targets = append(targets, k)
			}
		}
		if len(targets) > 0 {
			mode = targets[rng.IntN(len(targets))].killMode()
		}
		childSeed := rng.Uint64()
		cfg := childConfig{Dirs: d, Seed: childSeed, scenario: sc, Format: format}
		events, waitErr, stderr := runAndKill(t, cfg, mode, rng, watcher, st)
		st.kills[mode]++
		applyEvents(t, i, mode, format, events, model, st)
		if ws, ok := waitErr.(*exec.ExitError); !ok || ws.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d (%s): the child did not die of SIGKILL: %v\nstderr:\n%s", i, mode, waitErr, stderr)
		}
		if bytes.Contains(stderr, []byte("DATA RACE")) {
			t.Fatalf("kill %d: the child reported a data race:\n%s", i, stderr)
		}
		if t.Failed() {
			t.Fatalf("kill %d (%s, child seed %d) broke an invariant; stderr of the child:\n%s", i, mode, childSeed, stderr)
		}
		format = verifyAfterRestart(t, ctx, i, d, sc, format, mode, claims, model, st, rng)
		if t.Failed() {
			t.Fatalf("kill %d (%s, child seed %d, format %s) broke an invariant", i, mode, childSeed, cfg.Format)
		}
	}
	finalCleanup(t, ctx, d, sc, format, claims)

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
	t.Logf("kills inside a claim spec's write (temporary file left): %d; inside a record's write: %d",
		st.killsInWrite[writeClaimSpec], st.killsInWrite[writeRecord])
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
	quiesce(t, watcher, child.Dirs.Checkpoint)
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
	case killDriverSpec, killDeviceSpec:
		// A write is a temporary file created, written, renamed (see
		// specWriteEvents): the kill lands inside the write or right
		// after the rename. The ready child has written it.
		spec := driverSpecKind
		if mode == killDeviceSpec {
			spec = deviceSpecKind
		}
		k := 1 + rng.IntN(specWriteEvents)
	driverWait:
		for seen := 0; seen < k; {
			select {
			case ev := <-watcher.Events:
				if spec.isFile(filepath.Base(ev.Name)) {
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

// quiesce consumes the watcher's events up to the removal of a sentinel
// file that it creates and removes in dir, a watched directory: inotify
// queues the events of all the watches of a watcher in order, so that
// every event of the parent's own writes (its checks, the restart's, its
// changes between children) is consumed, and none counts as one of the
// next child's.
func quiesce(t *testing.T, w *fsnotify.Watcher, dir string) {
	t.Helper()
	sentinel := filepath.Join(dir, ".crash-sentinel")
	if err := os.WriteFile(sentinel, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sentinel); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(childTimeout)
	for {
		select {
		case ev := <-w.Events:
			if ev.Name == sentinel && ev.Has(fsnotify.Remove) {
				return
			}
		case err := <-w.Errors:
			t.Logf("inotify: %v", err)
		case <-timeout:
			t.Fatalf("no removal event of the sentinel file %s within %v", sentinel, childTimeout)
		}
	}
}

// applyEvents folds the reports of the child (of format) into the model,
// checking that each prepare returned the IDs of the claim's format.
func applyEvents(t *testing.T, round int, mode killMode, format specFormat, events []event, model map[string]*claimModel, st *stats) {
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
			if e.Op == "prepare" {
				f := m.afterPrepare(format)
				if want := wantIDs(m.claim, f); !slices.Equal(e.IDs, want) {
					t.Errorf("kill %d: a prepare of claim %s by a plugin of format %s returned %v, want %v (%s)", round, e.UID, format, e.IDs, want, f)
				}
				m.prepared, m.format = true, f
			} else {
				m.prepared, m.format = false, idsNone
			}
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
// restarted plugin of the killed child's format does, and checks every
// invariant against the model. It leaves the model exact (no operation in
// flight), and returns the format of the next child: sc.ClaimSpecs
// switches it at random, to the plugin's (an upgrade: the claims recorded
// in the previous format keep it), or to the previous one after
// unpreparing the claims with static IDs, which a plugin of that format
// could not resolve (a downgrade of a drained node).
//
// Per claim: one reported prepared is still prepared, one reported
// unprepared is not; a prepared one has the IDs of its format (recorded,
// and returned by a repeated prepare), which the CDI library resolves to
// its devices' nodes; with static IDs it has no claim spec, with others
// its spec, of the format its IDs tell; an unprepared one has no spec. No
// spec is an orphan, and the CDI, staging and checkpoint directories hold
// nothing else but temporary files.
//
// With dynamic MIG it also checks the MIG devices (see verifyMIG), and may
// switch a GPU that a claim gets whole into MIG mode for the next child's
// prepare to switch it out (rng). With GPU shares it also checks the
// daemon markers, the specs' limits and the records' shares (see
// verifyShares). It checks the shared specs before and after the restart,
// and may make one stale or remove it for the next child's start-up to
// write (see driverspec_test.go).
func verifyAfterRestart(t *testing.T, ctx context.Context, round int, d dirs, sc scenario, format specFormat, mode killMode,
	claims []*resourceapi.ResourceClaim, model map[string]*claimModel, st *stats, rng *rand.Rand) specFormat {
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
	// What the kill left of the writes, before the restart writes.
	countInterruptedWrites(t, d, st)
	checkSharedSpecsAfterKill(t, round, d, sc, format, mode, p, st)
	state, specDir, loadErrs, err := openState(ctx, d, p, format)
	if err != nil {
		t.Fatalf("kill %d: restart: %v", round, err)
	}
	checkSharedSpecsAfterRestart(t, round, d, format, p)
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
	recs := readRecords(t, d)
	// The shared specs as the container runtime reads them (nil: none).
	shared := map[sharedSpec]*cdiapi.Spec{}
	for _, k := range sharedSpecs {
		spec, err := cdiapi.ReadSpec(k.path(d), 0)
		switch {
		case err == nil:
			shared[k] = spec
		case !os.IsNotExist(err):
			t.Errorf("kill %d: the %s is unusable: %v", round, k, err)
		}
	}
	cache := newCDICache(t, round, d)
	var withSpec []string // prepared claims with a claim spec
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
		// A prepared claim keeps the format of its IDs; one the child
		// was preparing anew has its format's.
		f := idsNone
		if got {
			f = m.afterPrepare(format)
		}
		m.inflight, m.prepared, m.format = "", got, f

		specPath := specDir.Path(uid)
		if !got {
			if _, err := os.Stat(specPath); !os.IsNotExist(err) {
				t.Errorf("kill %d: claim %s is not prepared but its spec %s exists (%v)", round, uid, specPath, err)
			}
			continue
		}
		if f != newClaimFormat(format, m.static) {
			st.driver.otherFormat++
		}
		want := wantIDs(c, f)
		rec := recs[uid]
		if rec == nil {
			t.Errorf("kill %d: claim %s is prepared without a record", round, uid)
			continue
		}
		if ids := recordedIDs(rec); !slices.Equal(ids, want) {
			t.Errorf("kill %d: claim %s is recorded with the IDs %v, want %v (%s)", round, uid, ids, want, f)
		}
		// The claim's spec: none with static IDs; else complete and valid
		// for the CDI library, of the format its IDs tell.
		var spec *cdiapi.Spec
		if f == idsStatic {
			st.driver.staticChecked++
			if _, err := os.Stat(specPath); !os.IsNotExist(err) {
				t.Errorf("kill %d: claim %s has static IDs, but a claim spec %s (%v)", round, uid, specPath, err)
			}
		} else {
			withSpec = append(withSpec, uid)
			if spec, err = cdiapi.ReadSpec(specPath, 0); err != nil {
				t.Errorf("kill %d: claim %s is prepared but its spec is unusable: %v", round, uid, err)
				continue
			}
			st.driver.claimSpecChecked++
			claimSpecFormat(t, round, uid, spec, f, p)
		}
		// Every ID names a device of the spec it references.
		for _, id := range want {
			_, class, name := parseID(id)
			var in *cdiapi.Spec
			switch class {
			case cdi.DriverClass:
				in = shared[driverSpecKind]
			case cdi.DeviceClass:
				in = shared[deviceSpecKind]
			default:
				in = spec
			}
			if in == nil || in.GetDevice(name) == nil {
				t.Errorf("kill %d: claim %s: no spec has the device %s of its ID %s", round, uid, name, id)
			}
		}
		checkInjection(t, round, cache, c, want, rec, p, st)
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
		if !slices.Equal(ids, want) {
			t.Errorf("kill %d: repeated prepare of claim %s returned %v, want %v (%s)", round, uid, ids, want, f)
		}
		if !slices.Equal(shareIDs, wantShareIDs(c)) {
			t.Errorf("kill %d: repeated prepare of claim %s returned share IDs %q, want %q", round, uid, shareIDs, wantShareIDs(c))
		}
	}

	// No orphans: the specs of this driver are exactly those of the
	// prepared claims without static IDs.
	uids, err := specDir.ClaimUIDs()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(withSpec)
	if !slices.Equal(uids, withSpec) {
		t.Errorf("kill %d: specs of this driver %v, prepared claims with a claim spec %v (prepared %v)", round, uids, withSpec, prepared)
	}
	// Nothing else lies in the directories but temporary files, which
	// neither the CDI library nor the checkpoint reader picks up.
	expected := map[string]bool{}
	if format != formatLegacy {
		for _, k := range sharedSpecs {
			expected[k.path(d)] = true
		}
	}
	for _, uid := range withSpec {
		expected[filepath.Join(d.CDI, filepath.Base(specDir.Path(uid)))] = true
	}
	for _, uid := range prepared {
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
		verifyShares(t, round, d, p, specDir, shared[deviceSpecKind], claims, prepared, model, st)
	}
	for _, m := range model {
		m.touched = false
	}
	next := format
	if sc.ClaimSpecs && rng.IntN(4) == 0 {
		next = formatStatic
		if format == formatStatic {
			// A plugin of the previous format has no device spec to
			// resolve static IDs with: before the downgrade, the claims
			// with static IDs are unprepared (the node drained).
			next = formatClaimSpecs
			for _, c := range claims {
				if m := model[string(c.UID)]; m.format == idsStatic {
					if err := state.Unprepare(ctx, c.Namespace, c.Name, c.UID); err != nil {
						t.Errorf("kill %d: unpreparing claim %s before a downgrade: %v", round, c.UID, err)
					}
					m.prepared, m.format = false, idsNone
					st.driver.drained++
				}
			}
			if uids := referencing(t, deviceSpecKind, d, sc, readRecords(t, d)); len(uids) > 0 {
				t.Errorf("kill %d: claims %v have static IDs after the drain", round, uids)
			}
		}
	}
	if next != format {
		st.driver.formatSwitches++
	}
	// For the next child's start-up to (re)write.
	changeSharedSpecs(t, d, sc, next, p, rng, st, round)
	return next
}

// The kinds of writes whose interruptions countInterruptedWrites counts.
const (
	writeClaimSpec = "claim spec"
	writeRecord    = "record"
)

// countInterruptedWrites counts the kinds of the writes that the kill
// interrupted between their temporary file's creation and its rename: the
// new temporary files of claim specs (in the staging directory) and of
// records (in the checkpoint directory). Those of the shared specs are
// counted by checkSharedSpecsAfterKill.
func countInterruptedWrites(t *testing.T, d dirs, st *stats) {
	t.Helper()
	// ".<claim spec file name>.<random>.tmp", the file name without the UID and extension.
	claimSpecTemp := "." + strings.TrimSuffix(cdi.NewNaming(driverName).SpecFileName(""), ".json")
	seen := map[string]bool{}
	for _, dir := range []string{stagingDir(d), d.Checkpoint} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			path := filepath.Join(dir, e.Name())
			if !durable.IsTemp(e.Name()) || st.tempsSeen[path] {
				continue
			}
			st.tempsSeen[path] = true
			switch {
			case dir == d.Checkpoint:
				seen[writeRecord] = true
			case strings.HasPrefix(e.Name(), claimSpecTemp):
				seen[writeClaimSpec] = true
			}
		}
	}
	for kind := range seen {
		st.killsInWrite[kind]++
	}
}

// parseID splits a qualified CDI device ID.
func parseID(id string) (vendor, class, name string) {
	kind, name, _ := strings.Cut(id, "=")
	vendor, class, _ = strings.Cut(kind, "/")
	return vendor, class, name
}

// finalCleanup unprepares every claim after the last restart (of format):
// nothing of this driver may be left but the shared specs.
func finalCleanup(t *testing.T, ctx context.Context, d dirs, sc scenario, format specFormat, claims []*resourceapi.ResourceClaim) {
	t.Helper()
	p, err := startPlugin(ctx, d, sc.DynamicMIG)
	if err != nil {
		t.Fatal(err)
	}
	state, specDir, _, err := openState(ctx, d, p, format)
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
	// The shared specs stay: nothing removes them.
	checkSharedSpecsAfterRestart(t, -1, d, format, p)
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

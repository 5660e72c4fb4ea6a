package crash

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// shareTestClaims are the claims of the GPU shares test: four 20Gi shares
// of GPU 0 (together all of its 80Gi), two 30Gi shares of GPU 1, a share of
// all 80Gi of GPU 2 (which the claim state counts as exclusive: no daemon,
// no limit) and GPU 3 whole (no share ID). All of them fit at once.
func shareTestClaims() []*resourceapi.ResourceClaim {
	type share struct {
		device, memory string // memory "": no share ID
	}
	shares := []share{
		{"gpu-0", "20Gi"}, {"gpu-0", "20Gi"}, {"gpu-0", "20Gi"}, {"gpu-0", "20Gi"},
		{"gpu-1", "30Gi"}, {"gpu-1", "30Gi"},
		{"gpu-2", "80Gi"},
		{"gpu-3", ""},
	}
	devs := make([][]string, len(shares))
	for i, s := range shares {
		devs[i] = []string{s.device}
	}
	claims := makeClaims("share-claim", 2, devs)
	for i, s := range shares {
		if s.memory == "" {
			continue
		}
		r := &claims[i].Status.Allocation.Devices.Results[0]
		id := types.UID(fmt.Sprintf("5ba7e000-0000-4000-8002-%012d", i))
		r.ShareID = &id
		r.ConsumedCapacity = map[resourceapi.QualifiedName]resource.Quantity{claimstate.CapacityMemory: resource.MustParse(s.memory)}
	}
	return claims
}

// TestCrashConsistencyShares is TestCrashConsistency over claims that share
// GPUs (consumable capacity), whose shares a file-backed fake of the
// shares applier enforces (fakeShares: one durable daemon marker per shared
// GPU, in a directory that is a source of kill points too, "shareevent").
// After every restart, besides the invariants of TestCrashConsistency and
// the share IDs of a repeated prepare, it checks that no kill left a daemon
// without a recorded share, and after the reconcile (see verifyShares) that
// a GPU has a daemon exactly when a prepared claim holds a share of it,
// that each share's spec carries its own limit, that the records keep the
// share IDs and limits, and that the share of a whole GPU has no daemon.
func TestCrashConsistencyShares(t *testing.T) {
	runCrashTest(t, scenario{Shares: true})
}

// fakeShares is a sharing.Applier for the shares of GPUs (Composite.Shares)
// that models mps.SharedGPUs durably, without an API server: the daemon of
// a shared GPU is a marker file, daemon-<GPU UUID> in dir, that Apply
// writes durably (durable.WriteFile) if it is missing, and that Undo
// removes durably unless another recorded claim of the state
// (SharingClaims, less the undone claim) holds a share of the GPU. Like the
// real applier, its only memory is a mutex per GPU serializing the start
// and stop decisions; a restarted one decides from the checkpoint alone.
type fakeShares struct {
	dir   string
	state atomic.Pointer[claimstate.State]

	mu   sync.Mutex
	gpus map[string]*sync.Mutex // by GPU UUID

	// undoGate, when set, is called at the start of every Undo (tests
	// that order concurrent Undos).
	undoGate func()
}

var _ sharing.Applier = (*fakeShares)(nil)

func newFakeShares(dir string) (*fakeShares, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	return &fakeShares{dir: dir, gpus: map[string]*sync.Mutex{}}, nil
}

// use hands the applier the state whose recorded claims Undo consults.
func (f *fakeShares) use(st *claimstate.State) { f.state.Store(st) }

const (
	daemonPrefix = "daemon-"
	limitEnvName = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
	pipeEnvName  = "CUDA_MPS_PIPE_DIRECTORY"
)

func daemonMarker(dir, gpu string) string { return filepath.Join(dir, daemonPrefix+gpu) }

// limitEnv is the memory limit of a share as mps.SharedGPUs sets it.
func limitEnv(memoryBytes int64) string {
	return limitEnvName + "=0=" + strconv.FormatInt(max(1, memoryBytes>>20), 10) + "M"
}

func pipeEnv(dir, gpu string) string { return pipeEnvName + "=" + filepath.Join(dir, "pipe-"+gpu) }

// shareGPUs returns the GPUs of c's shares, sorted, after checking that
// each is a full GPU whose UUID can name a file.
func shareGPUs(c sharing.Claim) ([]string, error) {
	var gpus []string
	for _, d := range c.Devices {
		if d.Share == nil {
			continue
		}
		gpu := d.GPUUUID()
		if d.Type == devices.KindMIG || !strings.HasPrefix(gpu, "GPU-") || strings.ContainsAny(gpu, "/.") {
			return nil, fmt.Errorf("%s: device %s (%s) is not a full GPU with a valid UUID", c.Ref(), d.Name, gpu)
		}
		if !slices.Contains(gpus, gpu) {
			gpus = append(gpus, gpu)
		}
	}
	slices.Sort(gpus)
	return gpus, nil
}

func (f *fakeShares) gpu(uuid string) *sync.Mutex {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.gpus[uuid]
	if m == nil {
		m = &sync.Mutex{}
		f.gpus[uuid] = m
	}
	return m
}

// Apply starts the daemon of each GPU the claim has a share of (idempotent)
// and returns each share's edits: the daemon's pipe directory and the
// share's memory limit.
func (f *fakeShares) Apply(_ context.Context, c sharing.Claim) (sharing.Edits, error) {
	gpus, err := shareGPUs(c)
	if err != nil {
		return sharing.Edits{}, err
	}
	for _, gpu := range gpus {
		if err := f.start(gpu); err != nil {
			return sharing.Edits{}, fmt.Errorf("%s: starting the daemon of shared GPU %s: %w", c.Ref(), gpu, err)
		}
	}
	out := sharing.Edits{Devices: map[string]specs.ContainerEdits{}}
	for _, d := range c.Devices {
		if d.Share == nil {
			continue
		}
		e := specs.ContainerEdits{Env: []string{pipeEnv(f.dir, d.GPUUUID())}}
		if d.Share.MemoryBytes > 0 {
			e.Env = append(e.Env, limitEnv(d.Share.MemoryBytes))
		}
		out.Devices[d.Name] = e
	}
	return out, nil
}

func (f *fakeShares) start(gpu string) error {
	m := f.gpu(gpu)
	m.Lock()
	defer m.Unlock()
	want := []byte(gpu + "\n")
	path := daemonMarker(f.dir, gpu)
	if got, err := os.ReadFile(path); err == nil && bytes.Equal(got, want) {
		return nil // running: a repeated Apply changes nothing
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return durable.WriteFile(path, want, 0o600)
}

// Undo stops the daemon of each GPU the claim has a share of, unless
// another recorded claim holds a share of it. Idempotent; it works from
// the Claim and the state's recorded claims alone.
func (f *fakeShares) Undo(_ context.Context, c sharing.Claim) error {
	if f.undoGate != nil {
		f.undoGate()
	}
	st := f.state.Load()
	if st == nil {
		return fmt.Errorf("%s: the fake shares applier has no claim state to consult", c.Ref())
	}
	gpus, err := shareGPUs(c)
	if err != nil {
		return err
	}
	var errs []error
	for _, gpu := range gpus {
		if err := f.stop(st, c.UID, gpu); err != nil {
			errs = append(errs, fmt.Errorf("%s: stopping the daemon of shared GPU %s: %w", c.Ref(), gpu, err))
		}
	}
	return errors.Join(errs...)
}

func (f *fakeShares) stop(st *claimstate.State, except, gpu string) error {
	m := f.gpu(gpu)
	m.Lock()
	defer m.Unlock()
	for _, other := range st.SharingClaims() {
		if other.UID == except {
			continue
		}
		for _, d := range other.Devices {
			if d.Share != nil && d.GPUUUID() == gpu {
				return nil // another share runs on the daemon
			}
		}
	}
	base := filepath.Base(daemonMarker(f.dir, gpu))
	if err := durable.Remove(daemonMarker(f.dir, gpu)); err != nil {
		return err
	}
	// What an interrupted start left, as the real applier removes the
	// GPU's directories.
	_, err := durable.RemoveStaleTempsOf(f.dir, 0, func(target string) bool { return target == base })
	return err
}

// sharesStats count what the GPU shares test covered.
type sharesStats struct {
	// leakedBeforeReconcile counts daemons found after a kill without a
	// recorded share of their GPU (each is also a failure);
	// missingBeforeReconcile recorded shares found without their GPU's
	// daemon (a kill between the record and the daemon's start, or
	// between the daemon's stop and the record's removal), which the
	// reconcile must start again.
	leakedBeforeReconcile  int
	missingBeforeReconcile int
	// killsInMarkerWrite counts kills that left a new temporary file of a
	// daemon marker's write; tempsSeen is their number at the last check.
	killsInMarkerWrite int
	tempsSeen          int
	// inflightPrepare and inflightUnprepare count the prepares and
	// unprepares of claims with a share that leaves room for others that
	// a kill interrupted.
	inflightPrepare, inflightUnprepare int
	// daemonsChecked counts GPUs whose daemon was checked against the
	// prepared shares after a reconcile (daemonsRunning of them had one),
	// wholeChecked the checks that the whole-GPU share has none.
	daemonsChecked, daemonsRunning, wholeChecked int
	// specLimitsChecked counts share devices of specs whose limit was
	// checked, specsNoLimitChecked devices checked to have none.
	specLimitsChecked, specsNoLimitChecked int
	// recordsChecked counts recorded devices whose share ID and limits
	// were checked.
	recordsChecked int
}

func logSharesStats(t *testing.T, st *stats) {
	t.Helper()
	s := &st.shares
	t.Logf("GPU shares: kills by mode: delay %d, file-system event %d, start-up %d, daemon marker event %d; kills with an operation in flight: %d; "+
		"interrupted prepares of a share %d, unprepares of a share %d; kills inside a daemon marker write: %d; "+
		"after the kills: daemons leaked %d, recorded shares without their daemon %d (started again by the reconcile); "+
		"after the reconciles: GPU daemons checked %d (running %d, leaked 0, missing 0), whole-GPU share checked without daemon %d; "+
		"spec share devices checked with their own limit %d, spec devices checked without a limit %d; recorded devices checked for share ID and limits %d",
		st.kills[killDelay], st.kills[killFSEvent], st.kills[killStartup], st.kills[killShare], st.killedInFlight,
		s.inflightPrepare, s.inflightUnprepare, s.killsInMarkerWrite,
		s.leakedBeforeReconcile, s.missingBeforeReconcile,
		s.daemonsChecked, s.daemonsRunning, s.wholeChecked, s.specLimitsChecked, s.specsNoLimitChecked, s.recordsChecked)
	if st.checkedRestarts >= 50 && s.missingBeforeReconcile+s.killsInMarkerWrite == 0 {
		t.Errorf("no kill landed between a share's record and its daemon: the kill points do not exercise the shares")
	}
}

// wantShare is what a claim's result should be prepared as: limited (a
// share that leaves room for others, with its memory) or not (exclusive,
// or a share of all of the GPU).
type wantShare struct {
	id      string
	limited bool
	memory  int64
	gpu     string // the device's GPU UUID
}

func shareOfResult(t *testing.T, p *plugin, r resourceapi.DeviceRequestAllocationResult) wantShare {
	t.Helper()
	dev, ok := p.set.Get(r.Device)
	if !ok || dev.Kind != devices.KindGPU {
		t.Fatalf("device %s is not a full GPU of the node", r.Device)
	}
	w := wantShare{gpu: dev.UUID}
	if r.ShareID == nil {
		return w
	}
	w.id = string(*r.ShareID)
	q := r.ConsumedCapacity[claimstate.CapacityMemory]
	w.memory = q.Value()
	w.limited = w.memory < int64(dev.GPU.MemoryBytes>>20)<<20
	return w
}

// checkSharesScenario checks that the claims' shares fit their GPUs (all
// can be prepared at once), that a GPU is shared by several claims, that
// the whole-GPU share consumes all of its GPU, and that no daemon runs at
// first.
func checkSharesScenario(t *testing.T, ctx context.Context, d dirs, claims []*resourceapi.ResourceClaim) {
	t.Helper()
	p, err := startPlugin(ctx, d, false)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]int64{}
	sharers := map[string]int{}
	exclusive := map[string]string{}
	whole := 0
	for _, c := range claims {
		for _, r := range c.Status.Allocation.Devices.Results {
			w := shareOfResult(t, p, r)
			switch {
			case w.limited:
				used[r.Device] += w.memory
				sharers[r.Device]++
			case w.id != "":
				whole++
				fallthrough
			default:
				if other, ok := exclusive[r.Device]; ok {
					t.Fatalf("claims %s and %s both hold device %s exclusively", other, c.Name, r.Device)
				}
				exclusive[r.Device] = c.Name
			}
		}
	}
	for name, mem := range used {
		dev, _ := p.set.Get(name)
		if capacity := int64(dev.GPU.MemoryBytes>>20) << 20; mem > capacity {
			t.Fatalf("the shares of %s consume %d MiB of its %d MiB: they cannot be prepared at once", name, mem>>20, capacity>>20)
		}
		if other, ok := exclusive[name]; ok {
			t.Fatalf("device %s is shared and held exclusively by %s", name, other)
		}
	}
	if whole == 0 || !slices.ContainsFunc(slices.Collect(maps.Values(sharers)), func(n int) bool { return n > 1 }) {
		t.Fatalf("the scenario lacks a whole-GPU share (%d) or a GPU shared by several claims (%v)", whole, sharers)
	}
	markers, temps := daemonMarkers(t, -1, d.Shares)
	if len(markers)+temps != 0 {
		t.Fatalf("daemons %v at first", markers)
	}
}

// daemonMarkers returns the GPUs with a daemon marker in dir and the number
// of temporary files of interrupted marker writes; anything else in dir is
// an error.
func daemonMarkers(t *testing.T, round int, dir string) (map[string]bool, int) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	markers := map[string]bool{}
	temps := 0
	for _, e := range entries {
		name := e.Name()
		switch gpu, ok := strings.CutPrefix(name, daemonPrefix); {
		case durable.IsTemp(name):
			temps++
		case ok && e.Type().IsRegular():
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || string(b) != gpu+"\n" {
				t.Errorf("kill %d: daemon marker %s holds %q (%v), want %q: a torn write", round, name, b, err, gpu+"\n")
			}
			markers[gpu] = true
		default:
			t.Errorf("kill %d: unexpected file %s in the daemon directory", round, name)
		}
	}
	return markers, temps
}

// recordedShares returns, by GPU UUID, the UIDs of the recorded claims
// holding a share of it with limits.
func recordedShares(t *testing.T, round int, d dirs) (map[string][]string, map[string]*checkpoint.ClaimRecord) {
	t.Helper()
	store, err := checkpoint.NewStore(d.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	recs, loadErrs, err := store.List()
	if err != nil || len(loadErrs) > 0 {
		t.Fatalf("kill %d: checkpoint: %v %v", round, err, loadErrs)
	}
	held := map[string][]string{}
	byUID := map[string]*checkpoint.ClaimRecord{}
	for _, rec := range recs {
		byUID[rec.ClaimUID] = rec
		for _, dev := range rec.Devices {
			if dev.Share != nil && !slices.Contains(held[dev.UUID], rec.ClaimUID) {
				held[dev.UUID] = append(held[dev.UUID], rec.ClaimUID)
			}
		}
	}
	return held, byUID
}

// sharesBeforeReconcile checks what the kill left before the restarted
// state reconciles: a daemon runs only for a GPU that a recorded claim
// holds a share of (Apply comes after the record, Undo before its
// removal, so no kill may leak one). It counts the recorded shares
// without their daemon, the kills inside a marker write and the
// interrupted operations on shares.
func sharesBeforeReconcile(t *testing.T, round int, d dirs, p *plugin, claims []*resourceapi.ResourceClaim, model map[string]*claimModel, st *stats) {
	t.Helper()
	s := &st.shares
	held, _ := recordedShares(t, round, d)
	markers, temps := daemonMarkers(t, round, d.Shares)
	if temps > s.tempsSeen {
		s.killsInMarkerWrite++
	}
	s.tempsSeen = temps
	for gpu := range markers {
		if len(held[gpu]) > 0 {
			continue
		}
		s.leakedBeforeReconcile++
		// What the child reported of the GPU's shares tells whether the
		// kill made the leak: none in flight means that completed
		// unprepares left the daemon running.
		var reported []string
		for _, c := range claims {
			w := shareOfResult(t, p, c.Status.Allocation.Devices.Results[0])
			if !w.limited || w.gpu != gpu {
				continue
			}
			m := model[string(c.UID)]
			state := "unprepared"
			if m.prepared {
				state = "prepared"
			}
			if m.inflight != "" {
				state += ", " + m.inflight + " in flight"
			}
			reported = append(reported, fmt.Sprintf("%s (%s)", c.Name, state))
		}
		t.Errorf("kill %d: the daemon of GPU %s is left running without any recorded share of it (recorded shares: %v); "+
			"the child reported its shares %s (two unprepares of its last shares at once each keep the daemon for the other: "+
			"see TestSharedGPUDaemonStopsWithTheLastSharesUnpreparedTogether)", round, gpu, held, strings.Join(reported, ", "))
	}
	for gpu := range held {
		if !markers[gpu] {
			s.missingBeforeReconcile++
		}
	}
	for _, c := range claims {
		m := model[string(c.UID)]
		if m.inflight == "" || !shareOfResult(t, p, c.Status.Allocation.Devices.Results[0]).limited {
			continue
		}
		if m.inflight == "prepare" {
			s.inflightPrepare++
		} else {
			s.inflightUnprepare++
		}
	}
}

// verifyShares checks the shares after the reconcile of a restart:
//   - (a) a GPU's daemon runs exactly when a prepared claim holds a share
//     of it that leaves room for others: no daemon leaked, none missing;
//   - (b) the spec of every prepared claim gives each such share its own
//     memory limit and its GPU's daemon, and no limit to a device held
//     whole;
//   - (c) the records keep each device's share ID and limits;
//   - (d) the share of all of a GPU runs no daemon.
//
// A claim with static IDs (an exclusive GPU, or the share of all of it) has
// no claim spec: (b) checks its devices' entries in the static device spec
// (deviceSpec) instead.
func verifyShares(t *testing.T, round int, d dirs, p *plugin, specDir *cdi.SpecDir, deviceSpec *cdiapi.Spec, claims []*resourceapi.ResourceClaim,
	prepared []string, model map[string]*claimModel, st *stats) {
	t.Helper()
	s := &st.shares
	_, byUID := recordedShares(t, round, d)
	markers, temps := daemonMarkers(t, round, d.Shares)
	s.tempsSeen = temps
	holders := map[string][]string{} // by GPU UUID: prepared claims with limited shares
	gpus := map[string]string{}      // GPU UUID -> device name, of every claim
	var wholeGPUs []string
	for _, c := range claims {
		uid := string(c.UID)
		isPrepared := slices.Contains(prepared, uid)
		var spec *cdiapi.Spec
		static := model[uid].format == idsStatic
		if isPrepared && !static {
			var err error
			if spec, err = cdiapi.ReadSpec(specDir.Path(uid), 0); err != nil {
				t.Errorf("kill %d: claim %s: spec: %v", round, uid, err)
				continue
			}
			if lim := envWith(spec.ContainerEdits.Env, limitEnvName); len(lim) > 0 {
				t.Errorf("kill %d: claim %s: spec-wide limits %v: a limit belongs to its share's device", round, uid, lim)
			}
		}
		rec := byUID[uid]
		if isPrepared && (rec == nil || len(rec.Devices) != len(c.Status.Allocation.Devices.Results)) {
			t.Errorf("kill %d: claim %s is prepared but its record is %+v", round, uid, rec)
			continue
		}
		for i, r := range c.Status.Allocation.Devices.Results {
			w := shareOfResult(t, p, r)
			gpus[w.gpu] = r.Device
			if w.id != "" && !w.limited {
				wholeGPUs = append(wholeGPUs, w.gpu)
			}
			if !isPrepared {
				continue
			}
			if w.limited {
				holders[w.gpu] = append(holders[w.gpu], uid)
			}
			// (b) the spec.
			var dev *cdiapi.Device
			switch {
			case static && w.limited:
				t.Errorf("kill %d: claim %s has static IDs, but a share of %s with limits", round, uid, r.Device)
			case static && deviceSpec != nil:
				dev = deviceSpec.GetDevice(r.Device)
			case !static:
				_, _, name := parseID(cdi.NewNaming(driverName).DeviceID(uid, r.Device))
				dev = spec.GetDevice(name)
			}
			if dev == nil {
				continue // reported by the common checks
			}
			lims, pipes := envWith(dev.ContainerEdits.Env, limitEnvName), envWith(dev.ContainerEdits.Env, pipeEnvName)
			if w.limited {
				if want := []string{limitEnv(w.memory)}; !slices.Equal(lims, want) || !slices.Equal(pipes, []string{pipeEnv(d.Shares, w.gpu)}) {
					t.Errorf("kill %d: claim %s: spec device %s has limits %v and daemon %v, want %v and %v", round, uid, r.Device, lims, pipes, want, pipeEnv(d.Shares, w.gpu))
				}
				s.specLimitsChecked++
			} else {
				if len(lims)+len(pipes) != 0 {
					t.Errorf("kill %d: claim %s: spec device %s, held whole, has limits %v and daemon %v", round, uid, r.Device, lims, pipes)
				}
				s.specsNoLimitChecked++
			}
			// (c) the record.
			rd := rec.Devices[i]
			switch {
			case rd.Device != r.Device || rd.ShareID != w.id:
				t.Errorf("kill %d: claim %s: recorded device %s with share ID %q, want %s with %q", round, uid, rd.Device, rd.ShareID, r.Device, w.id)
			case w.limited && (rd.Share == nil || rd.Share.MemoryBytes != w.memory || rd.Share.ComputeTotal != 0):
				t.Errorf("kill %d: claim %s: recorded share of %s is %+v, want %d bytes of memory", round, uid, r.Device, rd.Share, w.memory)
			case !w.limited && rd.Share != nil:
				t.Errorf("kill %d: claim %s: device %s, held whole, is recorded with share limits %+v", round, uid, r.Device, *rd.Share)
			}
			s.recordsChecked++
		}
	}
	// (a) and (d) the daemons.
	for gpu := range markers {
		if _, ok := gpus[gpu]; !ok {
			t.Errorf("kill %d: a daemon runs for GPU %s, which no claim has a share of", round, gpu)
		}
	}
	names := make([]string, 0, len(gpus))
	for gpu := range gpus {
		names = append(names, gpu)
	}
	sort.Strings(names)
	for _, gpu := range names {
		s.daemonsChecked++
		want := len(holders[gpu]) > 0
		switch {
		case markers[gpu] && !want:
			t.Errorf("kill %d: the daemon of %s (%s) runs, but no prepared claim holds a share of it: leaked", round, gpus[gpu], gpu)
		case !markers[gpu] && want:
			t.Errorf("kill %d: no daemon runs for %s (%s), whose shares claims %v hold: missing", round, gpus[gpu], gpu, holders[gpu])
		case want:
			s.daemonsRunning++
		}
		if slices.Contains(wholeGPUs, gpu) {
			s.wholeChecked++
			if markers[gpu] {
				t.Errorf("kill %d: the share of all of %s (%s) runs a daemon", round, gpus[gpu], gpu)
			}
		}
	}
}

// envWith returns the variables of env named name.
func envWith(env []string, name string) []string {
	var out []string
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}

// noDaemonsLeft checks that no daemon runs after the final cleanup.
func noDaemonsLeft(t *testing.T, d dirs) {
	t.Helper()
	if markers, temps := daemonMarkers(t, -1, d.Shares); len(markers) != 0 {
		t.Errorf("daemons %v left after unpreparing all (and %d temporary files)", markers, temps)
	}
}

// TestSharedGPUDaemonStopsWithTheLastSharesUnpreparedTogether unprepares
// the two shares of GPU 1 at once, both Undos deciding while both claims
// are recorded (the claim state lists a claim being unprepared among its
// SharingClaims until its record is removed, after its Undo): each must
// not keep the GPU's daemon for the other, whose unprepare is under way.
// After both unprepares returned no claim is recorded, so no daemon may
// run.
func TestSharedGPUDaemonStopsWithTheLastSharesUnpreparedTogether(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("this is the child process")
	}
	root := t.TempDir()
	d := dirs{DriverRoot: filepath.Join(root, "driver"), CDI: filepath.Join(root, "cdi"), Checkpoint: filepath.Join(root, "plugin", "claims"), Shares: filepath.Join(root, "shares")}
	_, inv := mockmachinetest.Machine(t, machine, nodeName)
	mockmachinetest.Host(t, d.DriverRoot, inv)
	if err := os.MkdirAll(d.CDI, 0o750); err != nil {
		t.Fatal(err)
	}
	ctx := klog.NewContext(context.Background(), logr.Discard())
	p, err := startPlugin(ctx, d, false)
	if err != nil {
		t.Fatal(err)
	}
	state, _, _, err := openState(ctx, d, p, formatStatic)
	if err != nil {
		t.Fatal(err)
	}
	var claims []*resourceapi.ResourceClaim
	for _, c := range shareTestClaims() {
		if w := shareOfResult(t, p, c.Status.Allocation.Devices.Results[0]); w.limited && w.gpu == p.inv.Devices[1].UUID {
			claims = append(claims, c)
		}
	}
	if len(claims) != 2 {
		t.Fatalf("%d shares of GPU 1, want 2", len(claims))
	}
	for _, c := range claims {
		if _, err := state.Prepare(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if markers, _ := daemonMarkers(t, -1, d.Shares); len(markers) != 1 {
		t.Fatalf("daemons %v with both shares prepared, want GPU 1's", markers)
	}

	arrived, release := make(chan struct{}), make(chan struct{})
	p.shares.undoGate = func() {
		arrived <- struct{}{}
		<-release
	}
	errs := make(chan error, len(claims))
	for _, c := range claims {
		go func() { errs <- state.Unprepare(ctx, c.Namespace, c.Name, c.UID) }()
	}
	for range claims {
		<-arrived
	}
	close(release)
	for range claims {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := state.PreparedClaims(); len(got) != 0 {
		t.Fatalf("prepared after both unprepares: %v", got)
	}
	held, _ := recordedShares(t, -1, d)
	if markers, _ := daemonMarkers(t, -1, d.Shares); len(markers) != 0 {
		t.Errorf("after both shares of GPU 1 were unprepared at once, its daemon still runs (daemons %v, recorded shares %v): "+
			"each Undo found the other claim among the recorded claims (State.SharingClaims lists a claim being unprepared until "+
			"its record is removed, after its Undo) and kept the daemon for it; mps.SharedGPUs decides the same way (holderLocked), "+
			"so the daemon pod of a GPU whose last shares go at once outlives them until the next start-up's Sweep", markers, held)
	}
}

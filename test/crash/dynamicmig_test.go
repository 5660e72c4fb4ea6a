package crash

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	resourceapi "k8s.io/api/resource/v1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/durable"
)

// migTestClaims are the claims of the dynamic MIG test: partitions of GPU 0
// that share it without sharing a memory slice, the whole partitionable
// GPU 1 (its prepare switches MIG mode off), the widest partition of GPU 2
// and a claim of two partitions of GPU 3. No two overlap, so that every
// claim can be prepared at once.
func migTestClaims() []*resourceapi.ResourceClaim {
	return makeClaims("mig-claim", 1, [][]string{
		{"gpu-0-mig-1g10gb-19-6"},
		{"gpu-0-mig-3g40gb-9-0"},
		{"gpu-0-mig-2g20gb-14-4"},
		{"gpu-1"},
		{"gpu-2-mig-7g80gb-0-0"},
		{"gpu-3-mig-1g20gb-15-0", "gpu-3-mig-1g20gb-15-2"},
	})
}

// TestCrashConsistencyDynamicMIG is TestCrashConsistency over partitionable
// GPUs (machine dgxh100, MIG mode off at first): the prepares create MIG
// devices (switching MIG mode on first), the unprepares destroy them, and
// the mock machine keeps its MIG state in a file whose directory is a
// source of kill points too ("migevent"), so that kills land between a
// MIG device's GPU instance and compute instance. After every restart,
// besides the invariants of TestCrashConsistency, it checks that no MIG
// instance leaked and none of a prepared claim is missing, that every
// prepared claim's MIG devices exist with the recorded identity and its
// spec names their capability nodes, and that no intent outlives the
// reconcile (see verifyMIG).
func TestCrashConsistencyDynamicMIG(t *testing.T) {
	runCrashTest(t, scenario{DynamicMIG: true})
}

// migStats count what the dynamic MIG test covered.
type migStats struct {
	// tempsSeen is the number of temporary files of MIG state writes
	// found in the MIG state directory at the last check.
	tempsSeen int
	// killsInStateWrite counts kills that left a new temporary file of a
	// MIG state write: the kill landed inside a MIG mutation's write.
	killsInStateWrite int
	// tornFound counts GPU instances without a compute instance found
	// after a kill (a creation or destruction cut in the middle).
	tornFound int
	// instancesAfterKill and destroyedByReconcile count the GPU instances
	// found after the kills, and how many of them the reconcile destroyed.
	instancesAfterKill   int
	destroyedByReconcile int
	// rolledBack and unpreparesFinished add up ReconcileReport's
	// MIGRolledBack and UnpreparesFinished.
	rolledBack         int
	unpreparesFinished int
	// instancesChecked counts GPU instances matched against the records,
	// migDevicesChecked recorded MIG devices found with their UUID, and
	// specsChecked the MIG devices of specs whose capability nodes were
	// checked.
	instancesChecked  int
	migDevicesChecked int
	specsChecked      int
	// uuidsKept counts claims left alone by a child whose MIG device UUIDs
	// were found unchanged.
	uuidsKept int
	// wholeChecked counts checks that a GPU prepared whole is out of MIG
	// mode; switchedOn counts the parent's switches of such a GPU into MIG
	// mode between children.
	wholeChecked int
	switchedOn   int
}

func logMIGStats(t *testing.T, st *stats) {
	t.Helper()
	m := &st.mig
	t.Logf("dynamic MIG: kills by mode: delay %d, file-system event %d, start-up %d, MIG state event %d; kills with an operation in flight: %d; "+
		"kills inside a MIG state write: %d; GPU instances without a compute instance found after a kill: %d; "+
		"GPU instances found after the kills %d, destroyed by the reconcile %d; interrupted prepares rolled back: %d; unprepares finished: %d; "+
		"instances checked: %d; MIG devices checked by UUID: %d; spec MIG devices checked: %d; untouched claims that kept their MIG UUIDs: %d; "+
		"whole GPUs checked out of MIG mode: %d; whole GPUs switched into MIG mode between children: %d",
		st.kills[killDelay], st.kills[killFSEvent], st.kills[killStartup], st.kills[killMIG], st.killedInFlight,
		m.killsInStateWrite, m.tornFound, m.instancesAfterKill, m.destroyedByReconcile, m.rolledBack, m.unpreparesFinished,
		m.instancesChecked, m.migDevicesChecked, m.specsChecked, m.uuidsKept, m.wholeChecked, m.switchedOn)
	if st.checkedRestarts >= 50 && m.rolledBack+m.unpreparesFinished+m.tornFound == 0 {
		t.Errorf("no kill interrupted a MIG device's creation or destruction: the kill points do not exercise dynamic MIG")
	}
}

// checkMIGScenario checks that the claims' devices exist on the fresh
// machine and that no two claims' devices overlap, and that every GPU is
// out of MIG mode at first.
func checkMIGScenario(t *testing.T, ctx context.Context, d dirs, claims []*resourceapi.ResourceClaim) {
	t.Helper()
	p, err := startPlugin(ctx, d, true)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	type placed struct {
		claim, name string
		gpu         string
		whole       bool
		start, end  int
	}
	var all []placed
	for _, c := range claims {
		for _, r := range c.Status.Allocation.Devices.Results {
			dev, ok := p.set.Get(r.Device)
			if !ok {
				missing = append(missing, r.Device)
				continue
			}
			pl := placed{claim: c.Name, name: r.Device, gpu: dev.GPUUUID(), whole: dev.Partitionable}
			switch {
			case dev.Dynamic != nil:
				pl.start, pl.end = dev.Dynamic.Placement.Start, dev.Dynamic.Placement.End()
			case dev.Partitionable:
			default:
				t.Fatalf("device %s is neither partitionable nor a partition", r.Device)
			}
			all = append(all, pl)
		}
	}
	if len(missing) > 0 {
		names := p.set.Names()
		sort.Strings(names)
		t.Fatalf("devices %v are not in the device set; it has %v", missing, names)
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.gpu == b.gpu && (a.whole || b.whole || (a.start < b.end && b.start < a.end)) {
				t.Fatalf("claims %s (%s) and %s (%s) overlap: they cannot be prepared at once", a.claim, a.name, b.claim, b.name)
			}
		}
	}
	for _, g := range p.inv.Devices {
		if cur, pend := migMode(t, p, g.UUID); cur != nvml.DEVICE_MIG_DISABLE || pend != nvml.DEVICE_MIG_DISABLE {
			t.Fatalf("GPU %d is in MIG mode (%d, pending %d) at first", g.Index, cur, pend)
		}
	}
}

func migMode(t *testing.T, p *plugin, uuid string) (current, pending int) {
	t.Helper()
	h, ret := p.lib.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		t.Fatalf("GPU %s: %v", uuid, ret)
	}
	current, pending, ret = h.GetMigMode()
	if ret != nvml.SUCCESS {
		t.Fatalf("GPU %s: MIG mode: %v", uuid, ret)
	}
	return current, pending
}

// migDevices returns the MIG devices that NVML lists on the GPU: their GPU
// instance and compute instance IDs by UUID.
func migDevices(t *testing.T, p *plugin, uuid string) map[string][2]int {
	t.Helper()
	out := map[string][2]int{}
	if cur, _ := migMode(t, p, uuid); cur != nvml.DEVICE_MIG_ENABLE {
		return out
	}
	h, _ := p.lib.DeviceGetHandleByUUID(uuid)
	count, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		t.Fatalf("GPU %s: MIG device count: %v", uuid, ret)
	}
	for i := range count {
		mh, ret := h.GetMigDeviceHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		u, ret1 := mh.GetUUID()
		gi, ret2 := mh.GetGpuInstanceId()
		ci, ret3 := mh.GetComputeInstanceId()
		if ret1 != nvml.SUCCESS || ret2 != nvml.SUCCESS || ret3 != nvml.SUCCESS {
			t.Fatalf("GPU %s: MIG device %d: %v %v %v", uuid, i, ret1, ret2, ret3)
		}
		out[u] = [2]int{gi, ci}
	}
	return out
}

// censusBeforeReconcile counts what the kill left of the MIG state before
// the restarted state reconciles it: temporary files of state writes,
// GPU instances, and those without a compute instance.
func censusBeforeReconcile(t *testing.T, round int, d dirs, p *plugin, st *stats) {
	t.Helper()
	dir := filepath.Dir(d.MIGState)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	temps := 0
	for _, e := range entries {
		switch {
		case durable.IsTemp(e.Name()):
			temps++
		case e.Name() == filepath.Base(d.MIGState):
		default:
			t.Errorf("kill %d: unexpected file %s in the MIG state directory", round, e.Name())
		}
	}
	if temps > st.mig.tempsSeen {
		st.mig.killsInStateWrite++
	}
	st.mig.tempsSeen = temps
	for _, g := range p.inv.Devices {
		gis, err := p.mig.GPUInstances(g.UUID)
		if err != nil {
			t.Fatalf("kill %d: GPU %d: %v", round, g.Index, err)
		}
		st.mig.instancesAfterKill += len(gis)
		st.mig.destroyedByReconcile += len(gis) // less those still there after it, in verifyMIG
		for _, gi := range gis {
			if len(gi.ComputeInstances) == 0 {
				st.mig.tornFound++
			}
		}
	}
}

// giKey identifies a GPU instance by what a claim record names of it
// before it exists.
type giKey struct {
	parent      string
	profileID   int
	start, size int
}

func (k giKey) String() string {
	return fmt.Sprintf("GPU instance profile %d at memory slices %d+%d of GPU %s", k.profileID, k.start, k.size, k.parent)
}

// verifyMIG checks, after the reconcile of a restart, the MIG devices
// against the checkpoint and the claim specs (a claim of a whole GPU may
// have static IDs and none; verifyAfterRestart checks which):
//   - (d) no record is left with an intent (a MIG device not recorded as
//     created);
//   - (a) the GPU instances on every GPU are exactly those of the created
//     MIG devices of the prepared claims (parent, profile, placement, GPU
//     instance ID), each with exactly one compute instance, the recorded
//     one: none leaked, none missing;
//   - (b) NVML lists every prepared claim's MIG device with the recorded
//     UUID and IDs;
//   - (c) the spec of a prepared claim names, for each of its MIG devices,
//     the parent GPU's node and the capability nodes of the recorded GPU
//     and compute instances (cdi.MIGDeviceEdits over
//     mockmachine.MIGCapMinors);
//   - a GPU prepared whole is out of MIG mode, no GPU has a pending mode,
//     and a claim that no child touched in the round kept its MIG devices'
//     UUIDs.
func verifyMIG(t *testing.T, round int, d dirs, p *plugin, specDir *cdi.SpecDir, claims []*resourceapi.ResourceClaim,
	prepared []string, model map[string]*claimModel, st *stats) {
	t.Helper()
	store, err := checkpoint.NewStore(d.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	recs, loadErrs, err := store.List()
	if err != nil || len(loadErrs) > 0 {
		t.Fatalf("kill %d: checkpoint: %v %v", round, err, loadErrs)
	}
	type owned struct {
		uid string
		dev checkpoint.PreparedDevice
	}
	want := map[giKey]owned{}
	byUID := map[string]*checkpoint.ClaimRecord{}
	for _, rec := range recs {
		byUID[rec.ClaimUID] = rec
		for _, dev := range rec.Devices {
			m := dev.MIG
			if m == nil {
				continue
			}
			if !m.Created {
				t.Errorf("kill %d: claim %s is left with the intent of MIG device %s (%+v) after the reconcile", round, rec.ClaimUID, dev.Device, *m)
				continue
			}
			if !slices.Contains(prepared, rec.ClaimUID) {
				continue // reported by the checks of the directories
			}
			if dev.UUID != m.UUID || !strings.HasPrefix(m.UUID, "MIG-") {
				t.Errorf("kill %d: claim %s: device %s recorded with UUID %q, its MIG device with %q", round, rec.ClaimUID, dev.Device, dev.UUID, m.UUID)
			}
			k := giKey{parent: m.ParentUUID, profileID: m.GPUInstanceProfileID, start: m.PlacementStart, size: m.PlacementSize}
			if o, dup := want[k]; dup && (o.uid != rec.ClaimUID || o.dev.Device != dev.Device) {
				t.Errorf("kill %d: claims %s and %s both hold %s", round, o.uid, rec.ClaimUID, k)
			}
			want[k] = owned{uid: rec.ClaimUID, dev: dev}
		}
	}

	// (a) and (b), GPU by GPU.
	seen := map[giKey]bool{}
	for _, g := range p.inv.Devices {
		gis, err := p.mig.GPUInstances(g.UUID)
		if err != nil {
			t.Fatalf("kill %d: GPU %d: %v", round, g.Index, err)
		}
		st.mig.destroyedByReconcile -= len(gis)
		cur, pend := migMode(t, p, g.UUID)
		if cur != pend {
			t.Errorf("kill %d: GPU %d is left with a pending MIG mode (%d, pending %d)", round, g.Index, cur, pend)
		}
		nvmlMIGs := migDevices(t, p, g.UUID)
		for _, gi := range gis {
			st.mig.instancesChecked++
			k := giKey{parent: g.UUID, profileID: gi.ProfileID, start: gi.Placement.Start, size: gi.Placement.Size}
			o, ok := want[k]
			if !ok {
				t.Errorf("kill %d: leaked MIG instance on GPU %d: GPU instance %d (%s) with compute instances %v, which no prepared claim holds",
					round, g.Index, gi.ID, k, gi.ComputeInstances)
				continue
			}
			seen[k] = true
			m := o.dev.MIG
			if gi.ID != m.GPUInstanceID || !slices.Equal(gi.ComputeInstances, []int{m.ComputeInstanceID}) {
				t.Errorf("kill %d: claim %s: device %s is recorded as GPU instance %d, compute instance %d; GPU %d has GPU instance %d with compute instances %v at its place",
					round, o.uid, o.dev.Device, m.GPUInstanceID, m.ComputeInstanceID, g.Index, gi.ID, gi.ComputeInstances)
			}
			if ids, ok := nvmlMIGs[m.UUID]; !ok || ids != [2]int{m.GPUInstanceID, m.ComputeInstanceID} {
				t.Errorf("kill %d: claim %s: device %s is recorded as MIG device %s (GPU instance %d, compute instance %d); NVML lists it as %v (found %v), its MIG devices are %v",
					round, o.uid, o.dev.Device, m.UUID, m.GPUInstanceID, m.ComputeInstanceID, ids, ok, nvmlMIGs)
			} else {
				st.mig.migDevicesChecked++
			}
		}
		if len(nvmlMIGs) != len(gis) {
			t.Errorf("kill %d: GPU %d has %d GPU instances and %d MIG devices %v", round, g.Index, len(gis), len(nvmlMIGs), nvmlMIGs)
		}
	}
	for k, o := range want {
		if !seen[k] {
			t.Errorf("kill %d: claim %s is prepared, but its device %s (%s, recorded as MIG device %s) does not exist", round, o.uid, o.dev.Device, k, o.dev.MIG.UUID)
		}
	}

	// (c), and the whole GPUs.
	naming := cdi.NewNaming(driverName)
	for _, uid := range prepared {
		rec := byUID[uid]
		if rec == nil {
			t.Errorf("kill %d: claim %s is prepared without a record", round, uid)
			continue
		}
		// A claim with static IDs (a whole GPU) has none; one with a MIG
		// device has one, or verifyAfterRestart reports it.
		spec, err := cdiapi.ReadSpec(specDir.Path(uid), 0)
		if err != nil {
			spec = nil
		}
		for _, dev := range rec.Devices {
			if set, ok := p.set.Get(dev.Device); ok && set.Partitionable {
				st.mig.wholeChecked++
				if cur, pend := migMode(t, p, set.UUID); cur != nvml.DEVICE_MIG_DISABLE || pend != nvml.DEVICE_MIG_DISABLE {
					t.Errorf("kill %d: claim %s has GPU %s whole, but the GPU is in MIG mode (%d, pending %d)", round, uid, dev.Device, cur, pend)
				}
			}
			m := dev.MIG
			if m == nil || !m.Created || spec == nil {
				continue
			}
			_, _, name := parseID(naming.DeviceID(uid, dev.Device))
			sd := spec.GetDevice(name)
			if sd == nil {
				continue // reported by verifyAfterRestart
			}
			parent, ok := p.inv.DeviceByUUID(m.ParentUUID)
			if !ok {
				t.Errorf("kill %d: claim %s: device %s: parent GPU %s unknown", round, uid, dev.Device, m.ParentUUID)
				continue
			}
			wantCaps := []string{
				capNode(p.caps, cdi.GPUInstanceCap(parent.Minor, m.GPUInstanceID)),
				capNode(p.caps, cdi.ComputeInstanceCap(parent.Minor, m.GPUInstanceID, m.ComputeInstanceID)),
			}
			var gotCaps []string
			gpuNode := false
			for _, n := range sd.ContainerEdits.DeviceNodes {
				switch {
				case strings.HasPrefix(n.Path, cdi.MIGCapsDir+"/"):
					gotCaps = append(gotCaps, n.Path)
				case n.Path == "/dev/nvidia"+strconv.Itoa(parent.Minor):
					gpuNode = true
				}
			}
			st.mig.specsChecked++
			if !slices.Equal(gotCaps, wantCaps) || !gpuNode {
				t.Errorf("kill %d: spec of claim %s: device %s (GPU instance %d, compute instance %d of GPU minor %d) has capability nodes %v and GPU node %v, want %v and /dev/nvidia%d",
					round, uid, dev.Device, m.GPUInstanceID, m.ComputeInstanceID, parent.Minor, gotCaps, gpuNode, wantCaps, parent.Minor)
			}
		}
	}

	// A claim that no child touched keeps its MIG devices.
	for _, c := range claims {
		uid := string(c.UID)
		m := model[uid]
		var uuids []string
		if rec := byUID[uid]; rec != nil && slices.Contains(prepared, uid) {
			for _, dev := range rec.Devices {
				if dev.MIG != nil {
					uuids = append(uuids, dev.MIG.UUID)
				}
			}
		}
		if !m.touched && m.migUUIDs != nil && uuids != nil {
			if slices.Equal(m.migUUIDs, uuids) {
				st.mig.uuidsKept++
			} else {
				t.Errorf("kill %d: claim %s, which the child did not touch, had MIG devices %v and now has %v", round, uid, m.migUUIDs, uuids)
			}
		}
		m.migUUIDs = uuids
	}
}

func capNode(caps map[string]int, name string) string {
	minor, ok := caps[name]
	if !ok {
		return "<no minor for " + name + ">"
	}
	return cdi.MIGCapsDir + "/nvidia-cap" + strconv.Itoa(minor)
}

// switchWholeGPUsIntoMIG puts, at random, the GPUs that a claim gets whole
// into MIG mode while that claim is not prepared (as a partition's prepare
// would have left them), so that the next child's prepare of the claim
// switches MIG mode off, and kills land in that switch.
func switchWholeGPUsIntoMIG(t *testing.T, round int, p *plugin, claims []*resourceapi.ResourceClaim, prepared []string, rng *rand.Rand, st *stats) {
	t.Helper()
	for _, c := range claims {
		if slices.Contains(prepared, string(c.UID)) {
			continue
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			dev, ok := p.set.Get(r.Device)
			if !ok || !dev.Partitionable || rng.IntN(2) != 0 {
				continue
			}
			if cur, _ := migMode(t, p, dev.UUID); cur == nvml.DEVICE_MIG_ENABLE {
				continue
			}
			h, _ := p.lib.DeviceGetHandleByUUID(dev.UUID)
			if activation, ret := h.SetMigMode(nvml.DEVICE_MIG_ENABLE); ret != nvml.SUCCESS || activation != nvml.SUCCESS {
				t.Fatalf("kill %d: switching GPU %s into MIG mode: %v (activation %v)", round, r.Device, ret, activation)
			}
			st.mig.switchedOn++
		}
	}
}

// noMIGInstancesLeft checks, on a fresh machine from the MIG state file,
// that no GPU holds a GPU instance after the final cleanup.
func noMIGInstancesLeft(t *testing.T, ctx context.Context, d dirs) {
	t.Helper()
	p, err := startPlugin(ctx, d, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range p.inv.Devices {
		gis, err := p.mig.GPUInstances(g.UUID)
		if err != nil {
			t.Fatal(err)
		}
		if len(gis) != 0 {
			t.Errorf("GPU %d holds %d GPU instances after unpreparing all: %+v", g.Index, len(gis), gis)
		}
	}
	if _, err := os.Stat(d.MIGState); err != nil {
		t.Errorf("no MIG state file after the run: %v", err)
	}
}

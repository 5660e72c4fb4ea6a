package crash

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	resourceapi "k8s.io/api/resource/v1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/durable"
)

// The shared CDI specs: the driver-wide spec and the static device spec.
// Every start of a child writes the driver-wide spec (formats static and
// claimSpecs), then the static device spec (format static), before
// claimstate.New (see openState), as the plugin does; every claim spec
// written after them references the driver spec, and every claim prepared
// with Naming.StaticDeviceIDs references both. Between children the parent
// sometimes replaces one by a stale one (a driver upgrade of the node: the
// next start-up rewrites it) or, when nothing references it, removes it (a
// fresh node: the next start-up writes it), so that the kills of the
// start-up ("startup", "fsevent") land inside its write too; a child whose
// start-up has to write one (it is missing, or stale half the time) is
// killed inside that write ("driverspec", "devicespec"). After every kill,
// before the restart writes them:
//   - each is valid and holds the current content or the one before the
//     child (a write is atomic, staged in the staging directory), or it is
//     missing;
//   - the driver spec is missing only when no claim spec and no recorded
//     claim references it, the device spec only when no recorded claim has
//     static IDs (nothing writes a claim spec or a record referencing them
//     before they are in place, nothing removes them);
//   - after the restart each is in place with the current content when the
//     restart's format writes it; the device spec that a start-up of the
//     claimSpecs format does not write is current or missing.
//
// With scenario.LegacySpecs neither must ever exist.

// sharedSpec is one of the shared specs.
type sharedSpec int

const (
	driverSpecKind sharedSpec = iota
	deviceSpecKind
	nSharedSpecs
)

var sharedSpecs = []sharedSpec{driverSpecKind, deviceSpecKind}

func (k sharedSpec) String() string {
	if k == driverSpecKind {
		return "driver spec"
	}
	return "device spec"
}

func (k sharedSpec) fileName() string {
	n := cdi.NewNaming(driverName)
	if k == driverSpecKind {
		return n.DriverSpecFileName()
	}
	return n.DeviceSpecFileName()
}

func (k sharedSpec) path(d dirs) string { return filepath.Join(d.CDI, k.fileName()) }

// isFile tells whether name is the spec's or one of its temporary files.
func (k sharedSpec) isFile(name string) bool {
	base := k.fileName()
	return name == base || (durable.IsTemp(name) && strings.HasPrefix(name, "."+base+"."))
}

// writtenBy tells whether the start-up of a plugin of format writes it.
func (k sharedSpec) writtenBy(format specFormat) bool {
	if k == driverSpecKind {
		return format != formatLegacy
	}
	return format == formatStatic
}

// killMode is the kill mode that kills inside its write.
func (k sharedSpec) killMode() killMode {
	if k == driverSpecKind {
		return killDriverSpec
	}
	return killDeviceSpec
}

// current is the encoding of p's spec, as the start-up writes it.
func (k sharedSpec) current(t *testing.T, p *plugin) []byte {
	t.Helper()
	spec, err := p.driverSpec()
	if k == deviceSpecKind {
		spec, err = p.deviceSpec()
	}
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// stale is a valid spec of the kind that a driver before an upgrade could
// have written: p's, each device with one more variable.
func (k sharedSpec) stale(t *testing.T, p *plugin, round int) []byte {
	t.Helper()
	naming := cdi.NewNaming(driverName)
	var spec *specs.Spec
	if k == driverSpecKind {
		common := cdi.CloneEdits(p.edits.Common())
		common.Env = append(common.Env, fmt.Sprintf("GPUDRA_CRASH_DRIVER_BEFORE_UPGRADE=%d", round))
		driver, err := cdi.DriverSpec(naming, common)
		if err != nil {
			t.Fatal(err)
		}
		spec = driver
	} else {
		cur, err := p.deviceSpec()
		if err != nil {
			t.Fatal(err)
		}
		var devs []cdi.ClaimDevice
		for _, d := range cur.Devices {
			devs = append(devs, cdi.ClaimDevice{Name: d.Name, Edits: d.ContainerEdits, Env: []string{fmt.Sprintf("GPUDRA_CRASH_DEVICE_BEFORE_UPGRADE=%d", round)}})
		}
		if spec, err = cdi.DeviceSpec(naming, devs); err != nil {
			t.Fatal(err)
		}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// sharedSpecStats count what the run did to one shared spec.
type sharedSpecStats struct {
	// stale is the content the parent planted before the last child
	// (nil: none).
	stale []byte
	// plantedStale, removed: the parent's changes between children.
	plantedStale, removed int
	// What the kills left: the current content, the stale one, none
	// (counted where the child's start-up writes it).
	foundCurrent, foundStale, foundMissing int
	// killsInWrite: kills (of any mode) that left a new temporary file
	// of the spec, so that landed between its creation and its rename.
	killsInWrite int
	// Of the kills on its write's events (its kill mode): those that
	// left a new temporary file (inside the write), and those after which
	// it held the new content (after the rename).
	targetedInWrite, targetedAfterRename int
	// tempsSeen are the temporary files of the spec seen so far.
	tempsSeen map[string]bool
}

// driverSpecStats count what the run did to the shared specs.
type driverSpecStats struct {
	specs [nSharedSpecs]sharedSpecStats
	// injected: prepared claims whose CDI IDs the CDI library resolved.
	injected int
	// staticChecked: prepared claims with static IDs checked to have no
	// claim spec; claimSpecChecked: prepared claims checked to have theirs.
	staticChecked, claimSpecChecked int
	// formatSwitches: children whose format differed from the previous
	// child's; otherFormat: prepared claims found at a restart with IDs of
	// another format than the one the restart gives new claims; drained:
	// claims with static IDs unprepared before a downgrade.
	formatSwitches, otherFormat, drained int
}

func logDriverSpecStats(t *testing.T, st *stats) {
	t.Helper()
	d := &st.driver
	for _, k := range sharedSpecs {
		s := &d.specs[k]
		t.Logf("%s: planted stale between children %d, removed %d; kills on its write's events %d (inside the write, temporary file left, %d; after the rename %d); "+
			"kills of any mode inside its write %d; after the kills found current %d, stale %d, missing %d",
			k, s.plantedStale, s.removed, st.kills[k.killMode()], s.targetedInWrite, s.targetedAfterRename,
			s.killsInWrite, s.foundCurrent, s.foundStale, s.foundMissing)
	}
	t.Logf("claims: prepared claims resolved by the CDI library %d; with static IDs checked to have no claim spec %d, with a claim spec checked %d; "+
		"children of another format than the previous child's %d; prepared claims found at a restart in another format than its new claims' %d; "+
		"claims with static IDs unprepared before a downgrade %d",
		d.injected, d.staticChecked, d.claimSpecChecked, d.formatSwitches, d.otherFormat, d.drained)
}

// driverSpecWrite tells whether the next child's start-up has to write a
// shared spec.
type driverSpecWrite int

const (
	writeNone driverSpecWrite = iota
	writeMissing
	writeStale
)

func sharedSpecToWrite(t *testing.T, k sharedSpec, d dirs, format specFormat, st *stats) driverSpecWrite {
	t.Helper()
	if !k.writtenBy(format) {
		return writeNone
	}
	if _, err := os.Lstat(k.path(d)); errors.Is(err, os.ErrNotExist) {
		return writeMissing
	} else if err != nil {
		t.Fatal(err)
	}
	if st.driver.specs[k].stale != nil {
		return writeStale
	}
	return writeNone
}

func driverSpecPath(d dirs) string { return driverSpecKind.path(d) }

func stagingDir(d dirs) string {
	return filepath.Join(d.CDI, cdi.NewNaming(driverName).StagingDirName())
}

// claimSpecUIDs lists the claims that have a spec in d.CDI.
func claimSpecUIDs(t *testing.T, d dirs) []string {
	t.Helper()
	specDir, err := cdi.NewSpecDir(d.CDI, cdi.NewNaming(driverName))
	if err != nil {
		t.Fatal(err)
	}
	uids, err := specDir.ClaimUIDs()
	if err != nil {
		t.Fatal(err)
	}
	return uids
}

// readRecords returns the checkpoint's records by claim UID, as they lie
// on disk; unreadable ones are reported elsewhere.
func readRecords(t *testing.T, d dirs) map[string]*checkpoint.ClaimRecord {
	t.Helper()
	store, err := checkpoint.NewStore(d.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	recs, _, err := store.List()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*checkpoint.ClaimRecord{}
	for _, r := range recs {
		out[r.ClaimUID] = r
	}
	return out
}

// recordedIDs are the CDI device IDs of rec, in order.
func recordedIDs(rec *checkpoint.ClaimRecord) []string {
	var ids []string
	for _, dev := range rec.Devices {
		ids = append(ids, dev.CDIDeviceIDs...)
	}
	return ids
}

// referencing returns the recorded claims whose IDs reference the shared
// spec k, and for the driver spec, unless the scenario is legacySpecs
// (whose claim specs are self-contained), the claims with a spec too (a
// claim spec may be written before its record, and outlive it for a
// moment).
func referencing(t *testing.T, k sharedSpec, d dirs, sc scenario, recs map[string]*checkpoint.ClaimRecord) []string {
	t.Helper()
	class := cdi.DriverClass
	if k == deviceSpecKind {
		class = cdi.DeviceClass
	}
	var uids []string
	for uid, rec := range recs {
		if slices.ContainsFunc(recordedIDs(rec), func(id string) bool { _, c, _ := parseID(id); return c == class }) {
			uids = append(uids, uid)
		}
	}
	if k == driverSpecKind && !sc.LegacySpecs {
		for _, uid := range claimSpecUIDs(t, d) {
			if !slices.Contains(uids, uid) {
				uids = append(uids, uid)
			}
		}
	}
	slices.Sort(uids)
	return uids
}

// checkSharedSpecsAfterKill checks what the kill (of a child of format, in
// mode) left of the shared specs, before the restart touches them.
func checkSharedSpecsAfterKill(t *testing.T, round int, d dirs, sc scenario, format specFormat, mode killMode, p *plugin, st *stats) {
	t.Helper()
	recs := readRecords(t, d)
	for _, k := range sharedSpecs {
		s := &st.driver.specs[k]
		if s.tempsSeen == nil {
			s.tempsSeen = map[string]bool{}
		}
		newTemp := false
		for _, dir := range []string{stagingDir(d), d.CDI} {
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if name := e.Name(); durable.IsTemp(name) && k.isFile(name) && !s.tempsSeen[filepath.Join(dir, name)] {
					s.tempsSeen[filepath.Join(dir, name)] = true
					newTemp = true
				}
			}
		}
		if newTemp {
			s.killsInWrite++
			if mode == k.killMode() {
				s.targetedInWrite++
			}
		}

		path := k.path(d)
		data, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if k.writtenBy(format) {
				s.foundMissing++
			}
			if uids := referencing(t, k, d, sc, recs); len(uids) > 0 {
				t.Errorf("kill %d: claims %v reference the %s %s, which is missing", round, uids, k, path)
			}
			continue
		case err != nil:
			t.Errorf("kill %d: %s: %v", round, k, err)
			continue
		}
		if sc.LegacySpecs {
			t.Errorf("kill %d: a plugin from before the driver spec wrote %s", round, path)
			continue
		}
		if _, err := cdiapi.ReadSpec(path, 0); err != nil {
			t.Errorf("kill %d: the %s is unusable (torn write?): %v", round, k, err)
		}
		switch {
		case bytes.Equal(data, k.current(t, p)):
			if k.writtenBy(format) {
				s.foundCurrent++
			}
			if mode == k.killMode() {
				s.targetedAfterRename++
			}
		case s.stale != nil && bytes.Equal(data, s.stale):
			s.foundStale++
		default:
			t.Errorf("kill %d: the %s holds neither the current content nor the one before the child:\n%s", round, k, data)
		}
	}
}

// checkSharedSpecsAfterRestart checks the shared specs once the state of a
// plugin of format is open: each in place with the current content when
// the format writes it, the device spec current or missing with the
// claimSpecs format, neither with the legacy one.
func checkSharedSpecsAfterRestart(t *testing.T, round int, d dirs, format specFormat, p *plugin) {
	t.Helper()
	for _, k := range sharedSpecs {
		path := k.path(d)
		data, err := os.ReadFile(path)
		switch {
		case format == formatLegacy:
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("kill %d: a plugin from before the driver spec has %s (%v)", round, path, err)
			}
		case errors.Is(err, os.ErrNotExist) && !k.writtenBy(format):
		case err != nil:
			t.Errorf("kill %d: no %s after the restart: %v", round, k, err)
		case !bytes.Equal(data, k.current(t, p)):
			t.Errorf("kill %d: the restart left a stale %s:\n%s", round, k, data)
		}
	}
}

// changeSharedSpecs, between children, sometimes replaces a shared spec
// that the next child's start-up (of format) writes by a stale one, or
// removes it when nothing references it; it records what it planted in st.
func changeSharedSpecs(t *testing.T, d dirs, sc scenario, format specFormat, p *plugin, rng *rand.Rand, st *stats, round int) {
	t.Helper()
	recs := readRecords(t, d)
	for _, k := range sharedSpecs {
		s := &st.driver.specs[k]
		s.stale = nil
		if !k.writtenBy(format) {
			continue
		}
		switch r := rng.IntN(8); {
		case r < 2:
			data := k.stale(t, p, round)
			if err := durable.WriteFile(k.path(d), data, 0o644); err != nil {
				t.Fatal(err)
			}
			s.stale = data
			s.plantedStale++
		case r == 2 && len(referencing(t, k, d, sc, recs)) == 0:
			if err := durable.Remove(k.path(d)); err != nil {
				t.Fatal(err)
			}
			s.removed++
		}
	}
}

// claimSpecFormat checks that the claim spec has the format its IDs tell:
// with the driver spec, none of the driver-wide edits; self-contained,
// all of them.
func claimSpecFormat(t *testing.T, round int, uid string, spec *cdiapi.Spec, f idFormat, p *plugin) {
	t.Helper()
	common := p.edits.Common()
	var commonNodes []string
	for _, n := range common.DeviceNodes {
		commonNodes = append(commonNodes, n.Path)
	}
	var nodes []string
	for _, n := range spec.ContainerEdits.DeviceNodes {
		nodes = append(nodes, n.Path)
	}
	void := slices.Contains(spec.ContainerEdits.Env, cdi.VisibleDevicesVoid)
	if f == idsSelfContained {
		for _, n := range commonNodes {
			if !slices.Contains(nodes, n) {
				t.Errorf("kill %d: self-contained spec of claim %s lacks the driver-wide device node %s", round, uid, n)
			}
		}
		if !void {
			t.Errorf("kill %d: self-contained spec of claim %s lacks %s", round, uid, cdi.VisibleDevicesVoid)
		}
		return
	}
	for _, n := range commonNodes {
		if slices.Contains(nodes, n) {
			t.Errorf("kill %d: spec of claim %s holds the driver-wide device node %s, which belongs to the driver spec", round, uid, n)
		}
	}
	if void {
		t.Errorf("kill %d: spec of claim %s holds %s, which belongs to the driver spec", round, uid, cdi.VisibleDevicesVoid)
	}
}

// newCDICache loads d.CDI as the container runtime does; no spec may be
// unusable.
func newCDICache(t *testing.T, round int, d dirs) *cdiapi.Cache {
	t.Helper()
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(d.CDI), cdiapi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) != 0 {
		t.Errorf("kill %d: the CDI library refuses specs of the directory: %v", round, errs)
	}
	return cache
}

// deviceNodes are the device nodes that a container of the recorded
// device dev must get: a dynamic MIG device's parent GPU and capability
// nodes (of its recorded GPU and compute instances), another device's
// nodes from p's edits.
func deviceNodes(t *testing.T, p *plugin, dev checkpoint.PreparedDevice) []string {
	t.Helper()
	if m := dev.MIG; m != nil {
		parent, ok := p.inv.DeviceByUUID(m.ParentUUID)
		if !ok {
			t.Fatalf("device %s: parent GPU %s unknown", dev.Device, m.ParentUUID)
		}
		return []string{
			"/dev/nvidia" + strconv.Itoa(parent.Minor),
			capNode(p.caps, cdi.GPUInstanceCap(parent.Minor, m.GPUInstanceID)),
			capNode(p.caps, cdi.ComputeInstanceCap(parent.Minor, m.GPUInstanceID, m.ComputeInstanceID)),
		}
	}
	edits, err := p.edits.Device(dev.UUID)
	if err != nil {
		t.Fatalf("device %s (%s): %v", dev.Device, dev.UUID, err)
	}
	var nodes []string
	for _, n := range edits.DeviceNodes {
		nodes = append(nodes, n.Path)
	}
	return nodes
}

// checkInjection resolves the CDI IDs of prepared claim c (ids, of its
// record rec) as the container runtime does: whatever the format, the
// container gets the driver-wide device nodes, NVIDIA_VISIBLE_DEVICES=void
// and every device node of each of the claim's devices.
func checkInjection(t *testing.T, round int, cache *cdiapi.Cache, c *resourceapi.ResourceClaim, ids []string, rec *checkpoint.ClaimRecord, p *plugin, st *stats) {
	t.Helper()
	spec := &oci.Spec{Process: &oci.Process{}}
	if unresolved, err := cache.InjectDevices(spec, ids...); err != nil {
		t.Errorf("kill %d: claim %s: the CDI library resolves %v: unresolved %v: %v", round, c.UID, ids, unresolved, err)
		return
	}
	st.driver.injected++
	var nodes []string
	if spec.Linux != nil {
		for _, n := range spec.Linux.Devices {
			nodes = append(nodes, n.Path)
		}
	}
	for _, n := range p.edits.Common().DeviceNodes {
		if !slices.Contains(nodes, n.Path) {
			t.Errorf("kill %d: claim %s: a container with %v lacks the driver-wide device node %s (it has %v)", round, c.UID, ids, n.Path, nodes)
		}
	}
	if rec != nil {
		for _, dev := range rec.Devices {
			for _, n := range deviceNodes(t, p, dev) {
				if !slices.Contains(nodes, n) {
					t.Errorf("kill %d: claim %s: a container with %v lacks the device node %s of its device %s (it has %v)", round, c.UID, ids, n, dev.Device, nodes)
				}
			}
		}
	}
	if !slices.Contains(spec.Process.Env, cdi.VisibleDevicesVoid) {
		t.Errorf("kill %d: claim %s: a container with %v lacks %s", round, c.UID, ids, cdi.VisibleDevicesVoid)
	}
}

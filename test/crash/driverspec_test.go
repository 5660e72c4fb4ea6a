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
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	resourceapi "k8s.io/api/resource/v1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/durable"
)

// The driver-wide CDI spec. Every start of the child writes it before
// claimstate.New (see openState), as the plugin does, and every claim spec
// written after it references it. Between children the parent sometimes
// replaces it by a stale one (a driver upgrade of the node: the next
// start-up rewrites it) or, when no claim spec exists, removes it (a fresh
// node: the next start-up writes it), so that the kills of the start-up
// ("startup", "fsevent") land inside its write too; a child whose start-up
// has to write it (it is missing, or stale half the time) is killed inside
// that write ("driverspec"). After every kill:
//   - the driver spec is valid and holds the current content or the one
//     before the child (a write is atomic), or it is missing;
//   - it is missing only when no claim spec exists (nothing writes a claim
//     spec referencing it before it is in place, nothing removes it);
//   - after the restart it is in place with the current content.
//
// Without the driver spec (scenario.LegacySpecs) it must never exist.

// driverSpecStats count what the run did to the driver-wide spec.
type driverSpecStats struct {
	// stale is the content the parent planted before the last child
	// (nil: none).
	stale []byte
	// plantedStale, removed: the parent's changes between children.
	plantedStale, removed int
	// What the kills left: the current content, the stale one, none.
	foundCurrent, foundStale, foundMissing int
	// killsInWrite: kills that left a new temporary file of the driver
	// spec, so that landed between its creation and its rename.
	killsInWrite int
	// tempsSeen are the temporary files of the driver spec seen so far.
	tempsSeen map[string]bool
	// injected: prepared claims whose CDI IDs the CDI library resolved.
	injected int
}

func logDriverSpecStats(t *testing.T, st *stats) {
	t.Helper()
	s := &st.driver
	t.Logf("driver spec: planted stale between children %d, removed %d; kills on its write events %d; after the kills found current %d, stale %d, missing %d; "+
		"kills inside its write (temporary file left) %d; prepared claims resolved by the CDI library %d",
		s.plantedStale, s.removed, st.kills[killDriverSpec], s.foundCurrent, s.foundStale, s.foundMissing, s.killsInWrite, s.injected)
}

// driverSpecWrite tells whether the next child's start-up has to write the
// driver spec.
type driverSpecWrite int

const (
	writeNone driverSpecWrite = iota
	writeMissing
	writeStale
)

func driverSpecToWrite(t *testing.T, d dirs, sc scenario, st *stats) driverSpecWrite {
	t.Helper()
	if sc.LegacySpecs {
		return writeNone
	}
	if _, err := os.Lstat(driverSpecPath(d)); errors.Is(err, os.ErrNotExist) {
		return writeMissing
	} else if err != nil {
		t.Fatal(err)
	}
	if st.driver.stale != nil {
		return writeStale
	}
	return writeNone
}

// isDriverSpecFile tells whether name is the driver spec's or one of its
// temporary files.
func isDriverSpecFile(name string) bool {
	base := cdi.NewNaming(driverName).DriverSpecFileName()
	return name == base || (durable.IsTemp(name) && strings.HasPrefix(name, "."+base+"."))
}

func driverSpecPath(d dirs) string {
	return filepath.Join(d.CDI, cdi.NewNaming(driverName).DriverSpecFileName())
}

// currentDriverSpec is the encoding of p's driver spec, as WriteDriverSpec
// writes it.
func currentDriverSpec(t *testing.T, p *plugin) []byte {
	t.Helper()
	spec, err := p.driverSpec()
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return data
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

// checkDriverSpecAfterKill checks what the kill left of the driver spec,
// before the restart touches it.
func checkDriverSpecAfterKill(t *testing.T, round int, d dirs, sc scenario, p *plugin, st *stats) {
	t.Helper()
	s := &st.driver
	if s.tempsSeen == nil {
		s.tempsSeen = map[string]bool{}
	}
	entries, err := os.ReadDir(d.CDI)
	if err != nil {
		t.Fatal(err)
	}
	newTemp := false
	for _, e := range entries {
		if name := e.Name(); durable.IsTemp(name) && isDriverSpecFile(name) && !s.tempsSeen[name] {
			s.tempsSeen[name] = true
			newTemp = true
		}
	}
	if newTemp {
		s.killsInWrite++
	}

	path := driverSpecPath(d)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if sc.LegacySpecs {
			return
		}
		s.foundMissing++
		if uids := claimSpecUIDs(t, d); len(uids) > 0 {
			t.Errorf("kill %d: the specs of claims %v exist without the driver spec %s", round, uids, path)
		}
		return
	case err != nil:
		t.Errorf("kill %d: driver spec: %v", round, err)
		return
	}
	if sc.LegacySpecs {
		t.Errorf("kill %d: a plugin from before the driver spec wrote %s", round, path)
		return
	}
	if _, err := cdiapi.ReadSpec(path, 0); err != nil {
		t.Errorf("kill %d: the driver spec is unusable (torn write?): %v", round, err)
	}
	switch {
	case bytes.Equal(data, currentDriverSpec(t, p)):
		s.foundCurrent++
	case s.stale != nil && bytes.Equal(data, s.stale):
		s.foundStale++
	default:
		t.Errorf("kill %d: the driver spec holds neither the current content nor the one before the child:\n%s", round, data)
	}
}

// checkDriverSpecAfterRestart checks the driver spec once the restarted
// state is open: in place with the current content (none without it).
func checkDriverSpecAfterRestart(t *testing.T, round int, d dirs, sc scenario, p *plugin) {
	t.Helper()
	path := driverSpecPath(d)
	data, err := os.ReadFile(path)
	if sc.LegacySpecs {
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("kill %d: a plugin from before the driver spec has %s (%v)", round, path, err)
		}
		return
	}
	if err != nil {
		t.Errorf("kill %d: no driver spec after the restart: %v", round, err)
		return
	}
	if !bytes.Equal(data, currentDriverSpec(t, p)) {
		t.Errorf("kill %d: the restart left a stale driver spec:\n%s", round, data)
	}
}

// changeDriverSpec, between children, sometimes replaces the driver spec by
// a stale one, or removes it when no claim spec exists; it records what it
// planted in st.
func changeDriverSpec(t *testing.T, d dirs, sc scenario, p *plugin, rng *rand.Rand, st *stats, round int) {
	t.Helper()
	s := &st.driver
	s.stale = nil
	if sc.LegacySpecs {
		return
	}
	switch r := rng.IntN(8); {
	case r < 2:
		common := cdi.CloneEdits(p.edits.Common())
		common.Env = append(common.Env, fmt.Sprintf("GPUDRA_CRASH_DRIVER_BEFORE_UPGRADE=%d", round))
		spec, err := cdi.DriverSpec(cdi.NewNaming(driverName), common)
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := durable.WriteFile(driverSpecPath(d), data, 0o644); err != nil {
			t.Fatal(err)
		}
		s.stale = data
		s.plantedStale++
	case r == 2 && len(claimSpecUIDs(t, d)) == 0:
		if err := durable.Remove(driverSpecPath(d)); err != nil {
			t.Fatal(err)
		}
		s.removed++
	}
}

// claimSpecFormat checks that the claim spec has the format its IDs tell:
// with the driver spec, none of the driver-wide edits; self-contained,
// all of them.
func claimSpecFormat(t *testing.T, round int, uid string, spec *cdiapi.Spec, sc scenario, p *plugin) {
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
	if sc.LegacySpecs {
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

// checkInjection resolves the CDI IDs of prepared claim c as the container
// runtime does: the container gets the driver-wide device nodes and
// NVIDIA_VISIBLE_DEVICES=void whatever the format.
func checkInjection(t *testing.T, round int, cache *cdiapi.Cache, c *resourceapi.ResourceClaim, sc scenario, p *plugin, st *stats) {
	t.Helper()
	ids := wantIDs(c, sc.LegacySpecs)
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
	if !slices.Contains(spec.Process.Env, cdi.VisibleDevicesVoid) {
		t.Errorf("kill %d: claim %s: a container with %v lacks %s", round, c.UID, ids, cdi.VisibleDevicesVoid)
	}
}

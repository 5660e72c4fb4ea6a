package cdi_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"sigs.k8s.io/yaml"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
)

// claimUID has the length of a real claim UID, so that the sizes below are
// those of a real node.
const claimUID = "0c4a5400-0000-4000-8000-000000000001"

func TestDriverSpecNaming(t *testing.T) {
	n := cdi.NewNaming("gpu.nvidia.com")
	if got := n.DriverKind(); got != "k8s.gpu.nvidia.com/driver" {
		t.Errorf("driver kind %s", got)
	}
	if got := n.DriverSpecFileName(); got != "k8s.gpu.nvidia.com-driver.json" {
		t.Errorf("driver spec file name %s", got)
	}
	if got := n.DriverDeviceID(); got != "k8s.gpu.nvidia.com/driver=common" {
		t.Errorf("driver device ID %s", got)
	}
	ids := n.DeviceIDs("abc-123", "gpu-0")
	if want := []string{"k8s.gpu.nvidia.com/driver=common", "k8s.gpu.nvidia.com/claim=abc-123-gpu-0"}; !slices.Equal(ids, want) {
		t.Errorf("device IDs %v, want %v", ids, want)
	}
	if !n.UsesDriverSpec(ids) || n.UsesDriverSpec([]string{n.DeviceID("abc-123", "gpu-0")}) {
		t.Errorf("UsesDriverSpec tells the formats apart wrongly")
	}
	if cdi.NewNaming("other.example.com").UsesDriverSpec(ids) {
		t.Errorf("another driver's naming takes this driver's device for its own")
	}
}

func TestDriverSpecIsAcceptedByTheCDILibrary(t *testing.T) {
	m := newMockDriver(t)
	n := cdi.NewNaming("gpu.nvidia.com")
	common := m.edits.Common()
	before := fmt.Sprint(common.Env)
	spec, err := cdi.DriverSpec(n, common)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(m.edits.Common().Env) != before {
		t.Errorf("DriverSpec changed the cached common edits")
	}
	dir, err := cdi.NewSpecDir(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	written, err := dir.WriteDriverSpec(spec)
	if err != nil || !written {
		t.Fatalf("WriteDriverSpec = %v, %v; want a write", written, err)
	}
	if dir.DriverSpecPath() != filepath.Join(dir.Dir(), "k8s.gpu.nvidia.com-driver.json") {
		t.Errorf("driver spec path %s", dir.DriverSpecPath())
	}
	loaded, err := cdiapi.ReadSpec(dir.DriverSpecPath(), 0)
	if err != nil {
		t.Fatalf("CDI library refuses the driver spec: %v", err)
	}
	if loaded.Kind != "k8s.gpu.nvidia.com/driver" || len(loaded.Devices) != 1 {
		t.Fatalf("driver spec kind %s, %d devices", loaded.Kind, len(loaded.Devices))
	}
	dev := loaded.GetDevice(cdi.DriverDevice)
	if dev == nil || !reflect.DeepEqual(dev.ContainerEdits, specs.ContainerEdits{Env: []string{cdi.VisibleDevicesVoid}}) {
		t.Errorf("driver device %+v, want only %s", dev, cdi.VisibleDevicesVoid)
	}
	// Spec level: exactly the driver-wide edits, NVIDIA_VISIBLE_DEVICES
	// being the device's.
	want := cdi.CloneEdits(common)
	want.Env = slices.DeleteFunc(want.Env, func(e string) bool { return e == cdi.VisibleDevicesVoid })
	if got, _ := json.Marshal(loaded.ContainerEdits); string(got) != string(mustJSON(t, want)) {
		t.Errorf("driver spec edits\n%s\nwant\n%s", got, mustJSON(t, want))
	}
	if uids, err := dir.ClaimUIDs(); err != nil || len(uids) != 0 {
		t.Errorf("ClaimUIDs lists the driver spec: %v %v", uids, err)
	}

	// Unchanged content: no write, so no file event for the runtime.
	fi, _ := os.Stat(dir.DriverSpecPath())
	if written, err := dir.WriteDriverSpec(spec); err != nil || written {
		t.Errorf("rewriting the same driver spec: %v, %v; want no write", written, err)
	}
	if fi2, _ := os.Stat(dir.DriverSpecPath()); !os.SameFile(fi, fi2) {
		t.Errorf("the unchanged driver spec was replaced")
	}
	// Changed content (another driver version): replaced.
	changed, err := cdi.DriverSpec(n, specs.ContainerEdits{Env: []string{"NVIDIA_CTK_LIBCUDA_DIR=/other"}})
	if err != nil {
		t.Fatal(err)
	}
	if written, err := dir.WriteDriverSpec(changed); err != nil || !written {
		t.Errorf("writing a changed driver spec: %v, %v; want a write", written, err)
	}
	if loaded, err := cdiapi.ReadSpec(dir.DriverSpecPath(), 0); err != nil || !slices.Equal(loaded.ContainerEdits.Env, []string{"NVIDIA_CTK_LIBCUDA_DIR=/other"}) {
		t.Errorf("changed driver spec: %v %v", loaded, err)
	}
	// EnsureDriverSpec leaves an existing one alone and re-creates a
	// missing one.
	if err := dir.EnsureDriverSpec(spec); err != nil {
		t.Fatal(err)
	}
	if loaded, _ := cdiapi.ReadSpec(dir.DriverSpecPath(), 0); !slices.Equal(loaded.ContainerEdits.Env, []string{"NVIDIA_CTK_LIBCUDA_DIR=/other"}) {
		t.Errorf("EnsureDriverSpec replaced an existing driver spec")
	}
	if err := os.Remove(dir.DriverSpecPath()); err != nil {
		t.Fatal(err)
	}
	if err := dir.EnsureDriverSpec(spec); err != nil {
		t.Fatal(err)
	}
	if _, err := cdiapi.ReadSpec(dir.DriverSpecPath(), 0); err != nil {
		t.Errorf("EnsureDriverSpec did not re-create the driver spec: %v", err)
	}
}

func TestSpecDirRemovesStaleTempsOfTheDriverSpec(t *testing.T) {
	n := cdi.NewNaming("gpu.nvidia.com")
	dir, err := cdi.NewSpecDir(t.TempDir(), n)
	if err != nil {
		t.Fatal(err)
	}
	temp := filepath.Join(dir.Dir(), "."+n.DriverSpecFileName()+".0123456789abcdef.tmp")
	if err := os.WriteFile(temp, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(temp, old, old); err != nil {
		t.Fatal(err)
	}
	if removed, err := dir.RemoveStaleTemps(time.Minute); err != nil || removed != 1 {
		t.Errorf("RemoveStaleTemps = %d, %v; want the driver spec's temporary file", removed, err)
	}
}

func TestDeviceWithoutEditsIsRefused(t *testing.T) {
	_, err := cdi.ClaimSpecUsingDriverSpec(cdi.NewNaming("gpu.nvidia.com"), "uid-1", specs.ContainerEdits{}, []cdi.ClaimDevice{{Name: "gpu-0"}})
	if err == nil || !strings.Contains(err.Error(), "no container edits") {
		t.Errorf("err = %v, want the CDI library's refusal of a device without edits", err)
	}
}

// withDeviceTypes makes every device node of e a character device, as a
// real node's are: the CDI library then takes the node as specified and
// does not stat the mock host's plain files when it injects the edits.
func withDeviceTypes(e specs.ContainerEdits) specs.ContainerEdits {
	out := cdi.CloneEdits(e)
	for i, n := range out.DeviceNodes {
		c := *n
		c.Type = "c"
		out.DeviceNodes[i] = &c
	}
	return out
}

// claimCase is one claim of the mock machine, in both formats.
type claimCase struct {
	uid        string
	devices    []cdi.ClaimDevice
	claimEdits specs.ContainerEdits // sharing edits
}

func mockClaim(t testing.TB, m *mockDriver, uid string, gpus ...int) claimCase {
	t.Helper()
	c := claimCase{uid: uid}
	for _, i := range gpus {
		e, err := m.edits.Device(m.inv.Devices[i].UUID)
		if err != nil {
			t.Fatal(err)
		}
		c.devices = append(c.devices, cdi.ClaimDevice{Name: fmt.Sprintf("gpu-%d", i), Edits: withDeviceTypes(e)})
	}
	return c
}

// specFormat writes claims' specs into a CDI directory and says which CDI
// IDs a container gets for a claim's devices.
type specFormat struct {
	name  string
	write func(t testing.TB, dir string, common specs.ContainerEdits, claims []claimCase, ext string) (sizes []int)
	ids   func(c claimCase) []string
}

var gpuNaming = cdi.NewNaming("gpu.nvidia.com")

var (
	selfContained = specFormat{
		name: "self-contained claim specs",
		write: func(t testing.TB, dir string, common specs.ContainerEdits, claims []claimCase, ext string) []int {
			var sizes []int
			for _, c := range claims {
				spec, err := cdi.ClaimSpec(gpuNaming, c.uid, sharingMerged(common, c.claimEdits), c.devices)
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, writeSpec(t, dir, strings.TrimSuffix(gpuNaming.SpecFileName(c.uid), ".json")+ext, spec))
			}
			return sizes
		},
		ids: func(c claimCase) []string {
			var ids []string
			for _, d := range c.devices {
				ids = append(ids, gpuNaming.DeviceID(c.uid, d.Name))
			}
			return ids
		},
	}
	withDriverSpec = specFormat{
		name: "claim specs with a driver spec",
		write: func(t testing.TB, dir string, common specs.ContainerEdits, claims []claimCase, ext string) []int {
			driver, err := cdi.DriverSpec(gpuNaming, common)
			if err != nil {
				t.Fatal(err)
			}
			driverExt := ext
			if ext == ".yaml+json" {
				driverExt, ext = ".yaml", ".json"
			}
			sizes := []int{writeSpec(t, dir, strings.TrimSuffix(gpuNaming.DriverSpecFileName(), filepath.Ext(gpuNaming.DriverSpecFileName()))+driverExt, driver)}
			for _, c := range claims {
				spec, err := cdi.ClaimSpecUsingDriverSpec(gpuNaming, c.uid, c.claimEdits, c.devices)
				if err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, writeSpec(t, dir, strings.TrimSuffix(gpuNaming.SpecFileName(c.uid), ".json")+ext, spec))
			}
			return sizes
		},
		ids: func(c claimCase) []string {
			var ids []string
			for _, d := range c.devices {
				ids = append(ids, gpuNaming.DeviceIDs(c.uid, d.Name)...)
			}
			return ids
		},
	}
)

// sharingMerged is the spec-level edits of a self-contained claim spec
// with sharing edits, as the claim state assembles them.
func sharingMerged(common, claim specs.ContainerEdits) specs.ContainerEdits {
	out := cdi.CloneEdits(common)
	out.Env = append(out.Env, claim.Env...)
	out.Mounts = append(out.Mounts, claim.Mounts...)
	out.Hooks = append(out.Hooks, claim.Hooks...)
	out.DeviceNodes = append(out.DeviceNodes, claim.DeviceNodes...)
	return out
}

// writeSpec writes spec as JSON, or as YAML for a ".yaml" name, and
// returns its size.
func writeSpec(t testing.TB, dir, name string, spec *specs.Spec) int {
	t.Helper()
	data := mustJSON(t, spec)
	if strings.HasSuffix(name, ".yaml") {
		var err error
		if data, err = yaml.JSONToYAML(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return len(data)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// inject resolves ids as the container runtime does (a CDI cache over
// dir) into a fresh OCI spec.
func inject(t testing.TB, dir string, ids []string) *oci.Spec {
	t.Helper()
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(dir), cdiapi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) != 0 {
		t.Fatalf("CDI cache errors: %v", errs)
	}
	spec := &oci.Spec{Process: &oci.Process{Env: []string{"PATH=/usr/bin"}}}
	if unresolved, err := cache.InjectDevices(spec, ids...); err != nil {
		t.Fatalf("injecting %v: unresolved %v: %v", ids, unresolved, err)
	}
	return spec
}

// TestContainerGetsTheSameEditsWithTheDriverSpec: what a container gets,
// through the CDI library, is the same with the driver spec as with
// self-contained claim specs: same mounts, hooks (in the same order),
// device nodes and cgroup rules, and environment.
func TestContainerGetsTheSameEditsWithTheDriverSpec(t *testing.T) {
	m := newMockDriver(t)
	common := withDeviceTypes(m.edits.Common())
	shared := mockClaim(t, m, claimUID, 2, 5)
	shared.claimEdits = specs.ContainerEdits{
		Env:    []string{"CUDA_MPS_PIPE_DIRECTORY=/mps/pipe"},
		Mounts: []*specs.Mount{{HostPath: "/run/mps/pipe", ContainerPath: "/mps/pipe", Options: []string{"rw", "bind"}}},
	}
	shared.devices[1].Env = []string{"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50"}
	for name, c := range map[string]claimCase{
		"one GPU":               mockClaim(t, m, claimUID, 0),
		"eight GPUs":            mockClaim(t, m, claimUID, 0, 1, 2, 3, 4, 5, 6, 7),
		"two GPUs with sharing": shared,
	} {
		t.Run(name, func(t *testing.T) {
			got := map[string]*oci.Spec{}
			for _, f := range []specFormat{selfContained, withDriverSpec} {
				dir := t.TempDir()
				f.write(t, dir, common, []claimCase{c}, ".json")
				got[f.name] = inject(t, dir, f.ids(c))
			}
			before, after := got[selfContained.name], got[withDriverSpec.name]
			if !reflect.DeepEqual(before, after) {
				t.Errorf("container edits differ:\nself-contained: %s\nwith the driver spec: %s", mustJSON(t, before), mustJSON(t, after))
			}
			if len(after.Mounts) == 0 || after.Hooks == nil || len(after.Linux.Devices) != len(common.DeviceNodes)+len(c.devices) ||
				!slices.Contains(after.Process.Env, cdi.VisibleDevicesVoid) {
				t.Errorf("container lacks the driver-wide edits: %s", mustJSON(t, after))
			}
		})
	}

	// A container with two claims gets the driver-wide edits once with
	// the driver spec (each self-contained spec brought its own copy).
	a, b := mockClaim(t, m, claimUID, 0), mockClaim(t, m, "0c4a5400-0000-4000-8000-000000000002", 1)
	dir := t.TempDir()
	withDriverSpec.write(t, dir, common, []claimCase{a, b}, ".json")
	spec := inject(t, dir, append(withDriverSpec.ids(a), withDriverSpec.ids(b)...))
	if got, want := hookCount(spec.Hooks), len(common.Hooks)+2; got != want {
		t.Errorf("container with two claims has %d hooks, want %d (the driver-wide ones once, one per GPU)", got, want)
	}
}

// TestSpecSizes logs the sizes of the specs of a one-GPU claim on the
// 8-GPU mock machine, before (self-contained) and after (claim spec with
// the driver spec), and checks that the claim spec no longer repeats the
// driver-wide edits.
func TestSpecSizes(t *testing.T) {
	m := newMockDriver(t)
	common := withDeviceTypes(m.edits.Common())
	c := mockClaim(t, m, claimUID, 0)
	before := selfContained.write(t, t.TempDir(), common, []claimCase{c}, ".json")
	after := withDriverSpec.write(t, t.TempDir(), common, []claimCase{c}, ".json")
	driver, claim := after[0], after[1]
	t.Logf("one-GPU claim on %d GPUs: self-contained claim spec %d bytes; with the driver spec: claim spec %d bytes, driver spec %d bytes (written once)",
		len(m.inv.Devices), before[0], claim, driver)
	t.Logf("8 prepared one-GPU claims: the runtime re-reads %d bytes at each refresh before, %d bytes after", 8*before[0], 8*claim+driver)
	if claim*5 > before[0] {
		t.Errorf("claim spec %d bytes, not much smaller than the self-contained %d", claim, before[0])
	}
	spec, err := cdi.ClaimSpecUsingDriverSpec(gpuNaming, c.uid, specs.ContainerEdits{}, c.devices)
	if err != nil {
		t.Fatal(err)
	}
	data := string(mustJSON(t, spec))
	for _, common := range append(slices.Clone(common.Env), "/dev/nvidiactl", "libcuda.so", "update-ldcache") {
		if strings.Contains(data, common) {
			t.Errorf("claim spec repeats driver-wide %q: %s", common, data)
		}
	}
}

// BenchmarkCDIRefresh measures what the container runtime spends on one
// reload of a CDI directory (its cache re-reads and parses every spec on
// each file event) with 8 prepared one-GPU claims on the 8-GPU mock
// machine: self-contained claim specs against claim specs with the driver
// spec, each as JSON and as YAML (and the driver spec alone as YAML).
func BenchmarkCDIRefresh(b *testing.B) {
	m := newMockDriver(b)
	common := withDeviceTypes(m.edits.Common())
	var claims []claimCase
	for i := range 8 {
		claims = append(claims, mockClaim(b, m, fmt.Sprintf("0c4a5400-0000-4000-8000-%012d", i), i))
	}
	for _, f := range []specFormat{selfContained, withDriverSpec} {
		exts := []string{".json", ".yaml"}
		if f.name == withDriverSpec.name {
			// The driver spec as YAML, the claim specs as JSON.
			exts = append(exts, ".yaml+json")
		}
		for _, ext := range exts {
			b.Run(strings.ReplaceAll(f.name, " ", "_")+"/"+ext[1:], func(b *testing.B) {
				dir := b.TempDir()
				total := 0
				for _, s := range f.write(b, dir, common, claims, ext) {
					total += s
				}
				cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(dir), cdiapi.WithAutoRefresh(false))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := cache.Refresh(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(total), "dir-bytes")
				want := len(claims)
				if f.name == withDriverSpec.name {
					want++
				}
				if n := len(cache.ListDevices()); n != want {
					b.Fatalf("cache lists %d devices, want %d", n, want)
				}
			})
		}
	}
}

func hookCount(h *oci.Hooks) int {
	if h == nil {
		return 0
	}
	return len(h.Prestart) + len(h.CreateRuntime) + len(h.CreateContainer) + len(h.StartContainer) + len(h.Poststart) + len(h.Poststop) //nolint:staticcheck // Prestart is deprecated but counted
}

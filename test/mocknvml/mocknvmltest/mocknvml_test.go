// Package mocknvmltest tests the mock libnvidia-ml.so.1 of test/mocknvml
// through go-nvml's real path: the library is built once per test run
// (or taken from GPUDRA_MOCK_NVML_LIB, e.g. bin/mocknvml/libnvidia-ml.so.1
// of make mocknvml) and dlopened by go-nvml like the NVIDIA driver's.
//
// go-nvml binds the NVML symbols of a process once, to the first library
// it loads, and the mock picks its machine at the first nvmlInit; so every
// scenario runs in a sub-process of the test binary (TestChild, selected
// by childEnv) with its own machine and faults in the environment.
package mocknvmltest

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

const (
	// libEnv names a prebuilt mock library to test instead of building one.
	libEnv = "GPUDRA_MOCK_NVML_LIB"
	// childEnv selects the scenario of a sub-process; childLibEnv is the
	// library it loads, childMachineEnv and childSeedEnv the machine the
	// library was configured with (by environment or config file).
	childEnv        = "MOCKNVML_TEST_CHILD"
	childLibEnv     = "MOCKNVML_TEST_LIB"
	childMachineEnv = "MOCKNVML_TEST_MACHINE"
	childSeedEnv    = "MOCKNVML_TEST_SEED"

	seed = "node-a"
)

var built struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// library returns the path of the mock library, building it at the first
// call.
func library(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(libEnv); p != "" {
		return p
	}
	built.once.Do(func() {
		goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goCmd); err != nil {
			if goCmd, err = exec.LookPath("go"); err != nil {
				built.err = fmt.Errorf("no go command to build the mock library: %w", exec.ErrNotFound)
				return
			}
		}
		dir, err := os.MkdirTemp("", "mocknvml-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		path := filepath.Join(dir, "libnvidia-ml.so.1")
		cmd := exec.Command(goCmd, "build", "-buildmode=c-shared", "-o", path, "github.com/gpudra/gpudra/test/mocknvml")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if os.Getenv("CGO_CFLAGS") == "" {
			cmd.Env = append(cmd.Env, "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("building the mock library: %v\n%s", err, out)
			return
		}
		built.path = path
	})
	if errors.Is(built.err, exec.ErrNotFound) {
		t.Skip(built.err)
	}
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// runChild runs scenario in a sub-process with the library configured by
// env (GPUDRA_MOCK_NVML_* settings) and fails t with the sub-process's
// output if the scenario fails; a skipped scenario skips t.
func runChild(t *testing.T, scenario, machine string, env ...string) {
	t.Helper()
	lib := library(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.v", "-test.count=1", "-test.timeout=5m")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GPUDRA_MOCK_NVML_") && !strings.HasPrefix(kv, "MOCKNVML_TEST_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, childEnv+"="+scenario, childLibEnv+"="+lib, childMachineEnv+"="+machine, childSeedEnv+"="+seed)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	switch {
	case err != nil:
		t.Fatalf("scenario %s (%s) failed: %v\n%s", scenario, strings.Join(env, " "), err, out)
	case strings.Contains(string(out), "--- SKIP: TestChild"):
		t.Skipf("scenario %s skipped:\n%s", scenario, out)
	case !strings.Contains(string(out), "--- PASS: TestChild"):
		t.Fatalf("scenario %s did not run:\n%s", scenario, out)
	}
}

// TestExportedSymbols checks that the library exports the versioned NVML
// names go-nvml looks up, and not the older versions whose C structs
// differ: go-nvml must pick the versions the mock implements.
func TestExportedSymbols(t *testing.T) {
	f, err := elf.Open(library(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, s := range syms {
		if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC && strings.HasPrefix(s.Name, "nvml") {
			exported[s.Name] = true
		}
	}
	for _, want := range []string{
		"nvmlInit_v2", "nvmlShutdown", "nvmlErrorString", "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion",
		"nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByUUID", "nvmlDeviceGetPciInfo_v3",
		"nvmlDeviceGetMigMode", "nvmlDeviceGetMigDeviceHandleByIndex", "nvmlDeviceGetGpuInstanceProfileInfoV",
		"nvmlDeviceGetGpuInstancePossiblePlacements_v2", "nvmlComputeInstanceGetInfo_v2",
		"nvmlEventSetCreate", "nvmlDeviceRegisterEvents", "nvmlEventSetWait_v2", "nvmlEventSetFree",
		"nvmlDeviceGetNvLinkRemotePciInfo_v2",
		"nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
		"nvmlGpuInstanceCreateComputeInstance", "nvmlGpuInstanceCreateComputeInstanceWithPlacement",
		"nvmlGpuInstanceDestroy", "nvmlComputeInstanceDestroy", "nvmlDeviceGetGpuInstanceRemainingCapacity",
		"nvmlGpuInstanceGetComputeInstanceRemainingCapacity", "nvmlDeviceGetGpuInstanceById", "nvmlGpuInstanceGetComputeInstanceById",
		"nvmlDeviceGetGpuFabricInfo", "nvmlDeviceGetGpuFabricInfoV", "nvmlDeviceGetModuleId", "nvmlDeviceGetAddressingMode",
	} {
		if !exported[want] {
			t.Errorf("%s is not exported", want)
		}
	}
	for _, old := range []string{"nvmlDeviceGetPciInfo", "nvmlDeviceGetPciInfo_v2", "nvmlEventSetWait", "nvmlComputeInstanceGetInfo",
		"nvmlDeviceGetNvLinkRemotePciInfo", "nvmlDeviceGetGpuInstancePossiblePlacements"} {
		if exported[old] {
			t.Errorf("%s is exported: go-nvml would call it with a struct of another version", old)
		}
	}
	names := make([]string, 0, len(exported))
	for n := range exported {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("%d NVML functions exported: %s", len(names), strings.Join(names, " "))
}

// TestInventoryMatchesGoMock: discovery through the library finds what it
// finds on the Go mock machine of the same name and seed, on every machine;
// the MIG variants are configured by a config file, the others by
// environment.
func TestInventoryMatchesGoMock(t *testing.T) {
	machines := append(mockmachine.Names(), mockmachine.MIGNames()...)
	for _, machine := range machines {
		t.Run(machine, func(t *testing.T) {
			t.Parallel()
			if strings.HasSuffix(machine, mockmachine.MIGSuffix) {
				config := filepath.Join(t.TempDir(), "mocknvml.yaml")
				writeFile(t, config, fmt.Sprintf("machine: %s\nseed: %s\nlog: off\ndelays: {\"*\": 0s}\neventsPoll: 100ms\n", machine, seed))
				runChild(t, "inventory", machine, "GPUDRA_MOCK_NVML_CONFIG="+config)
				return
			}
			runChild(t, "inventory", machine, "GPUDRA_MOCK_NVML_MACHINE="+machine, "GPUDRA_MOCK_NVML_SEED="+seed)
		})
	}
}

// TestCDIEditsMatchGoMock: NVIDIA's nvcdi computes the same container
// edits on the library as on the Go mock machine.
func TestCDIEditsMatchGoMock(t *testing.T) {
	for _, machine := range []string{"dgxh100", "dgxa100-mig"} {
		t.Run(machine, func(t *testing.T) {
			t.Parallel()
			runChild(t, "cdi", machine, "GPUDRA_MOCK_NVML_MACHINE="+machine, "GPUDRA_MOCK_NVML_SEED="+seed)
		})
	}
}

// TestHealthMonitorSeesInjectedFaults: the health monitor, on the
// library, sees an XID, a double-bit ECC error, a lost GPU that comes
// back, and a GPU fallen off the bus, injected through the events file.
func TestHealthMonitorSeesInjectedFaults(t *testing.T) {
	t.Parallel()
	events := filepath.Join(t.TempDir(), "inject-events")
	runChild(t, "health", "dgxh100", "GPUDRA_MOCK_NVML_MACHINE=dgxh100", "GPUDRA_MOCK_NVML_SEED="+seed,
		"GPUDRA_MOCK_NVML_EVENTS_FILE="+events, "GPUDRA_MOCK_NVML_EVENTS_POLL=20ms", "GPUDRA_MOCK_NVML_LOG=off")
}

// TestInitFailure: a failing nvmlInit (from the config file) is
// inventory.ErrNVMLUnavailable; the live environment knob turns it off.
func TestInitFailure(t *testing.T) {
	t.Parallel()
	config := filepath.Join(t.TempDir(), "mocknvml.json")
	writeFile(t, config, `{"machine": "dgxb200", "seed": "`+seed+`", "initError": "ERROR_DRIVER_NOT_LOADED"}`)
	runChild(t, "init-error", "dgxb200", "GPUDRA_MOCK_NVML_CONFIG="+config)
}

// TestSlowCallAndLostFromStart: a per-call delay from the environment,
// changed while the library is loaded, and a GPU lost from the start.
func TestSlowCallAndLostFromStart(t *testing.T) {
	t.Parallel()
	runChild(t, "delay", "dgxh200", "GPUDRA_MOCK_NVML_MACHINE=dgxh200", "GPUDRA_MOCK_NVML_SEED="+seed,
		"GPUDRA_MOCK_NVML_DELAY=nvmlDeviceGetMemoryInfo=300ms", "GPUDRA_MOCK_NVML_LOST=7")
}

// TestChild runs one scenario in a sub-process started by runChild.
func TestChild(t *testing.T) {
	scenario := os.Getenv(childEnv)
	if scenario == "" {
		t.Skip("runs in the sub-processes of the other tests")
	}
	c := &child{t: t, lib: os.Getenv(childLibEnv), machine: os.Getenv(childMachineEnv), seed: os.Getenv(childSeedEnv)}
	switch scenario {
	case "inventory":
		c.inventory()
	case "cdi":
		c.cdi()
	case "health":
		c.health()
	case "init-error":
		c.initError()
	case "delay":
		c.delay()
	case "mig-lifecycle":
		c.migLifecycle()
	case "mig-concurrent":
		c.migConcurrent()
	case "mig-state-create":
		c.migStateCreate()
	case "mig-state-check":
		c.migStateCheck()
	case "dynamic-mig":
		c.dynamicMIG()
	default:
		t.Fatalf("unknown scenario %q", scenario)
	}
}

type child struct {
	t                  *testing.T
	lib, machine, seed string
}

// driverRoot is a driver root that holds the library where
// inventory.LoadNVML looks for it.
func (c *child) driverRoot() string {
	root := c.t.TempDir()
	dir := filepath.Join(root, "usr", "lib64")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Symlink(c.lib, filepath.Join(dir, "libnvidia-ml.so.1")); err != nil {
		c.t.Fatal(err)
	}
	return root
}

// load loads and initializes the library as the real backend does.
func (c *child) load() nvml.Interface {
	c.t.Helper()
	lib, err := inventory.LoadNVML(c.driverRoot(), "")
	if err != nil {
		c.t.Fatal(err)
	}
	return lib
}

func (c *child) inventory() {
	t := c.t
	lib := c.load()
	got, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	goMock, want := mockmachinetest.Machine(t, c.machine, c.seed)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("inventory through the library:\n%+v\nGo mock %s:\n%+v", got, c.machine, want)
	}
	if len(got.Devices) == 0 {
		t.Fatal("no GPUs")
	}
	if strings.HasSuffix(c.machine, mockmachine.MIGSuffix) != (len(got.MIGDevices) > 0) {
		t.Fatalf("%d MIG devices on %s", len(got.MIGDevices), c.machine)
	}
	for i := range got.Devices {
		h, _ := lib.DeviceGetHandleByIndex(i)
		g, _ := goMock.DeviceGetHandleByIndex(i)
		n1, r1 := h.GetNumaNodeId()
		n2, r2 := g.GetNumaNodeId()
		if n1 != n2 || r1 != r2 {
			t.Errorf("GPU %d: NUMA node %d (%v), Go mock %d (%v)", i, n1, r1, n2, r2)
		}
		pci, r := h.GetPciInfo()
		if r != nvml.SUCCESS || pci.Bus == 0 || pci.PciDeviceId == 0 {
			t.Errorf("GPU %d: PCI info %+v (%v)", i, pci, r)
		}
		byBus, r := lib.DeviceGetHandleByPciBusId(got.Devices[i].PCIBusID)
		if u, _ := byBus.GetUUID(); r != nvml.SUCCESS || u != got.Devices[i].UUID {
			t.Errorf("GPU %d: by bus ID %s: %s (%v)", i, got.Devices[i].PCIBusID, u, r)
		}
		// What the mock machines do not implement is not supported.
		if _, r := h.GetNvLinkState(0); r != nvml.ERROR_NOT_SUPPORTED {
			t.Errorf("GPU %d: NVLink state: %v, want ERROR_NOT_SUPPORTED", i, r)
		}
		if !reflect.DeepEqual(migView(h), migView(g)) {
			t.Errorf("GPU %d: MIG queries through the library:\n%+v\nGo mock:\n%+v", i, migView(h), migView(g))
		}
		checkTopology(t, i, h, g)
	}
	for _, m := range got.MIGDevices {
		h, r := lib.DeviceGetHandleByUUID(m.UUID)
		if r != nvml.SUCCESS {
			t.Errorf("MIG device %s by UUID: %v", m.UUID, r)
			continue
		}
		parent, r := h.GetDeviceHandleFromMigDeviceHandle()
		if u, _ := parent.GetUUID(); r != nvml.SUCCESS || u != m.ParentUUID {
			t.Errorf("MIG device %s: parent %s (%v), want %s", m.UUID, u, r, m.ParentUUID)
		}
	}
	if strings.HasSuffix(c.machine, mockmachine.MIGSuffix) {
		c.migProfiles(lib, got)
	}
	if _, r := lib.DeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-000000000000"); r != nvml.ERROR_NOT_FOUND {
		t.Errorf("unknown UUID: %v, want ERROR_NOT_FOUND", r)
	}
	// The machine outlives nvmlShutdown; calls in between are refused.
	if r := lib.Shutdown(); r != nvml.SUCCESS {
		t.Fatalf("nvmlShutdown: %v", r)
	}
	if _, r := lib.DeviceGetCount(); r != nvml.ERROR_UNINITIALIZED {
		t.Errorf("DeviceGetCount after nvmlShutdown: %v, want ERROR_UNINITIALIZED", r)
	}
	if r := lib.Init(); r != nvml.SUCCESS {
		t.Fatalf("nvmlInit again: %v", r)
	}
	again, err := inventory.Discover(lib)
	if err != nil || !reflect.DeepEqual(again, got) {
		t.Errorf("after nvmlShutdown and nvmlInit: %+v, %v", again, err)
	}
	lib.Shutdown()
}

// migInstance is what the MIG queries tell of one GPU instance.
type migInstance struct {
	Info             nvml.GpuInstanceInfo
	ComputeInstances []nvml.ComputeInstanceInfo
}

type migProfile struct {
	Info       nvml.GpuInstanceProfileInfo
	Placements []nvml.GpuInstancePlacement
	Instances  []migInstance
}

type migGPU struct {
	Mode     int
	Profiles []migProfile
}

// migView asks h the MIG queries of the profiles (profiles, placements,
// GPU and compute instances); handles are left out (they differ between
// implementations), instances sorted by ID.
func migView(h nvml.Device) migGPU {
	var v migGPU
	mode, _, r := h.GetMigMode()
	if r != nvml.SUCCESS {
		return migGPU{Mode: -1}
	}
	v.Mode = mode
	for id := 0; id < nvml.GPU_INSTANCE_PROFILE_COUNT; id++ {
		p, r := h.GetGpuInstanceProfileInfo(id)
		if r != nvml.SUCCESS {
			continue
		}
		mp := migProfile{Info: p}
		mp.Placements, _ = h.GetGpuInstancePossiblePlacements(&p)
		gis, _ := h.GetGpuInstances(&p)
		for _, gi := range gis {
			info, _ := gi.GetInfo()
			info.Device = nil
			inst := migInstance{Info: info}
			for cid := 0; cid < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; cid++ {
				cp, r := gi.GetComputeInstanceProfileInfo(cid, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
				if r != nvml.SUCCESS {
					continue
				}
				cis, _ := gi.GetComputeInstances(&cp)
				for _, ci := range cis {
					ciInfo, _ := ci.GetInfo()
					// The library reports the placement NVML gives a compute
					// instance spanning its GPU instance; the Go mock none.
					ciInfo.Device, ciInfo.GpuInstance, ciInfo.Placement = nil, nil, nvml.ComputeInstancePlacement{}
					inst.ComputeInstances = append(inst.ComputeInstances, ciInfo)
				}
			}
			mp.Instances = append(mp.Instances, inst)
		}
		sort.Slice(mp.Instances, func(a, b int) bool { return mp.Instances[a].Info.Id < mp.Instances[b].Info.Id })
		v.Profiles = append(v.Profiles, mp)
	}
	return v
}

// migProfiles checks the MIG queries the Go mock machines cannot answer
// (profile names, remaining capacity, compute instance placements) on GPU 0
// (in MIG mode, all slices used) and the last GPU (not in MIG mode).
func (c *child) migProfiles(lib nvml.Interface, inv *inventory.Inventory) {
	t := c.t
	gpu0, _ := lib.DeviceGetHandleByIndex(0)
	last, _ := lib.DeviceGetHandleByIndex(len(inv.Devices) - 1)
	p1, r := gpu0.GetGpuInstanceProfileInfoV(nvml.GPU_INSTANCE_PROFILE_1_SLICE).V3()
	if r != nvml.SUCCESS {
		t.Fatalf("GPU instance profile info v3: %v", r)
	}
	name := cString(p1.Name[:])
	wantName := "MIG " + inventory.MIGProfileName(nvml.GPU_INSTANCE_PROFILE_1_SLICE, p1.SliceCount, 0, p1.MemorySizeMB, inv.Devices[0].MemoryBytes>>20)
	if name != wantName || p1.SliceCount != 1 {
		t.Errorf("1-slice profile: %q with %d slices, want %q", name, p1.SliceCount, wantName)
	}
	p2, r := gpu0.GetGpuInstanceProfileInfoV(nvml.GPU_INSTANCE_PROFILE_1_SLICE).V2()
	if r != nvml.SUCCESS || cString(p2.Name[:]) != name || p2.MemorySizeMB != p1.MemorySizeMB {
		t.Errorf("GPU instance profile info v2: %+v (%v)", p2, r)
	}
	if n, r := gpu0.GetGpuInstanceRemainingCapacity(&nvml.GpuInstanceProfileInfo{Id: p1.Id}); r != nvml.SUCCESS || n != 0 {
		t.Errorf("GPU 0 (all slices used): room for %d more 1-slice instances (%v), want 0", n, r)
	}
	// A GPU not in MIG mode has no room for GPU instances, as in NVML.
	if n, r := last.GetGpuInstanceRemainingCapacity(&nvml.GpuInstanceProfileInfo{Id: p1.Id}); r != nvml.ERROR_NOT_SUPPORTED || n != 0 {
		t.Errorf("GPU %d (MIG mode disabled): room for %d 1-slice instances (%v), want 0 (ERROR_NOT_SUPPORTED)", len(inv.Devices)-1, n, r)
	}
	for _, m := range inv.MIGDevices {
		parent, _ := lib.DeviceGetHandleByIndex(m.ParentIndex)
		gi, r := parent.GetGpuInstanceById(m.GPUInstanceID)
		if r != nvml.SUCCESS {
			t.Fatalf("%s: GPU instance %d: %v", m.UUID, m.GPUInstanceID, r)
		}
		ci, r := gi.GetComputeInstanceById(m.ComputeInstanceID)
		if r != nvml.SUCCESS {
			t.Fatalf("%s: compute instance %d: %v", m.UUID, m.ComputeInstanceID, r)
		}
		cp, r := gi.GetComputeInstanceProfileInfoV(m.ComputeInstanceProfileID, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED).V3()
		if r != nvml.SUCCESS || cString(cp.Name[:]) != "MIG "+m.Profile {
			t.Errorf("%s: compute instance profile %q (%v), want %q", m.UUID, cString(cp.Name[:]), r, "MIG "+m.Profile)
		}
		// A compute instance that spans its GPU instance has all its
		// compute slices.
		if info, r := ci.GetInfo(); r != nvml.SUCCESS || info.Placement != (nvml.ComputeInstancePlacement{Start: 0, Size: cp.SliceCount}) {
			t.Errorf("%s: compute instance placement %+v (%v), want 0..%d", m.UUID, info.Placement, r, cp.SliceCount)
		}
		if n, r := gi.GetComputeInstanceRemainingCapacity(&nvml.ComputeInstanceProfileInfo{Id: uint32(m.ComputeInstanceProfileID)}); r != nvml.SUCCESS || n != 0 {
			t.Errorf("%s: room for %d more compute instances of its profile (%v), want 0", m.UUID, n, r)
		}
	}
}

func (c *child) cdi() {
	t := c.t
	lib := c.load()
	defer lib.Shutdown()
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	mockmachinetest.Host(t, root, inv)
	_, ctx := ktesting.NewTestContext(t)
	opts := cdi.EditsOptions{NVML: lib, DriverRoot: root, HookPath: "/usr/bin/nvidia-cdi-hook"}
	got, err := cdi.NewEdits(ctx, opts, inv.UUIDs())
	if err != nil {
		t.Fatalf("CDI edits through the library: %v", err)
	}
	goMock, _ := mockmachinetest.Machine(t, c.machine, c.seed)
	opts.NVML = goMock
	want, err := cdi.NewEdits(ctx, opts, inv.UUIDs())
	if err != nil {
		t.Fatalf("CDI edits on the Go mock: %v", err)
	}
	if !reflect.DeepEqual(got.Common(), want.Common()) {
		t.Errorf("common edits through the library:\n%+v\nGo mock:\n%+v", got.Common(), want.Common())
	}
	if len(got.Common().DeviceNodes) == 0 || len(got.Common().Mounts) == 0 {
		t.Errorf("common edits without device nodes or mounts: %+v", got.Common())
	}
	for _, d := range inv.Devices {
		g, err1 := got.Device(d.UUID)
		w, err2 := want.Device(d.UUID)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(g, w) {
			t.Errorf("GPU %d edits through the library (%v):\n%+v\nGo mock (%v):\n%+v", d.Index, err1, g, err2, w)
		}
		if len(g.DeviceNodes) == 0 || g.DeviceNodes[0].Path != fmt.Sprintf("/dev/nvidia%d", d.Minor) {
			t.Errorf("GPU %d: device nodes %+v", d.Index, g.DeviceNodes)
		}
	}
}

func (c *child) health() {
	t := c.t
	lib := c.load()
	defer lib.Shutdown()
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	uuids := inv.UUIDs()
	mon, err := health.New(lib, uuids, health.Options{WaitTimeout: 50 * time.Millisecond, ProbeInterval: 200 * time.Millisecond,
		InitialBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); mon.Run(ctx) }()
	defer func() { cancel(); <-done }()

	events := os.Getenv("GPUDRA_MOCK_NVML_EVENTS_FILE")
	steps := []struct {
		commands string
		gpu      int
		problem  health.Problem
		reasons  []string
	}{
		{"xid 0 48", 0, health.CriticalXID, []string{"xid-48"}},
		{"dbe 1", 1, health.DoubleBitECC, []string{health.ReasonDoubleBitECC}},
		{"lost 2", 2, health.GPULost, []string{health.ReasonGPULost}},
		{"found 2", 2, health.None, []string{""}},
		// Fallen off the bus: XID 79, then the GPU is gone.
		{"xid 3 79\nlost 3", 3, health.GPULost, []string{"xid-79", health.ReasonGPULost}},
	}
	for _, s := range steps {
		c.inject(events, s.commands, func() bool {
			snap, _ := mon.Current()
			d := snap.Devices[s.gpu]
			for _, r := range s.reasons {
				if d.Problem == s.problem && d.Reason == r {
					return true
				}
			}
			return false
		})
		if s.problem == health.GPULost {
			if _, r := lib.DeviceGetHandleByUUID(uuids[s.gpu]); r != nvml.ERROR_GPU_IS_LOST {
				t.Errorf("handle of lost GPU %d: %v, want ERROR_GPU_IS_LOST", s.gpu, r)
			}
		}
	}
	snap, _ := mon.Current()
	if !snap.Monitored {
		t.Error("monitoring is down")
	}
	for i, d := range snap.Devices {
		if want := map[int]health.Problem{0: health.CriticalXID, 1: health.DoubleBitECC, 3: health.GPULost}[i]; d.Problem != want {
			t.Errorf("GPU %d: %v (%s), want %v", i, d.Problem, d.Reason, want)
		}
	}
}

// inject writes commands to the events file until ok holds: the library
// drops events that no event set has registered for, as NVML does, so an
// injection that came before the monitor registered is repeated.
func (c *child) inject(events, commands string, ok func() bool) {
	t := c.t
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		tmp := events + ".tmp"
		writeFile(t, tmp, commands+"\n")
		if err := os.Rename(tmp, events); err != nil {
			t.Fatal(err)
		}
		for wait := time.Now().Add(time.Second); time.Now().Before(wait); time.Sleep(10 * time.Millisecond) {
			if ok() {
				return
			}
		}
	}
	t.Fatalf("%q: the health monitor did not see it", commands)
}

func (c *child) initError() {
	t := c.t
	root := c.driverRoot()
	_, err := inventory.LoadNVML(root, "hint")
	if !errors.Is(err, inventory.ErrNVMLUnavailable) || !strings.Contains(err.Error(), "Driver Not Loaded") {
		t.Fatalf("LoadNVML with nvmlInit failing: %v, want ErrNVMLUnavailable with Driver Not Loaded", err)
	}
	// The environment knob is live and overrides the file.
	t.Setenv("GPUDRA_MOCK_NVML_INIT_ERROR", "SUCCESS")
	lib, err := inventory.LoadNVML(root, "")
	if err != nil {
		t.Fatalf("LoadNVML after clearing the init error: %v", err)
	}
	defer lib.Shutdown()
	inv, err := inventory.Discover(lib)
	if err != nil || len(inv.Devices) == 0 || inv.Devices[0].Architecture != "Blackwell" {
		t.Fatalf("dgxb200 from the config file: %+v, %v", inv, err)
	}
}

func (c *child) delay() {
	t := c.t
	lib := c.load()
	defer lib.Shutdown()
	h, r := lib.DeviceGetHandleByIndex(0)
	if r != nvml.SUCCESS {
		t.Fatal(r)
	}
	took := func(f func() nvml.Return) time.Duration {
		start := time.Now()
		if r := f(); r != nvml.SUCCESS {
			t.Fatal(r)
		}
		return time.Since(start)
	}
	memInfo := func() nvml.Return { _, r := h.GetMemoryInfo(); return r }
	if d := took(memInfo); d < 300*time.Millisecond {
		t.Errorf("GetMemoryInfo took %v, want the configured 300ms", d)
	}
	if d := took(func() nvml.Return { _, r := h.GetName(); return r }); d >= 300*time.Millisecond {
		t.Errorf("GetName took %v: only GetMemoryInfo is slow", d)
	}
	t.Setenv("GPUDRA_MOCK_NVML_DELAY", "1ms")
	if d := took(memInfo); d >= 300*time.Millisecond {
		t.Errorf("GetMemoryInfo took %v after the delay changed to 1ms", d)
	}
	// GPU 7 is lost from the start: discovery does not get it.
	if _, r := lib.DeviceGetHandleByIndex(7); r != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("lost GPU 7: %v, want ERROR_GPU_IS_LOST", r)
	}
	inv, err := inventory.Discover(lib)
	if err != nil && !strings.Contains(err.Error(), "GPU is lost") {
		t.Errorf("Discover with GPU 7 lost: %v", err)
	}
	if err == nil {
		for _, d := range inv.Devices {
			if d.Index == 7 {
				t.Errorf("Discover with GPU 7 lost lists it: %+v", d)
			}
		}
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func cString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

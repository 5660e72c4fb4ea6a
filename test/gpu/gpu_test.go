//go:build gpu

// Package gpu checks the driver's NVML side against a real NVIDIA driver:
// the inventory against nvidia-smi and the device nodes, and the health
// monitor's event loop. hack/gpu-check.sh builds it (go test -c -tags gpu)
// and runs it on a GPU node; nothing else does.
//
// Environment (hack/gpu-check.sh sets it):
//
//	GPU_CHECK_NVML         --nvml value (default real; a mock machine such as
//	                       mock:dgxh100 rehearses the check without a GPU)
//	GPU_CHECK_DRIVER_ROOT  where the driver is (default /; the mock host root)
//	GPU_CHECK_DEV_ROOT     the directory whose dev/ holds the device nodes (default /)
//	NVIDIA_SMI             the nvidia-smi to compare with (default nvidia-smi)
//	GPU_CHECK_HEALTH_SECONDS  how long the health event loop runs (default 5)
//	NODE_NAME              a mock machine's seed, as in the plugin
package gpu

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/node"
)

// nvidiaMajor is the fixed major number of the nvidia kernel module's device nodes.
const nvidiaMajor = 195

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// open opens NVML as the plugins do (node.ParseBackend, Backend.Open) and
// discovers the GPUs.
func open(t *testing.T) (node.Backend, nvml.Interface, *inventory.Inventory) {
	t.Helper()
	b, err := node.ParseBackend(envOr("GPU_CHECK_NVML", node.BackendReal), os.Getenv("NODE_NAME"))
	if err != nil {
		t.Fatal(err)
	}
	lib, err := b.Open(envOr("GPU_CHECK_DRIVER_ROOT", "/"))
	if err != nil {
		t.Fatalf("opening NVML (%s): %v", b, err)
	}
	t.Cleanup(func() { lib.Shutdown() })
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatalf("discovering the GPUs: %v", err)
	}
	if len(inv.Devices) == 0 {
		t.Fatal("NVML finds no GPU")
	}
	t.Logf("NVML (%s): driver %s, CUDA %s, %d GPUs, %d MIG devices", b, inv.DriverVersion, inv.CUDADriverVersion, len(inv.Devices), len(inv.MIGDevices))
	return b, lib, inv
}

// smi runs nvidia-smi with args and returns its output lines.
func smi(t *testing.T, args ...string) ([]string, error) {
	t.Helper()
	out, err := exec.Command(envOr("NVIDIA_SMI", "nvidia-smi"), args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)+string(ee.Stderr)))
		}
		return nil, fmt.Errorf("nvidia-smi %s: %w", strings.Join(args, " "), err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// query runs nvidia-smi --query-gpu=fields and returns one row per GPU.
func query(t *testing.T, fields ...string) ([][]string, error) {
	t.Helper()
	lines, err := smi(t, "--query-gpu="+strings.Join(fields, ","), "--format=csv,noheader,nounits")
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, l := range lines {
		row := strings.Split(l, ", ")
		if len(row) != len(fields) {
			return nil, fmt.Errorf("nvidia-smi --query-gpu=%s: line %q has %d fields, want %d", strings.Join(fields, ","), l, len(row), len(fields))
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// busID turns nvidia-smi's bus ID ("00000000:3B:00.0") into the
// inventory's ("0000:3b:00.0").
func busID(s string) string {
	s = strings.ToLower(s)
	if d, rest, ok := strings.Cut(s, ":"); ok && len(d) == 8 && strings.HasPrefix(d, "0000") {
		return d[4:] + ":" + rest
	}
	return s
}

func migMode(d inventory.Device) string {
	switch {
	case d.MIGEnabled:
		return "Enabled"
	case d.MIGCapable:
		return "Disabled"
	}
	return "[N/A]"
}

func TestInventoryMatchesNvidiaSMI(t *testing.T) {
	_, _, inv := open(t)
	fields := []string{"index", "uuid", "name", "pci.bus_id", "memory.total", "driver_version", "mig.mode.current"}
	rows, err := query(t, fields...)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(inv.Devices) {
		t.Fatalf("nvidia-smi lists %d GPUs, the inventory %d: %v", len(rows), len(inv.Devices), rows)
	}
	byIndex := map[string]inventory.Device{}
	for _, d := range inv.Devices {
		byIndex[strconv.Itoa(d.Index)] = d
	}
	for _, r := range rows {
		d, ok := byIndex[r[0]]
		if !ok {
			t.Errorf("nvidia-smi GPU %s (%s) is not in the inventory", r[0], r[1])
			continue
		}
		want := []string{strconv.Itoa(d.Index), d.UUID, d.ProductName, d.PCIBusID, "", inv.DriverVersion, migMode(d)}
		got := append([]string(nil), r...)
		got[3] = busID(got[3])
		var bad []string
		for i, f := range fields {
			if f != "memory.total" && got[i] != want[i] {
				bad = append(bad, fmt.Sprintf("%s: nvidia-smi says %q, the inventory %q", f, got[i], want[i]))
			}
		}
		// NVML's total and nvidia-smi's may differ by the driver's
		// reservation; a unit mistake is off by far more than 1%.
		mib, err := strconv.ParseFloat(r[4], 64)
		have := float64(d.MemoryBytes >> 20)
		if err != nil || math.Abs(mib-have) > 0.01*mib {
			bad = append(bad, fmt.Sprintf("memory.total: nvidia-smi says %s MiB, the inventory %.0f MiB", r[4], have))
		}
		for _, b := range bad {
			t.Errorf("GPU %d: %s", d.Index, b)
		}
		if len(bad) == 0 {
			t.Logf("GPU %d: %s %s %s %s MiB, MIG %s: matches", d.Index, d.UUID, d.ProductName, d.PCIBusID, r[4], migMode(d))
		}
	}

	// compute_cap is a newer field; older nvidia-smi do not know it.
	if rows, err := query(t, "index", "compute_cap"); err != nil {
		t.Logf("not comparing the compute capability: %v", err)
	} else {
		for _, r := range rows {
			if d, ok := byIndex[r[0]]; ok && r[1] != d.CUDAComputeCapability {
				t.Errorf("GPU %d: compute_cap: nvidia-smi says %s, the inventory %s", d.Index, r[1], d.CUDAComputeCapability)
			}
		}
	}
}

var (
	smiGPULine = regexp.MustCompile(`^GPU (\d+): .* \(UUID: (GPU-[^)]+)\)$`)
	smiMIGLine = regexp.MustCompile(`^\s+MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[^)]+)\)$`)
)

func TestMIGDevicesMatchNvidiaSMI(t *testing.T) {
	_, _, inv := open(t)
	lines, err := smi(t, "-L")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{} // MIG UUID -> "<parent UUID> <profile>"
	parent := ""
	for _, l := range lines {
		if m := smiGPULine.FindStringSubmatch(l); m != nil {
			parent = m[2]
		} else if m := smiMIGLine.FindStringSubmatch(l); m != nil {
			got[m[2]] = parent + " " + m[1]
		}
	}
	matched := 0
	for _, m := range inv.MIGDevices {
		want := m.ParentUUID + " " + m.Profile
		if got[m.UUID] != want {
			t.Errorf("MIG device %s: nvidia-smi -L has %q, the inventory %q", m.UUID, got[m.UUID], want)
		} else {
			matched++
		}
		delete(got, m.UUID)
	}
	for uuid, where := range got {
		t.Errorf("nvidia-smi -L lists MIG device %s (%s), the inventory does not", uuid, where)
	}
	t.Logf("%d of %d MIG devices match", matched, len(inv.MIGDevices))
}

func TestDeviceNodesMatchTheMinors(t *testing.T) {
	_, _, inv := open(t)
	dev := filepath.Join(envOr("GPU_CHECK_DEV_ROOT", "/"), "dev")
	for _, d := range inv.Devices {
		p := filepath.Join(dev, fmt.Sprintf("nvidia%d", d.Minor))
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Errorf("GPU %d (minor %d): %v", d.Index, d.Minor, err)
			continue
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != nvidiaMajor || int(unix.Minor(st.Rdev)) != d.Minor {
			t.Errorf("GPU %d: %s is not the character device %d:%d (mode %o, device %d:%d)", d.Index, p, nvidiaMajor, d.Minor,
				st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
	}
}

// recordingNVML records the health monitor's event sets and registrations.
type recordingNVML struct {
	nvml.Interface
	mu         sync.Mutex
	sets       int
	registered map[string]nvml.Return // by GPU UUID, the last RegisterEvents
}

func (r *recordingNVML) EventSetCreate() (nvml.EventSet, nvml.Return) {
	set, ret := r.Interface.EventSetCreate()
	if ret == nvml.SUCCESS {
		r.mu.Lock()
		r.sets++
		r.mu.Unlock()
	}
	return set, ret
}

func (r *recordingNVML) DeviceGetHandleByUUID(uuid string) (nvml.Device, nvml.Return) {
	h, ret := r.Interface.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return h, ret
	}
	return recordingDevice{Device: h, uuid: uuid, r: r}, ret
}

type recordingDevice struct {
	nvml.Device
	uuid string
	r    *recordingNVML
}

func (d recordingDevice) RegisterEvents(mask uint64, set nvml.EventSet) nvml.Return {
	ret := d.Device.RegisterEvents(mask, set)
	d.r.mu.Lock()
	d.r.registered[d.uuid] = ret
	d.r.mu.Unlock()
	return ret
}

func TestHealthEventLoop(t *testing.T) {
	b, lib, inv := open(t)
	seconds, err := strconv.Atoi(envOr("GPU_CHECK_HEALTH_SECONDS", "5"))
	if err != nil || seconds <= 0 {
		t.Fatalf("GPU_CHECK_HEALTH_SECONDS=%q: want a positive number", os.Getenv("GPU_CHECK_HEALTH_SECONDS"))
	}
	rec := &recordingNVML{Interface: lib, registered: map[string]nvml.Return{}}
	var mu sync.Mutex
	var loopErrors []error
	const wait = 500 * time.Millisecond
	m, err := health.New(rec, inv.UUIDs(), health.Options{
		Probe:       b.HealthProbe(),
		WaitTimeout: wait,
		OnLoopError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			loopErrors = append(loopErrors, err)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	<-ctx.Done()
	select {
	case <-done:
	case <-time.After(wait + 5*time.Second):
		t.Fatalf("the health monitor did not stop within %v of its context's end", wait+5*time.Second)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, err := range loopErrors {
		t.Errorf("event loop error: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.sets == 0 {
		t.Error("the monitor created no NVML event set")
	}
	for _, uuid := range inv.UUIDs() {
		if ret, ok := rec.registered[uuid]; !ok || ret != nvml.SUCCESS {
			t.Errorf("GPU %s: registering for events: %v (registered: %v)", uuid, nvml.ErrorString(ret), ok)
		}
	}
	snap, _ := m.Current()
	if !snap.Monitored {
		t.Error("the event loop is down at the end")
	}
	for _, d := range snap.Devices {
		if !d.Healthy() {
			t.Errorf("GPU %s: %s (%s): %s", d.UUID, d.Problem, d.Reason, d.Message)
		}
	}
	t.Logf("event loop ran %ds: %d event sets, %d GPUs registered, %d events taken in", seconds, rec.sets, len(rec.registered), m.Processed())
}

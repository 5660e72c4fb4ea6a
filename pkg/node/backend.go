package node

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/resourceslice"
	"github.com/gpudra/gpudra/pkg/sharing/timeslicing"
)

// BackendReal is the --nvml value of the NVIDIA driver's libnvidia-ml.
const BackendReal = "real"

// mockPrefix starts the --nvml value of a mock machine, "mock:dgxh100".
const mockPrefix = "mock:"

// Backend is where a node's NVML, and the host side that goes with it, come
// from: the NVIDIA driver (BackendReal) or a mock machine (package
// mockmachine). It is the one place that differs between the two; every
// other package gets what it needs from the backend (or from Node) instead
// of asking which one it is.
type Backend interface {
	// String is the --nvml value that selects the backend.
	String() string
	// Mock tells whether the GPUs are mock ones: there is no NVIDIA driver
	// on the host, so nothing may run its binaries (the MPS daemon).
	Mock() bool
	// Open loads and initializes NVML; driverRoot is where this process
	// sees the driver. The caller owns the library and shuts it down.
	Open(driverRoot string) (nvml.Interface, error)
	// PCIeRoot resolves a GPU's bus ID to its PCIe root complex through
	// the host's sysfs, which this process sees at sysfsRoot (see
	// resourceslice.PCIeRootResolver); nil when the bus IDs are invented
	// and may name unrelated devices of the host.
	PCIeRoot(sysfsRoot string) func(busID string) (string, error)
	// NUMANode resolves a GPU's bus ID to its NUMA node for discovery
	// (inventory.DiscoverOptions.NUMANode): through the host's sysfs at
	// sysfsRoot (inventory.SysfsNUMANode), or, for a mock machine, through
	// its own layout (mockmachine.NUMANodes; after Open).
	NUMANode(sysfsRoot string) func(busID string) (int, error)
	// MIGCaps returns the capability minors of inv's MIG devices, read
	// under driverRoot where the driver keeps them (mock host root) or
	// from the kernel (/proc/driver/nvidia-caps/mig-minors).
	MIGCaps(inv *inventory.Inventory, mockHostRoot string) (cdi.MIGCaps, error)
	// TimeSlicer returns what sets the GPUs' time slices: nvidia-smi of
	// the driver under driverRoot, or a state file of the mock machine
	// (under the mock host root, else in dataDir). Nil, logged, when there
	// is none: time-slicing is then off.
	TimeSlicer(ctx context.Context, driverRoot, mockHostRoot, dataDir string) timeslicing.TimeSlicer
	// HealthProbe, when not nil, tells the health monitor whether a GPU is
	// there (health.Options.Probe); nil: NVML's own answer.
	HealthProbe() func(uuid string) nvml.Return
	// InjectEvents feeds the GPU events written to the mock host's
	// injection file into NVML until ctx is done; it returns at once for
	// real NVML or without a mock host root.
	InjectEvents(ctx context.Context, mockHostRoot string)
}

// ParseBackend returns the backend named by value: BackendReal (or empty)
// or "mock:<machine>" (mockmachine.Names, mockmachine.MIGNames). seed makes
// a mock machine's UUIDs stable and distinct per node (the node name); the
// real backend ignores it. It is the only place that reads a --nvml value.
func ParseBackend(value, seed string) (Backend, error) {
	switch {
	case value == BackendReal || value == "":
		return realBackend{}, nil
	case strings.HasPrefix(value, mockPrefix):
		machine := strings.TrimPrefix(value, mockPrefix)
		if !mockmachine.Known(machine) {
			return nil, fmt.Errorf("unknown mock machine %q: use one of %v, or a MIG variant %v", machine, mockmachine.Names(), mockmachine.MIGNames())
		}
		return &mockBackend{machine: machine, seed: seed}, nil
	}
	return nil, fmt.Errorf("unknown NVML backend %q: use %q or one of %s", value, BackendReal, strings.Join(mockBackendNames(), ", "))
}

// BackendHelp describes the values of --nvml.
func BackendHelp() string {
	return fmt.Sprintf("NVML backend: %q for the NVIDIA driver, or a mock machine for nodes without GPUs: %s", BackendReal, strings.Join(mockBackendNames(), ", "))
}

func mockBackendNames() []string {
	var out []string
	for _, n := range mockmachine.Names() {
		out = append(out, mockPrefix+n)
	}
	return out
}

// realBackend is the NVIDIA driver.
type realBackend struct{}

func (realBackend) String() string { return BackendReal }
func (realBackend) Mock() bool     { return false }

func (realBackend) Open(driverRoot string) (nvml.Interface, error) {
	return inventory.LoadNVML(driverRoot, "On a node without GPUs use a mock backend such as --nvml=mock:dgxh100")
}

func (realBackend) PCIeRoot(sysfsRoot string) func(string) (string, error) {
	return resourceslice.PCIeRootResolver(sysfsRoot)
}

func (realBackend) NUMANode(sysfsRoot string) func(string) (int, error) {
	return inventory.SysfsNUMANode(sysfsRoot)
}

func (realBackend) MIGCaps(*inventory.Inventory, string) (cdi.MIGCaps, error) {
	return cdi.ReadMIGCaps(cdi.MIGMinorsPath)
}

// TimeSlicer is nvidia-smi; without it, time-slicing is off (nil) and claims
// asking for it fail with an error that says so.
func (realBackend) TimeSlicer(ctx context.Context, driverRoot, _, _ string) timeslicing.TimeSlicer {
	smi, err := timeslicing.NewNvidiaSMI(driverRoot)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Time-slicing is off")
		return nil
	}
	return smi
}

func (realBackend) HealthProbe() func(string) nvml.Return { return nil }
func (realBackend) InjectEvents(context.Context, string)  {}

// mockBackend is a mock machine. Open installs its injectable events (see
// mockmachine.Events) before anything else uses it, so that the health
// monitor, whoever starts it, watches events that tests and the injection
// file deliver.
type mockBackend struct {
	machine, seed string
	// mockHostRoot is the mock host root as this process sees it, "" when
	// there is none; set before Open (see Open in node.go).
	mockHostRoot string
	events       *mockmachine.Events // set by Open
	machineNUMA  func(string) (int, error)
}

// mockTimeSliceFile is the mock time-slice state of a plugin without a mock
// host root, in its data directory.
const mockTimeSliceFile = "mock-timeslice.json"

func (b *mockBackend) String() string { return mockPrefix + b.machine }
func (b *mockBackend) Mock() bool     { return true }

// Open opens the mock machine with the faults of mockmachine.FaultsFile in
// driverRoot (the mock host root when there is one), if it has any. With a
// mock host root the machine's MIG state (modes, instances) persists in its
// mockmachine.MIGStateFile; without one it starts afresh every time.
func (b *mockBackend) Open(driverRoot string) (nvml.Interface, error) {
	var opts []mockmachine.Option
	if b.mockHostRoot != "" {
		opts = append(opts, mockmachine.WithMIGState(mockmachine.MIGStatePath(b.mockHostRoot)))
	}
	s, err := mockmachine.New(b.machine, b.seed, opts...)
	if err != nil {
		return nil, err
	}
	if driverRoot != "" {
		if _, err := mockmachine.ApplyFaultsFile(s, filepath.Join(driverRoot, mockmachine.FaultsFile)); err != nil {
			_ = s.Shutdown()
			return nil, err
		}
	}
	ev, err := mockmachine.InstallEvents(s)
	if err != nil {
		return nil, err
	}
	b.events = ev
	b.machineNUMA = mockmachine.NUMANodes(s)
	return s, nil
}

// Events is the event injection of the opened machine (nil before Open).
func (b *mockBackend) Events() *mockmachine.Events { return b.events }

func (b *mockBackend) PCIeRoot(string) func(string) (string, error) { return nil }

// NUMANode is the mock machine's layout (nil before Open): the host's sysfs
// knows nothing of its bus IDs.
func (b *mockBackend) NUMANode(string) func(string) (int, error) { return b.machineNUMA }

func (b *mockBackend) MIGCaps(inv *inventory.Inventory, mockHostRoot string) (cdi.MIGCaps, error) {
	if mockHostRoot != "" {
		return cdi.ReadMIGCaps(filepath.Join(mockHostRoot, mockmachine.MIGMinorsFile))
	}
	return mockmachine.MIGCapMinors(inv), nil
}

func (b *mockBackend) TimeSlicer(ctx context.Context, _, mockHostRoot, dataDir string) timeslicing.TimeSlicer {
	path := filepath.Join(dataDir, mockTimeSliceFile)
	if mockHostRoot != "" {
		path = mockmachine.TimeSliceFilePath(mockHostRoot)
	}
	klog.FromContext(ctx).Info("Time-slicing recorded in a mock state file", "path", path)
	return mockmachine.NewTimeSliceFile(path)
}

func (b *mockBackend) HealthProbe() func(string) nvml.Return {
	if b.events == nil {
		return nil
	}
	return b.events.Probe
}

func (b *mockBackend) InjectEvents(ctx context.Context, mockHostRoot string) {
	if b.events == nil || mockHostRoot == "" {
		return
	}
	b.events.WatchFile(ctx, filepath.Join(mockHostRoot, mockmachine.EventsFile), mockmachine.EventsPoll)
}

// errNeedsMock is the error of a mock host root without a mock backend.
func errNeedsMock(b Backend) error {
	return fmt.Errorf("--mock-host-root needs a mock NVML backend (--nvml=mock:<machine>), not %q", b.String())
}

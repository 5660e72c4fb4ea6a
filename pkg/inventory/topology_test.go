package inventory_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/google/uuid"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// discoverWithTopology discovers a mock machine the way the plugin does:
// with the machine's NUMA layout.
func discoverWithTopology(t *testing.T, s *server.Server) *inventory.Inventory {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	inv, err := inventory.DiscoverWith(ctx, s, inventory.DiscoverOptions{NUMANode: mockmachine.NUMANodes(s)})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func newMachine(t *testing.T, machine string) *server.Server {
	t.Helper()
	s, err := mockmachine.New(machine, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDiscoverTopologyOfMockMachines(t *testing.T) {
	for _, machine := range append(mockmachine.Names(), "dgxh100-mig") {
		t.Run(machine, func(t *testing.T) {
			inv := discoverWithTopology(t, newMachine(t, machine))
			fabric := machine != "dgxa100" && machine != "dgxa100-80gb"
			cluster := uuid.UUID(mockmachine.FabricClusterUUID(machine, "node-1")).String()
			for _, d := range inv.Devices {
				if !d.HasNUMANode || d.NUMANode != d.Index/4 {
					t.Errorf("GPU %d: NUMA node %d (known %v), want %d", d.Index, d.NUMANode, d.HasNUMANode, d.Index/4)
				}
				if d.ModuleID != d.Index+1 {
					t.Errorf("GPU %d: module ID %d, want %d", d.Index, d.ModuleID, d.Index+1)
				}
				if !fabric {
					if d.AddressingMode != "" || d.Fabric != (inventory.Fabric{}) || d.Fabric.Clique() != "" {
						t.Errorf("GPU %d of an A100 machine: addressing mode %q, fabric %+v: want none", d.Index, d.AddressingMode, d.Fabric)
					}
					continue
				}
				if d.AddressingMode != "HMM" {
					t.Errorf("GPU %d: addressing mode %q, want HMM", d.Index, d.AddressingMode)
				}
				want := inventory.Fabric{ClusterUUID: cluster, CliqueID: uint32(1 + d.Index/4)}
				if d.Fabric != want {
					t.Errorf("GPU %d: fabric %+v, want %+v", d.Index, d.Fabric, want)
				}
				if got, wantClique := d.Fabric.Clique(), fmt.Sprintf("%s.%d", cluster, want.CliqueID); got != wantClique {
					t.Errorf("GPU %d: clique %q, want %q", d.Index, got, wantClique)
				}
			}
		})
	}
}

// Discover without options resolves no NUMA node; the NVML queries still
// run.
func TestDiscoverWithoutNUMAResolver(t *testing.T) {
	inv, err := inventory.Discover(newMachine(t, "dgxh100"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range inv.Devices {
		if d.HasNUMANode || d.Fabric.ClusterUUID == "" || d.ModuleID == 0 {
			t.Errorf("GPU %d: NUMA %v, fabric %+v, module %d", d.Index, d.HasNUMANode, d.Fabric, d.ModuleID)
		}
	}
}

// A GPU whose fabric query fails, or whose registration is not done, is
// usable and has no fabric; the other GPUs keep theirs.
func TestDiscoverFabricFailuresAreLocal(t *testing.T) {
	s := newMachine(t, "dgxh100")
	if err := mockmachine.FailDevice(s, 2, "fabric", nvml.ERROR_UNKNOWN); err != nil {
		t.Fatal(err)
	}
	if err := mockmachine.FailDevice(s, 3, "fabric", nvml.ERROR_NOT_SUPPORTED); err != nil {
		t.Fatal(err)
	}
	states := map[int]nvml.GpuFabricInfo{
		4: {State: nvml.GPU_FABRIC_STATE_IN_PROGRESS, ClusterUuid: [16]uint8{1}},
		5: {State: nvml.GPU_FABRIC_STATE_COMPLETED, Status: uint32(nvml.ERROR_UNKNOWN), ClusterUuid: [16]uint8{1}},
		6: {State: nvml.GPU_FABRIC_STATE_COMPLETED},                                // zero cluster UUID
		7: {State: nvml.GPU_FABRIC_STATE_NOT_SUPPORTED, ClusterUuid: [16]uint8{1}}, // not supported
	}
	for i, info := range states {
		s.Devices[i].(*server.Device).GetGpuFabricInfoFunc = func() (nvml.GpuFabricInfo, nvml.Return) { return info, nvml.SUCCESS }
	}
	inv := discoverWithTopology(t, s)
	if len(inv.Devices) != 8 || len(inv.Unusable) != 0 {
		t.Fatalf("%d usable and %d unusable GPUs, want 8 usable", len(inv.Devices), len(inv.Unusable))
	}
	for _, d := range inv.Devices {
		if has := d.Fabric.ClusterUUID != ""; has != (d.Index < 2) {
			t.Errorf("GPU %d: fabric %+v", d.Index, d.Fabric)
		}
		if d.ModuleID == 0 || !d.HasNUMANode || d.AddressingMode == "" {
			t.Errorf("GPU %d lost its other topology: module %d, NUMA %v, addressing %q", d.Index, d.ModuleID, d.HasNUMANode, d.AddressingMode)
		}
	}
}

// An NVML library without the topology symbols (an older driver) gives no
// topology and is never called for it.
func TestDiscoverTopologyWithoutSymbols(t *testing.T) {
	s := newMachine(t, "dgxh100")
	s.LookupSymbolFunc = func(symbol string) error { return fmt.Errorf("%s: undefined symbol", symbol) }
	for _, h := range s.Devices {
		d := h.(*server.Device)
		d.GetGpuFabricInfoFunc = nil // would panic if called
		d.GetModuleIdFunc = nil
		d.GetAddressingModeFunc = nil
	}
	inv := discoverWithTopology(t, s)
	for _, d := range inv.Devices {
		if d.Fabric != (inventory.Fabric{}) || d.ModuleID != 0 || d.AddressingMode != "" {
			t.Errorf("GPU %d: fabric %+v, module %d, addressing %q: want none", d.Index, d.Fabric, d.ModuleID, d.AddressingMode)
		}
		if !d.HasNUMANode {
			t.Errorf("GPU %d: no NUMA node", d.Index)
		}
	}
}

// A bare go-nvml mock that lacks the calls (its function fields nil) is
// taken as a library without them.
func TestDiscoverTopologyUnimplementedMock(t *testing.T) {
	s := newMachine(t, "dgxh100")
	for _, h := range s.Devices {
		d := h.(*server.Device)
		d.GetGpuFabricInfoFunc, d.GetModuleIdFunc, d.GetAddressingModeFunc = nil, nil, nil
	}
	inv := discoverWithTopology(t, s)
	if len(inv.Devices) != 8 {
		t.Fatalf("%d GPUs", len(inv.Devices))
	}
	for _, d := range inv.Devices {
		if d.Fabric != (inventory.Fabric{}) || d.ModuleID != 0 || d.AddressingMode != "" {
			t.Errorf("GPU %d: fabric %+v, module %d, addressing %q: want none", d.Index, d.Fabric, d.ModuleID, d.AddressingMode)
		}
	}
}

func TestDiscoverAddressingModes(t *testing.T) {
	s := newMachine(t, "dgxh100")
	modes := []struct {
		value uint32
		ret   nvml.Return
		want  string
	}{
		{uint32(nvml.DEVICE_ADDRESSING_MODE_NONE), nvml.SUCCESS, "None"},
		{uint32(nvml.DEVICE_ADDRESSING_MODE_HMM), nvml.SUCCESS, "HMM"},
		{uint32(nvml.DEVICE_ADDRESSING_MODE_ATS), nvml.SUCCESS, "ATS"},
		{7, nvml.SUCCESS, ""}, // unknown to this driver: not published
		{0, nvml.ERROR_NOT_SUPPORTED, ""},
		{0, nvml.ERROR_UNKNOWN, ""},
	}
	for i, m := range modes {
		s.Devices[i].(*server.Device).GetAddressingModeFunc = func() (nvml.DeviceAddressingMode, nvml.Return) {
			return nvml.DeviceAddressingMode{Value: m.value}, m.ret
		}
	}
	inv := discoverWithTopology(t, s)
	for i, m := range modes {
		if got := inv.Devices[i].AddressingMode; got != m.want {
			t.Errorf("GPU %d (%d, %v): addressing mode %q, want %q", i, m.value, m.ret, got, m.want)
		}
	}
}

func TestDiscoverNUMAResolverErrors(t *testing.T) {
	s := newMachine(t, "dgxh100")
	_, ctx := ktesting.NewTestContext(t)
	inv, err := inventory.DiscoverWith(ctx, s, inventory.DiscoverOptions{NUMANode: func(busID string) (int, error) {
		switch busID {
		case "0000:18:00.0":
			return -1, nil
		case "0000:28:00.0":
			return -1, fmt.Errorf("%w: test", inventory.ErrNoNUMAAffinity)
		case "0000:38:00.0":
			return -1, errors.New("broken sysfs")
		}
		return 1, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range inv.Devices {
		if d.HasNUMANode != (d.Index >= 3) {
			t.Errorf("GPU %d (%s): NUMA node %d known %v", d.Index, d.PCIBusID, d.NUMANode, d.HasNUMANode)
		}
	}
}

// writeSysfsDevice lays out <root>/bus/pci/devices/<busID> with the given
// files.
func writeSysfsDevice(t *testing.T, root, busID string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(root, "bus", "pci", "devices", busID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSysfsNUMANode(t *testing.T) {
	root := t.TempDir()
	writeSysfsDevice(t, root, "0000:18:00.0", map[string]string{"vendor": "0x10de\n", "numa_node": "1\n"})
	writeSysfsDevice(t, root, "0000:28:00.0", map[string]string{"vendor": "0x10de\n", "numa_node": "-1\n"})
	writeSysfsDevice(t, root, "0000:38:00.0", map[string]string{"vendor": "0x10de\n"})
	writeSysfsDevice(t, root, "0000:48:00.0", map[string]string{"vendor": "0x8086\n", "numa_node": "0\n"})
	writeSysfsDevice(t, root, "0000:58:00.0", map[string]string{"vendor": "0x10de\n", "numa_node": "zero\n"})
	resolve := inventory.SysfsNUMANode(root)
	for _, tc := range []struct {
		busID    string
		want     int
		noNUMA   bool
		otherErr bool
	}{
		{busID: "0000:18:00.0", want: 1},
		{busID: "0000:28:00.0", noNUMA: true},   // no NUMA affinity
		{busID: "0000:38:00.0", noNUMA: true},   // no numa_node file
		{busID: "0000:48:00.0", noNUMA: true},   // not an NVIDIA device
		{busID: "0000:68:00.0", noNUMA: true},   // not in sysfs (a mock GPU)
		{busID: "0000:58:00.0", otherErr: true}, // unreadable value
	} {
		got, err := resolve(tc.busID)
		switch {
		case tc.noNUMA:
			if !errors.Is(err, inventory.ErrNoNUMAAffinity) {
				t.Errorf("%s: %d, %v: want ErrNoNUMAAffinity", tc.busID, got, err)
			}
		case tc.otherErr:
			if err == nil || errors.Is(err, inventory.ErrNoNUMAAffinity) {
				t.Errorf("%s: %d, %v: want another error", tc.busID, got, err)
			}
		case err != nil || got != tc.want:
			t.Errorf("%s: %d, %v: want %d", tc.busID, got, err, tc.want)
		}
	}
}

// The real sysfs of the test host: an NVIDIA-less host gives no NUMA node
// for the mock bus IDs, and never an error other than ErrNoNUMAAffinity
// for an absent device.
func TestSysfsNUMANodeOnHost(t *testing.T) {
	s := newMachine(t, "dgxh100")
	_, ctx := ktesting.NewTestContext(t)
	inv, err := inventory.DiscoverWith(context.WithoutCancel(ctx), s, inventory.DiscoverOptions{NUMANode: inventory.SysfsNUMANode("/sys")})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range inv.Devices {
		if _, err := os.Stat(filepath.Join("/sys/bus/pci/devices", d.PCIBusID, "vendor")); err != nil && d.HasNUMANode {
			t.Errorf("GPU %d (%s): NUMA node %d from a host without that device", d.Index, d.PCIBusID, d.NUMANode)
		}
	}
}

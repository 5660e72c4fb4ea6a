package deviceplugin

import (
	"fmt"
	"slices"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

// nvlinkMachine is 4 GPUs on one NUMA node, all under one host bridge, with
// NVLinks 0<->3 (two links) and 1<->2 (one link).
func nvlinkMachine() (nvml.Interface, *inventory.Inventory) {
	inv := &inventory.Inventory{DriverVersion: "550.54.15"}
	devs := make([]*mock.Device, 4)
	peers := map[int][]int{0: {3, 3}, 3: {0, 0}, 1: {2}, 2: {1}}
	busID := func(i int) string { return fmt.Sprintf("0000:%02x:00.0", 0x10+i) }
	for i := range devs {
		inv.Devices = append(inv.Devices, inventory.Device{Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%d", i), PCIBusID: busID(i)})
		devs[i] = &mock.Device{
			GetNumaNodeIdFunc: func() (int, nvml.Return) { return 0, nvml.SUCCESS },
			GetTopologyCommonAncestorFunc: func(nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
				return nvml.TOPOLOGY_HOSTBRIDGE, nvml.SUCCESS
			},
			GetNvLinkStateFunc: func(l int) (nvml.EnableState, nvml.Return) {
				if l < len(peers[i]) {
					return nvml.FEATURE_ENABLED, nvml.SUCCESS
				}
				if l < 18 {
					return nvml.FEATURE_DISABLED, nvml.SUCCESS
				}
				return 0, nvml.ERROR_INVALID_ARGUMENT
			},
			GetNvLinkRemotePciInfoFunc: func(l int) (nvml.PciInfo, nvml.Return) {
				var pci nvml.PciInfo
				// NVML's 8-digit domain form.
				for k, c := range "0000" + busID(peers[i][l]) {
					pci.BusId[k] = int8(c)
				}
				return pci, nvml.SUCCESS
			},
		}
	}
	lib := &mock.Interface{DeviceGetHandleByIndexFunc: func(n int) (nvml.Device, nvml.Return) { return devs[n], nvml.SUCCESS }}
	return lib, inv
}

func TestPreferredAllocationFollowsNVLinks(t *testing.T) {
	lib, inv := nvlinkMachine()
	_, ctx := ktesting.NewTestContext(t)
	p, err := New(ctx, Config{DeviceListStrategies: []string{StrategyEnvvar}, DeviceIDStrategy: IDStrategyIndex, DevicePluginPath: t.TempDir()}, inv, lib, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"numa", "pcie", "nvlink"}; !slices.Equal(p.topo.sources, want) {
		t.Errorf("topology sources %v, want %v", p.topo.sources, want)
	}
	all := []string{"0", "1", "2", "3"}
	for _, tc := range []struct {
		available, must []string
		size            int
		want            []string
	}{
		{all, nil, 2, []string{"0", "3"}},
		{[]string{"0", "1", "2"}, nil, 2, []string{"1", "2"}},
		{all, []string{"2"}, 2, []string{"1", "2"}},
		{all, []string{"0", "1"}, 3, []string{"0", "1", "3"}}, // two links 0-3 beat one link 1-2
	} {
		if got := preferred(t, p, tc.available, tc.must, tc.size); !slices.Equal(got, tc.want) {
			t.Errorf("available %v, must %v, size %d: got %v, want %v", tc.available, tc.must, tc.size, got, tc.want)
		}
	}
}

func TestTopologyFallsBackToNUMAOnMockPanics(t *testing.T) {
	// The go-nvml mock machines panic for unimplemented methods (common
	// ancestors, NVLinks); NUMA still counts.
	lib, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	logger, _ := ktesting.NewTestContext(t)
	topo := readTopology(logger, lib, inv.Devices)
	if !slices.Equal(topo.sources, []string{"numa"}) {
		t.Errorf("sources %v, want [numa]", topo.sources)
	}
	if topo.score[0][1] != scoreSameNUMA || topo.score[0][4] != 0 {
		t.Errorf("scores %v", topo.score)
	}
	if none := readTopology(logger, nil, inv.Devices); none.numa[0] != -1 || len(none.sources) != 0 {
		t.Errorf("without NVML: %+v", none)
	}
}

package mockmachine

import (
	"crypto/sha256"
	"fmt"
	"sort"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// mockMachines are the go-nvml mock servers this driver can impersonate.
var mockMachines = map[string]func() *server.Server{
	"dgxa100": dgxa100.New,
	"dgxh100": dgxh100.New,
	"dgxh200": dgxh200.New,
	"dgxb200": dgxb200.New,
}

// MockMachines lists the machine names accepted by NewMock.
func Names() []string {
	names := make([]string, 0, len(mockMachines))
	for n := range mockMachines {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewMock returns an initialized go-nvml mock machine; a name with the
// MIGSuffix gives the machine's MIG variant (see MIGLayout).
// go-nvml's servers
// draw random UUIDs and report no PCI bus ID; NewMock makes both
// deterministic from (machine, seed, index) so that a restarted plugin sees
// the same devices, and fills in the NVML calls that the driver and nvcdi
// make but the servers leave unset.
func New(machine, seed string) (*server.Server, error) {
	base, withMIG := splitMIGMachine(machine)
	newServer, ok := mockMachines[base]
	if !ok {
		return nil, fmt.Errorf("unknown mock machine %q: use one of %v, or a MIG variant %v", machine, Names(), MIGNames())
	}
	s := newServer()
	for i, h := range s.Devices {
		d, ok := h.(*server.Device)
		if !ok {
			return nil, fmt.Errorf("mock machine %q: device %d has unexpected type %T", machine, i, h)
		}
		completeMockDevice(d, mockUUID(machine, seed, i), mockBusID(i))
	}
	if withMIG {
		if err := enableMockMIG(s, machine, seed); err != nil {
			return nil, err
		}
	}
	if ret := s.Init(); ret != nvml.SUCCESS {
		return nil, fmt.Errorf("mock machine %q: init: %s", machine, nvml.ErrorString(ret))
	}
	return s, nil
}

func completeMockDevice(d *server.Device, uuid, busID string) {
	d.UUID = uuid
	d.PciBusID = busID
	pciDeviceID := d.Config.PciDeviceId
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		info := nvml.PciInfo{PciDeviceId: pciDeviceID}
		// NVML reports an 8-digit domain.
		copy(info.BusId[:], toInt8("0000"+busID))
		return info, nvml.SUCCESS
	}
	d.IsMigDeviceHandleFunc = func() (bool, nvml.Return) { return false, nvml.SUCCESS }
	d.GetNumaNodeIdFunc = func() (int, nvml.Return) { return d.Minor / 4, nvml.SUCCESS }
}

func mockUUID(machine, seed string, index int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d", machine, seed, index))
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}

// mockBusID spreads the GPUs over buses the way a DGX does (one per PCIe
// switch), 15 per PCI domain so that bus numbers stay within 8 bits.
func mockBusID(index int) string {
	return fmt.Sprintf("%04x:%02x:00.0", index/15, 0x18+(index%15)*0x10)
}

func toInt8(s string) []int8 {
	out := make([]int8, len(s))
	for i := range s {
		out[i] = int8(s[i])
	}
	return out
}

// Known tells whether New accepts machine: one of Names, or a MIG variant
// of one (MIGNames).
func Known(machine string) bool {
	base, _ := splitMIGMachine(machine)
	_, ok := mockMachines[base]
	return ok
}

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
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// mockMachines are the go-nvml mock servers this driver can impersonate.
var mockMachines = map[string]func() *server.Server{
	"dgxa100": dgxa100.New,
	"dgxa100-80gb": func() *server.Server {
		return dgxa100.NewWithGPUs(gpus.Multiple(8, gpus.A100_SXM4_80GB)...)
	},
	"dgxh100": dgxh100.New,
	"dgxh200": dgxh200.New,
	"dgxb200": dgxb200.New,
}

// Names lists the machine names accepted by New (see also MIGNames and
// MIGOnNames).
func Names() []string {
	names := make([]string, 0, len(mockMachines))
	for n := range mockMachines {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New returns an initialized go-nvml mock machine. A name with MIGSuffix
// gives the machine's MIG variant (see MIGLayout), one with MIGOnSuffix the
// variant whose GPUs are all in MIG mode without instances; the others
// start with MIG mode disabled. go-nvml's servers draw random UUIDs and
// report no PCI bus ID; New makes both deterministic from (machine, seed,
// index) so that a restarted plugin sees the same devices, and fills in
// the NVML calls that the driver and nvcdi make but the servers leave
// unset, the topology calls among them (NUMA node, module ID, NVLink
// fabric, addressing mode: see topology.go). Every GPU gets real MIG profile tables and the MIG instance
// lifecycle of a real GPU (see installMIGLifecycle); WithMIGState keeps
// its state across restarts.
func New(machine, seed string, opts ...Option) (*server.Server, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	base, v := splitVariant(machine)
	newServer, ok := mockMachines[base]
	if !ok {
		return nil, fmt.Errorf("unknown mock machine %q: use one of %v, a MIG variant %v, or a MIG-mode variant %v", machine, Names(), MIGNames(), MIGOnNames())
	}
	s := newServer()
	for i, h := range s.Devices {
		d, ok := h.(*server.Device)
		if !ok {
			return nil, fmt.Errorf("mock machine %q: device %d has unexpected type %T", machine, i, h)
		}
		completeMockDevice(d, mockUUID(machine, seed, i), mockBusID(i))
		installTopology(d, base, seed, i, len(s.Devices))
	}
	m, err := installMIGLifecycle(s, machine, seed)
	if err != nil {
		return nil, err
	}
	loaded := false
	if o.migState != "" {
		if loaded, err = m.load(o.migState); err != nil {
			return nil, fmt.Errorf("mock machine %q: %w", machine, err)
		}
	}
	if !loaded {
		if err := m.applyVariant(v); err != nil {
			return nil, err
		}
	}
	m.mu.Lock()
	m.statePath = o.migState
	m.mu.Unlock()
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

// Known tells whether New accepts machine: one of Names, or a variant of
// one (MIGNames, MIGOnNames).
func Known(machine string) bool {
	base, _ := splitVariant(machine)
	_, ok := mockMachines[base]
	return ok
}

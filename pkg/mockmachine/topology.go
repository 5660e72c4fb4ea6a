package mockmachine

import (
	"crypto/sha256"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// The topology of the mock machines, in the shape of a two-socket DGX:
//
//   - NUMA: the first half of the GPUs on NUMA node 0, the second half on
//     node 1 (GPUs 0-3 and 4-7), through NUMANodes, since the host's sysfs
//     knows nothing of the mock bus IDs (the GPUs' nvmlDeviceGetNumaNodeId
//     answers the same nodes);
//   - module IDs: GPU i is module i+1 of its baseboard (nvmlDeviceGetModuleId);
//   - NVLink fabric (Hopper and Blackwell machines: dgxh100, dgxh200, dgxb200
//     and their variants): registration completed, one cluster UUID per
//     machine and seed (so per node), and two cliques of half the GPUs each,
//     FabricCliqueID: GPUs 0-3 in clique 1, GPUs 4-7 in clique 2, so that
//     "GPUs of one NVLink domain" is a real choice on one node. (A real HGX
//     board is one NVLink domain; Fabric Manager partitions split it the
//     same way.) The A100 machines answer NOT_SUPPORTED, as Ampere does;
//   - addressing mode: "HMM" on the Hopper and Blackwell machines (an x86
//     host with the open kernel modules), NOT_SUPPORTED on the A100 ones.

// fabricMachines are the base machines with an NVLink fabric and an
// addressing mode.
var fabricMachines = map[string]bool{"dgxh100": true, "dgxh200": true, "dgxb200": true}

// FabricCliqueID returns the fabric clique of GPU index of a machine with
// count GPUs: 1 for the first half, 2 for the second.
func FabricCliqueID(index, count int) uint32 {
	return uint32(1 + halfOf(index, count))
}

// numaNodeOf is the NUMA node of GPU index of a machine with count GPUs.
func numaNodeOf(index, count int) int { return halfOf(index, count) }

func halfOf(index, count int) int {
	if count <= 1 {
		return 0
	}
	return index * 2 / count
}

// FabricClusterUUID returns the NVLink cluster UUID of the mock machine
// (base name, without variant suffix) with seed, as NVML's 16 bytes.
func FabricClusterUUID(machine, seed string) [16]uint8 {
	base, _ := splitVariant(machine)
	sum := sha256.Sum256(fmt.Appendf(nil, "fabric/%s/%s", base, seed))
	var out [16]uint8
	copy(out[:], sum[:16])
	out[6] = out[6]&0x0f | 0x40 // a version 4 UUID, as random ones are
	out[8] = out[8]&0x3f | 0x80
	return out
}

// installTopology sets the topology calls of the mock GPU d, the index-th
// of count GPUs of machine (base name) with seed.
func installTopology(d *server.Device, machine, seed string, index, count int) {
	node := numaNodeOf(index, count)
	d.GetNumaNodeIdFunc = func() (int, nvml.Return) { return node, nvml.SUCCESS }
	module := index + 1
	d.GetModuleIdFunc = func() (int, nvml.Return) { return module, nvml.SUCCESS }
	if !fabricMachines[machine] {
		d.GetGpuFabricInfoFunc = func() (nvml.GpuFabricInfo, nvml.Return) { return nvml.GpuFabricInfo{}, nvml.ERROR_NOT_SUPPORTED }
		d.GetAddressingModeFunc = func() (nvml.DeviceAddressingMode, nvml.Return) {
			return nvml.DeviceAddressingMode{}, nvml.ERROR_NOT_SUPPORTED
		}
		return
	}
	info := nvml.GpuFabricInfo{
		ClusterUuid: FabricClusterUUID(machine, seed),
		Status:      uint32(nvml.SUCCESS),
		CliqueId:    FabricCliqueID(index, count),
		State:       nvml.GPU_FABRIC_STATE_COMPLETED,
	}
	d.GetGpuFabricInfoFunc = func() (nvml.GpuFabricInfo, nvml.Return) { return info, nvml.SUCCESS }
	d.GetAddressingModeFunc = func() (nvml.DeviceAddressingMode, nvml.Return) {
		return nvml.DeviceAddressingMode{Version: addressingModeV1, Value: uint32(nvml.DEVICE_ADDRESSING_MODE_HMM)}, nvml.SUCCESS
	}
}

// addressingModeV1 is NVML's nvmlDeviceAddressingMode_v1: the struct's size
// (8 bytes) with version 1 in the top byte.
const addressingModeV1 = 8 | 1<<24

// NUMANodes returns the NUMA node resolver of the mock machine s (a machine
// of New) for inventory.DiscoverOptions: the node of the GPU with that bus
// ID (see the top of this file); ErrNoNUMAAffinity for a bus ID that is not
// one of s's GPUs.
func NUMANodes(s *server.Server) func(busID string) (int, error) {
	nodes := map[string]int{}
	for i, h := range s.Devices {
		if d, ok := h.(*server.Device); ok {
			nodes[d.PciBusID] = numaNodeOf(i, len(s.Devices))
		}
	}
	return func(busID string) (int, error) {
		if n, ok := nodes[busID]; ok {
			return n, nil
		}
		return -1, fmt.Errorf("%w: %s is not a GPU of the mock machine", inventory.ErrNoNUMAAffinity, busID)
	}
}

package resourceslice

import (
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/deviceattribute"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// Topology attributes: where a GPU sits in the host and in its NVLink
// fabric. They are published on every device of the GPU (the whole GPU, its
// MIG devices, its partitions), only when discovery found a value
// (inventory.Device): a GPU whose query failed, or that has no such
// property, is published without the attribute, never with a placeholder.
// Devices that lack an attribute never match a matchAttribute constraint
// on it (and a CEL selector that reads it fails for them: guard it with
// `"cliqueID" in device.attributes["gpu.nvidia.com"]`).
const (
	// AttrNUMANode is the standard resource.kubernetes.io/numaNode: the
	// NUMA node of the GPU's PCI device (int, the scalar form, which needs
	// no feature gate), from the host's sysfs
	// (inventory.SysfsNUMANode); absent when the kernel reports no NUMA
	// affinity (-1) or no entry. A matchAttribute on it co-locates devices
	// of different drivers (GPUs, NICs, CPUs) on one NUMA node.
	AttrNUMANode resourceapi.QualifiedName = deviceattribute.StandardDeviceAttributeNUMANode

	// AttrAddressingMode is how the GPU addresses system memory, NVIDIA's
	// reference driver's attribute of that name: "HMM" (heterogeneous
	// memory management), "ATS" (address translation services, coherent
	// platforms such as Grace Hopper) or "None" (supported, neither
	// active); absent when NVML does not report it (NOT_SUPPORTED, no
	// nvmlDeviceGetAddressingMode).
	AttrAddressingMode resourceapi.QualifiedName = "addressingMode"

	// AttrGPUModuleID is the GPU module's ID on its baseboard
	// (nvmlDeviceGetModuleId, int, e.g. 1-8 on an HGX board), NVIDIA's
	// reference driver's Fabric Manager attribute of that name; absent
	// when NVML reports 0 (not a baseboard product) or nothing.
	AttrGPUModuleID resourceapi.QualifiedName = "gpuModuleID"

	// AttrClusterUUID is the UUID of the GPU's NVLink cluster
	// (nvmlDeviceGetGpuFabricInfo), lower case. Absent unless the GPU's
	// fabric registration completed successfully with a non-zero cluster
	// UUID (multi-node NVLink capable systems; see inventory.Fabric).
	AttrClusterUUID resourceapi.QualifiedName = "clusterUUID"

	// AttrCliqueID is the GPU's NVLink domain, "<clusterUUID>.<clique ID>"
	// (inventory.Fabric.Clique): the value of NVIDIA's GPU feature
	// discovery label nvidia.com/gpu.clique and of the reference driver's
	// ComputeDomain clique IDs, unique across clusters. GPUs with the same
	// cliqueID reach each other over NVLink: `matchAttribute:
	// gpu.nvidia.com/cliqueID` keeps a claim's GPUs in one NVLink domain.
	// Absent exactly when clusterUUID is.
	AttrCliqueID resourceapi.QualifiedName = "cliqueID"
)

// putTopologyAttributes sets the topology attributes of the GPU g that
// discovery found. The NUMA node goes through
// deviceattribute.GetNUMANodeAttribute, which rejects nodes out of the
// kernel's range.
func putTopologyAttributes(attrs map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, g inventory.Device) {
	if g.HasNUMANode {
		if a, err := deviceattribute.GetNUMANodeAttribute(g.NUMANode, deviceattribute.ScalarAttribute); err == nil {
			attrs[a.Name] = a.Value
		}
	}
	putString(attrs, AttrAddressingMode, g.AddressingMode)
	if g.ModuleID > 0 {
		attrs[AttrGPUModuleID] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(g.ModuleID))}
	}
	if clique := g.Fabric.Clique(); clique != "" {
		putString(attrs, AttrClusterUUID, g.Fabric.ClusterUUID)
		putString(attrs, AttrCliqueID, clique)
	}
}

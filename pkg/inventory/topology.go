package inventory

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/google/uuid"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	"k8s.io/klog/v2"
)

// The topology of a GPU: where it sits in the host (NUMA node), how it
// addresses system memory, and its NVLink fabric (cluster, clique, module).
// None of it is needed to use the GPU, so none of it makes a GPU unusable:
// a query that NVML does not have (an older driver, a mock library without
// the symbol), that answers NOT_SUPPORTED, or that fails leaves the field
// at its zero value, and a failure is logged.

// DiscoverOptions tune DiscoverWith. The zero value resolves no NUMA node.
type DiscoverOptions struct {
	// NUMANode resolves a GPU's normalized PCI bus ID ("0000:18:00.0") to
	// its NUMA node. It is called once per usable GPU that has a bus ID.
	// An error wrapping ErrNoNUMAAffinity means the GPU has no NUMA node
	// to report (sysfs numa_node -1 or missing, a mock GPU unknown to the
	// host) and is not logged; any other error is logged; with either the
	// GPU's HasNUMANode stays false. Nil: no NUMA nodes.
	//
	// SysfsNUMANode is the resolver of real GPUs; a mock machine gives its
	// own (mockmachine.NUMANode), because the host's sysfs knows nothing of
	// its invented bus IDs.
	NUMANode func(busID string) (int, error)
}

// ErrNoNUMAAffinity means that a GPU has no NUMA node to publish.
var ErrNoNUMAAffinity = errors.New("no NUMA affinity")

// nvidiaPCIVendor is the content of an NVIDIA device's sysfs vendor file.
const nvidiaPCIVendor = "0x10de"

// SysfsNUMANode returns the NUMA node resolver of real GPUs: the kernel's
// numa_node of <sysfsRoot>/bus/pci/devices/<busID>, read with
// deviceattribute.GetNUMANodeAttributeByPCIBusID (scalar form) over the
// sysfs tree mounted at sysfsRoot (the host's /sys). It answers
// ErrNoNUMAAffinity when the device is not in that tree (a container
// without the host's /sys, a mock GPU), is not an NVIDIA device (its vendor
// file is not 0x10de: a mock bus ID that names some other device of the
// host), or has no NUMA affinity (numa_node missing or -1).
func SysfsNUMANode(sysfsRoot string) func(busID string) (int, error) {
	return func(busID string) (int, error) {
		dir := filepath.Join(sysfsRoot, "bus", "pci", "devices", busID)
		vendor, err := os.ReadFile(filepath.Join(dir, "vendor"))
		if errors.Is(err, fs.ErrNotExist) {
			return -1, fmt.Errorf("%w: %s is not in %s", ErrNoNUMAAffinity, busID, sysfsRoot)
		}
		if err != nil {
			return -1, fmt.Errorf("NUMA node of %s: reading its vendor: %w", busID, err)
		}
		if v := strings.TrimSpace(string(vendor)); v != nvidiaPCIVendor {
			return -1, fmt.Errorf("%w: the device at %s under %s has vendor %s, not NVIDIA's %s", ErrNoNUMAAffinity, busID, sysfsRoot, v, nvidiaPCIVendor)
		}
		raw, err := os.ReadFile(filepath.Join(dir, "numa_node"))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && strings.TrimSpace(string(raw)) == "-1") {
			return -1, fmt.Errorf("%w: %s has no NUMA node in %s", ErrNoNUMAAffinity, busID, sysfsRoot)
		}
		attr, err := deviceattribute.GetNUMANodeAttributeByPCIBusID(busID, deviceattribute.ScalarAttribute, deviceattribute.WithFSFromRoot(sysfsRoot))
		if err != nil {
			return -1, fmt.Errorf("NUMA node of %s under %s: %w", busID, sysfsRoot, err)
		}
		if attr.Value.IntValue == nil {
			return -1, fmt.Errorf("NUMA node of %s under %s: no value", busID, sysfsRoot)
		}
		return int(*attr.Value.IntValue), nil
	}
}

// Fabric is a GPU's place in an NVLink fabric, as NVML's
// nvmlDeviceGetGpuFabricInfo reports it once the GPU's registration with
// the fabric (NVIDIA Fabric Manager, or the NVLink switch fabric of an
// NVL system) has completed successfully. The zero value (ClusterUUID "")
// means the GPU is in no fabric that names a cluster: NVML without the
// call, NOT_SUPPORTED (no NVLink fabric: PCIe GPUs, A100 and older),
// registration not completed or failed, or a zero cluster UUID (an
// NVLink system that is not multi-node NVLink capable).
type Fabric struct {
	// ClusterUUID is the UUID of the NVLink cluster, in the canonical
	// lower-case form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
	ClusterUUID string
	// CliqueID is the fabric clique of the GPU within the cluster: GPUs
	// with the same cluster UUID and clique ID share one NVLink domain
	// (peer-to-peer over NVLink). It is unique within the cluster only.
	CliqueID uint32
}

// Clique returns the NVLink domain of the GPU, unique across clusters:
// "<ClusterUUID>.<CliqueID>", the form of NVIDIA's GPU feature discovery
// label nvidia.com/gpu.clique and of the reference DRA driver's
// ComputeDomain clique IDs; "" for the zero Fabric.
func (f Fabric) Clique() string {
	if f.ClusterUUID == "" {
		return ""
	}
	return fmt.Sprintf("%s.%d", f.ClusterUUID, f.CliqueID)
}

// Symbols of the optional queries: go-nvml calls a C function that the
// loaded library may not have (an older driver, the mock library), and the
// dynamic linker then aborts the process, so each is looked up first.
const (
	symbolFabricInfo     = "nvmlDeviceGetGpuFabricInfo"
	symbolModuleID       = "nvmlDeviceGetModuleId"
	symbolAddressingMode = "nvmlDeviceGetAddressingMode"
)

// describeTopology fills in d's optional topology fields. It never fails:
// see the top of this file.
func describeTopology(logger klog.Logger, lib nvml.Interface, h nvml.Device, d *Device, opts DiscoverOptions) {
	if opts.NUMANode != nil && d.PCIBusID != "" {
		switch node, err := opts.NUMANode(d.PCIBusID); {
		case err == nil && node >= 0:
			d.NUMANode, d.HasNUMANode = node, true
		case err == nil:
			logger.V(2).Info("GPU has no NUMA affinity", "pciBusID", d.PCIBusID, "numaNode", node)
		case errors.Is(err, ErrNoNUMAAffinity):
			logger.V(4).Info("GPU has no NUMA node", "pciBusID", d.PCIBusID, "reason", err.Error())
		default:
			logger.Error(err, "Reading the GPU's NUMA node failed: it is published without resource.kubernetes.io/numaNode", "pciBusID", d.PCIBusID)
		}
	}
	if has(lib, symbolAddressingMode) {
		if mode, ret := query(func() (nvml.DeviceAddressingMode, nvml.Return) { return h.GetAddressingMode() }); ret == nvml.SUCCESS {
			if d.AddressingMode = addressingModeName(mode.Value); d.AddressingMode == "" {
				logger.Info("NVML reports an unknown addressing mode: it is not published", "value", mode.Value)
			}
		} else if !absent(ret) {
			logger.Error(ret, "Reading the GPU's addressing mode failed: it is published without addressingMode")
		}
	}
	if has(lib, symbolModuleID) {
		if id, ret := query(func() (int, nvml.Return) { return h.GetModuleId() }); ret == nvml.SUCCESS && id > 0 {
			d.ModuleID = id
		} else if ret != nvml.SUCCESS && !absent(ret) {
			logger.Error(ret, "Reading the GPU's module ID failed: it is published without gpuModuleID")
		}
	}
	if has(lib, symbolFabricInfo) {
		//nolint:staticcheck // GetGpuFabricInfoV cannot be mocked (its handler calls C); v1 has every field used here.
		info, ret := query(func() (nvml.GpuFabricInfo, nvml.Return) { return h.GetGpuFabricInfo() })
		switch {
		case ret == nvml.SUCCESS:
			d.Fabric = fabricOf(logger, info)
		case !absent(ret):
			logger.Error(ret, "Reading the GPU's NVLink fabric failed: it is published without clusterUUID and cliqueID")
		}
	}
}

// fabricOf returns the Fabric of a successful fabric query, or the zero
// Fabric (logged) when the registration is not complete or failed.
func fabricOf(logger klog.Logger, info nvml.GpuFabricInfo) Fabric {
	switch info.State {
	case nvml.GPU_FABRIC_STATE_NOT_SUPPORTED:
		return Fabric{}
	case nvml.GPU_FABRIC_STATE_COMPLETED:
	default:
		// The plugin discovers GPUs once, at start-up: a GPU whose
		// registration completes later gets its fabric attributes when
		// the plugin restarts.
		logger.Info("GPU's NVLink fabric registration has not completed: it is published without clusterUUID and cliqueID until the plugin restarts",
			"fabricState", info.State)
		return Fabric{}
	}
	if status := nvml.Return(info.Status); status != nvml.SUCCESS {
		logger.Error(status, "GPU's NVLink fabric registration failed: it is published without clusterUUID and cliqueID; check the Fabric Manager (or NVLink switch) logs")
		return Fabric{}
	}
	if info.ClusterUuid == [16]uint8{} {
		return Fabric{} // NVLink-capable, not multi-node NVLink capable
	}
	return Fabric{ClusterUUID: uuid.UUID(info.ClusterUuid).String(), CliqueID: info.CliqueId}
}

func addressingModeName(v uint32) string {
	switch nvml.DeviceAddressingModeType(v) {
	case nvml.DEVICE_ADDRESSING_MODE_NONE:
		return "None"
	case nvml.DEVICE_ADDRESSING_MODE_HMM:
		return "HMM"
	case nvml.DEVICE_ADDRESSING_MODE_ATS:
		return "ATS"
	}
	return ""
}

// absent tells whether ret means that the GPU or NVML does not have the
// queried information, which is not a failure.
func absent(ret nvml.Return) bool {
	return ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_FUNCTION_NOT_FOUND
}

// has tells whether the loaded NVML library exports symbol. A library whose
// Extensions cannot say (a bare test mock) is taken to have it: its calls
// go through query.
func has(lib nvml.Interface, symbol string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = true
		}
	}()
	return lib.Extensions().LookupSymbol(symbol) == nil
}

// query runs an optional NVML call. go-nvml's generated mocks panic for a
// call they do not implement; that is taken as ERROR_FUNCTION_NOT_FOUND, so
// a mock without the call behaves like a library without the symbol.
func query[T any](call func() (T, nvml.Return)) (v T, ret nvml.Return) {
	defer func() {
		if recover() != nil {
			var zero T
			v, ret = zero, nvml.ERROR_FUNCTION_NOT_FOUND
		}
	}()
	return call()
}

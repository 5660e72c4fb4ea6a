// Package inventory discovers the GPUs of a node through NVML and describes
// them in plain Go types that the rest of the driver consumes.
//
// Discover is the only place that talks to NVML for the inventory; callers
// hold the returned Inventory, which is immutable once returned.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"
)

// Device is one full GPU as NVML reports it.
type Device struct {
	// Index is NVML's enumeration index.
	Index int
	// Minor is the device node minor number: /dev/nvidia<Minor>.
	Minor int
	// UUID is NVML's stable identifier, "GPU-...".
	UUID string
	// ProductName is NVML's device name, e.g. "NVIDIA H100 80GB HBM3".
	ProductName string
	// Brand is the product brand, e.g. "Nvidia", "Tesla".
	Brand string
	// Architecture is the GPU architecture, e.g. "Hopper".
	Architecture string
	// CUDAComputeCapability is "<major>.<minor>", e.g. "9.0".
	CUDAComputeCapability string
	// MemoryBytes is the total framebuffer memory.
	MemoryBytes uint64
	// PCIBusID is the normalized bus ID, "dddd:bb:dd.f" in lower case, or
	// empty when NVML does not report one.
	PCIBusID string
	// MIGCapable tells whether the GPU supports MIG partitioning.
	MIGCapable bool
	// MIGEnabled tells whether the GPU is in MIG mode: it is then used
	// through its MIG devices (Inventory.MIGDevices), never as a whole.
	MIGEnabled bool
	// NUMANode is the NUMA node of the GPU's PCI device, meaningful only
	// when HasNUMANode: DiscoverOptions.NUMANode resolved it (the host's
	// sysfs for real GPUs, the mock machine's layout for mock ones). A GPU
	// without NUMA affinity (sysfs numa_node -1), whose sysfs entry is
	// missing, or discovered without a resolver has HasNUMANode false.
	NUMANode    int
	HasNUMANode bool
	// AddressingMode is how the GPU addresses system memory, as NVML's
	// nvmlDeviceGetAddressingMode reports it: "HMM", "ATS" or "None"
	// (supported, neither active); "" when NVML does not report it (an
	// NVML without the call, NOT_SUPPORTED, or a failed query).
	AddressingMode string
	// Fabric is the GPU's place in an NVLink fabric (nvmlDeviceGetGpuFabricInfo);
	// the zero value when the GPU is in none, see Fabric.
	Fabric Fabric
	// ModuleID is the GPU module's ID on its baseboard
	// (nvmlDeviceGetModuleId), e.g. 1-8 on an HGX board; 0 when NVML
	// reports none (not a baseboard product, an NVML without the call, a
	// failed query).
	ModuleID int
}

// UnusableDevice is a GPU that NVML enumerates but cannot describe: a call
// that discovery needs failed for it (typically ERROR_GPU_IS_LOST, a GPU
// that fell off the bus; or a broken GPU, e.g. ERROR_UNKNOWN). The node's
// other GPUs are used without it; it is reported (see Fix), never used.
type UnusableDevice struct {
	// Index is NVML's enumeration index: the N of "GPU N" in nvidia-smi.
	Index int
	// UUID is NVML's identifier, "" when NVML could not read it.
	UUID string
	// Minor is the device node minor number, -1 when NVML could not read
	// it.
	Minor int
	// PCIBusID is the normalized bus ID, "dddd:bb:dd.f", "" when unknown.
	PCIBusID string
	// ProductName is NVML's device name, "" when unknown.
	ProductName string
	// Err names the NVML call that failed and NVML's error, e.g. "reading
	// memory info: ERROR_GPU_IS_LOST" (String names the GPU); NVML's
	// nvml.Return is in its chain (errors.Is(Err, nvml.ERROR_GPU_IS_LOST)).
	Err error
}

// Lost tells whether NVML reported the GPU lost (ERROR_GPU_IS_LOST).
func (u UnusableDevice) Lost() bool { return errors.Is(u.Err, nvml.ERROR_GPU_IS_LOST) }

// String names the GPU as an operator finds it: "GPU 5 (GPU-..., PCI
// 0000:18:00.0)", with what is known.
func (u UnusableDevice) String() string {
	var known []string
	if u.UUID != "" {
		known = append(known, u.UUID)
	}
	if u.PCIBusID != "" {
		known = append(known, "PCI "+u.PCIBusID)
	}
	if len(known) == 0 {
		return fmt.Sprintf("GPU %d", u.Index)
	}
	return fmt.Sprintf("GPU %d (%s)", u.Index, strings.Join(known, ", "))
}

// Fix is the operator's remedy for the GPU, the same wherever it is
// reported: reset it, or drain the node. A restarted plugin discovers the
// GPU again.
func (u UnusableDevice) Fix() string {
	return fmt.Sprintf("reset the GPU with `nvidia-smi -r -i %d` (stop the processes using it first) and restart the GPU plugins on the node, "+
		"or drain the node and reboot it; if the kernel log (dmesg | grep -i nvrm) shows Xid 79 or the GPU keeps failing, have the GPU replaced", u.Index)
}

// Inventory is a snapshot of the node's GPUs and driver.
type Inventory struct {
	// DriverVersion is the kernel driver version, e.g. "550.54.15".
	DriverVersion string
	// CUDADriverVersion is the CUDA version the driver supports, "<major>.<minor>".
	CUDADriverVersion string
	// Devices lists the usable GPUs ordered by NVML index.
	Devices []Device
	// MIGDevices lists the MIG devices of the GPUs in MIG mode, ordered
	// by parent index, GPU instance ID and compute instance ID.
	MIGDevices []MIGDevice
	// Unusable lists the GPUs NVML enumerates but cannot describe, ordered
	// by NVML index; they are in neither Devices nor MIGDevices.
	Unusable []UnusableDevice
}

// DeviceByUUID returns the device with the given UUID.
func (inv *Inventory) DeviceByUUID(uuid string) (Device, bool) {
	for _, d := range inv.Devices {
		if d.UUID == uuid {
			return d, true
		}
	}
	return Device{}, false
}

// UUIDs returns the devices' UUIDs in NVML index order.
func (inv *Inventory) UUIDs() []string {
	uuids := make([]string, 0, len(inv.Devices))
	for _, d := range inv.Devices {
		uuids = append(uuids, d.UUID)
	}
	return uuids
}

// Discover enumerates every GPU through lib. lib must be initialized by the
// caller (see Open); Discover does not call Init or Shutdown.
//
// A failure of the driver-wide calls (versions, GPU count) fails Discover:
// NVML is then unusable. A GPU that NVML enumerates but cannot describe (a
// failed call for it, or for its MIG devices) does not: it goes to
// Inventory.Unusable, with what NVML could read of it, and the other GPUs
// are discovered as usual.
//
// Discover is DiscoverWith without options: no NUMA node is resolved, and
// the GPUs' optional queries (see DiscoverWith) log to klog's global logger.
func Discover(lib nvml.Interface) (*Inventory, error) {
	return DiscoverWith(context.Background(), lib, DiscoverOptions{})
}

// DiscoverWith is Discover with options; the optional queries of each usable
// GPU (NUMA node, addressing mode, NVLink fabric, module ID; see topology.go)
// log through ctx's logger when they fail, and never make a GPU unusable.
func DiscoverWith(ctx context.Context, lib nvml.Interface, opts DiscoverOptions) (*Inventory, error) {
	logger := klog.FromContext(ctx)
	driverVersion, ret := lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("reading the driver version from NVML: %s", nvml.ErrorString(ret))
	}
	cudaVersion, ret := lib.SystemGetCudaDriverVersion()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("reading the CUDA driver version from NVML: %s", nvml.ErrorString(ret))
	}
	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("counting GPUs with NVML: %s", nvml.ErrorString(ret))
	}
	inv := &Inventory{
		DriverVersion:     driverVersion,
		CUDADriverVersion: fmt.Sprintf("%d.%d", cudaVersion/1000, (cudaVersion%1000)/10),
	}
	for i := 0; i < count; i++ {
		h, d, err := discoverDevice(lib, i)
		if err == nil && d.MIGEnabled {
			var migs []MIGDevice
			if migs, err = discoverMIG(h, d); err == nil {
				inv.MIGDevices = append(inv.MIGDevices, migs...)
			} else {
				err = fmt.Errorf("in MIG mode: %w", err)
			}
		}
		if err != nil {
			inv.Unusable = append(inv.Unusable, UnusableDevice{Index: i, UUID: d.UUID, Minor: d.Minor, PCIBusID: d.PCIBusID,
				ProductName: d.ProductName, Err: err})
			continue
		}
		describeTopology(klog.LoggerWithValues(logger, "gpu", d.Index, "uuid", d.UUID), lib, h, &d, opts)
		inv.Devices = append(inv.Devices, d)
	}
	return inv, nil
}

// discoverDevice describes the GPU at index. On error, the Device holds
// what could be read (Minor -1 when unknown) and the error names the first
// call that failed, with NVML's nvml.Return in its chain.
func discoverDevice(lib nvml.Interface, index int) (nvml.Device, Device, error) {
	d := Device{Index: index, Minor: -1}
	h, ret := lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		return nil, d, fmt.Errorf("getting the NVML handle: %w", ret)
	}
	var err error
	call := func(what string, r nvml.Return) bool {
		if r != nvml.SUCCESS {
			if err == nil {
				err = fmt.Errorf("reading %s: %w", what, r)
			}
			return false
		}
		return true
	}
	if uuid, ret := h.GetUUID(); call("UUID", ret) {
		d.UUID = uuid
	}
	if minor, ret := h.GetMinorNumber(); call("minor number", ret) {
		d.Minor = minor
	}
	if pci, ret := h.GetPciInfo(); call("PCI info", ret) {
		d.PCIBusID = normalizeBusID(pci.BusId)
	}
	if name, ret := h.GetName(); call("product name", ret) {
		d.ProductName = name
	}
	brand, ret := h.GetBrand()
	call("brand", ret)
	arch, ret := h.GetArchitecture()
	call("architecture", ret)
	major, minor, ret := h.GetCudaComputeCapability()
	call("CUDA compute capability", ret)
	mem, ret := h.GetMemoryInfo()
	call("memory info", ret)
	if err != nil {
		return h, d, err
	}
	d.Brand = brandName(brand)
	d.Architecture = architectureName(arch)
	d.CUDAComputeCapability = fmt.Sprintf("%d.%d", major, minor)
	d.MemoryBytes = mem.Total
	// MIG support is optional information: a GPU without MIG answers
	// NOT_SUPPORTED, which is not an error.
	if current, _, ret := h.GetMigMode(); ret == nvml.SUCCESS {
		d.MIGCapable = true
		d.MIGEnabled = current == nvml.DEVICE_MIG_ENABLE
	}
	return h, d, nil
}

// normalizeBusID turns NVML's C string ("00000000:3B:00.0") into the
// sysfs form ("0000:3b:00.0").
func normalizeBusID(raw [32]int8) string {
	var b strings.Builder
	for _, c := range raw {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	id := strings.ToLower(b.String())
	if id == "" {
		return ""
	}
	// NVML pads the domain to 8 hex digits; sysfs uses 4.
	if parts := strings.SplitN(id, ":", 2); len(parts) == 2 && len(parts[0]) == 8 && strings.HasPrefix(parts[0], "0000") {
		id = parts[0][4:] + ":" + parts[1]
	}
	return id
}

func architectureName(a nvml.DeviceArchitecture) string {
	switch a {
	case nvml.DEVICE_ARCH_KEPLER:
		return "Kepler"
	case nvml.DEVICE_ARCH_MAXWELL:
		return "Maxwell"
	case nvml.DEVICE_ARCH_PASCAL:
		return "Pascal"
	case nvml.DEVICE_ARCH_VOLTA:
		return "Volta"
	case nvml.DEVICE_ARCH_TURING:
		return "Turing"
	case nvml.DEVICE_ARCH_AMPERE:
		return "Ampere"
	case nvml.DEVICE_ARCH_ADA:
		return "Ada Lovelace"
	case nvml.DEVICE_ARCH_HOPPER:
		return "Hopper"
	case nvml.DEVICE_ARCH_BLACKWELL:
		return "Blackwell"
	case nvml.DEVICE_ARCH_RUBIN:
		return "Rubin"
	}
	return "Unknown"
}

func brandName(b nvml.BrandType) string {
	switch b {
	case nvml.BRAND_QUADRO:
		return "Quadro"
	case nvml.BRAND_TESLA:
		return "Tesla"
	case nvml.BRAND_NVS:
		return "NVS"
	case nvml.BRAND_GRID:
		return "Grid"
	case nvml.BRAND_GEFORCE:
		return "GeForce"
	case nvml.BRAND_TITAN:
		return "Titan"
	case nvml.BRAND_NVIDIA_VAPPS:
		return "NvidiaVApps"
	case nvml.BRAND_NVIDIA_VPC:
		return "NvidiaVPC"
	case nvml.BRAND_NVIDIA_VCS:
		return "NvidiaVCS"
	case nvml.BRAND_NVIDIA_VWS:
		return "NvidiaVWS"
	case nvml.BRAND_NVIDIA_CLOUD_GAMING:
		return "NvidiaCloudGaming"
	case nvml.BRAND_QUADRO_RTX:
		return "QuadroRTX"
	case nvml.BRAND_NVIDIA_RTX:
		return "NvidiaRTX"
	case nvml.BRAND_NVIDIA:
		return "Nvidia"
	case nvml.BRAND_GEFORCE_RTX:
		return "GeForceRTX"
	case nvml.BRAND_TITAN_RTX:
		return "TitanRTX"
	}
	return "Unknown"
}

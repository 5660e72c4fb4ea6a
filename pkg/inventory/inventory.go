// Package inventory discovers the GPUs of a node through NVML and describes
// them in plain Go types that the rest of the driver consumes.
//
// Discover is the only place that talks to NVML for the inventory; callers
// hold the returned Inventory, which is immutable once returned.
package inventory

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
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
}

// Inventory is a snapshot of the node's GPUs and driver.
type Inventory struct {
	// DriverVersion is the kernel driver version, e.g. "550.54.15".
	DriverVersion string
	// CUDADriverVersion is the CUDA version the driver supports, "<major>.<minor>".
	CUDADriverVersion string
	// Devices lists the GPUs ordered by NVML index.
	Devices []Device
	// MIGDevices lists the MIG devices of the GPUs in MIG mode, ordered
	// by parent index, GPU instance ID and compute instance ID.
	MIGDevices []MIGDevice
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
func Discover(lib nvml.Interface) (*Inventory, error) {
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
		d, err := discoverDevice(lib, i)
		if err != nil {
			return nil, fmt.Errorf("GPU %d: %w", i, err)
		}
		inv.Devices = append(inv.Devices, d)
		if d.MIGEnabled {
			h, _ := lib.DeviceGetHandleByIndex(i) // succeeded in discoverDevice
			migs, err := discoverMIG(h, d)
			if err != nil {
				return nil, fmt.Errorf("GPU %d (%s): %w", i, d.UUID, err)
			}
			inv.MIGDevices = append(inv.MIGDevices, migs...)
		}
	}
	return inv, nil
}

func discoverDevice(lib nvml.Interface, index int) (Device, error) {
	h, ret := lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		return Device{}, fmt.Errorf("getting the NVML handle: %s", nvml.ErrorString(ret))
	}
	d := Device{Index: index}
	var err error
	call := func(what string, r nvml.Return) {
		if r != nvml.SUCCESS && err == nil {
			err = fmt.Errorf("reading %s: %s", what, nvml.ErrorString(r))
		}
	}
	d.UUID, ret = h.GetUUID()
	call("UUID", ret)
	d.Minor, ret = h.GetMinorNumber()
	call("minor number", ret)
	d.ProductName, ret = h.GetName()
	call("product name", ret)
	brand, ret := h.GetBrand()
	call("brand", ret)
	arch, ret := h.GetArchitecture()
	call("architecture", ret)
	major, minor, ret := h.GetCudaComputeCapability()
	call("CUDA compute capability", ret)
	mem, ret := h.GetMemoryInfo()
	call("memory info", ret)
	pci, ret := h.GetPciInfo()
	call("PCI info", ret)
	if err != nil {
		return Device{}, err
	}
	d.Brand = brandName(brand)
	d.Architecture = architectureName(arch)
	d.CUDAComputeCapability = fmt.Sprintf("%d.%d", major, minor)
	d.MemoryBytes = mem.Total
	d.PCIBusID = normalizeBusID(pci.BusId)
	// MIG support is optional information: a GPU without MIG answers
	// NOT_SUPPORTED, which is not an error.
	if current, _, ret := h.GetMigMode(); ret == nvml.SUCCESS {
		d.MIGCapable = true
		d.MIGEnabled = current == nvml.DEVICE_MIG_ENABLE
	}
	return d, nil
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

package main

/*
#include "mocknvml.h"
*/
import "C"

import (
	"strings"
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Queries of one device: identity, product, memory, PCI, topology.

func ptr(h C.nvmlDevice_t) unsafe.Pointer { return unsafe.Pointer(h) }

func deviceString(fn string, h C.nvmlDevice_t, identity bool, buf *C.char, length C.uint, get func(nvml.Device) (string, nvml.Return)) nvml.Return {
	d, r := deviceOf(fn, ptr(h), identity)
	if r != nvml.SUCCESS {
		return r
	}
	s, r := get(d)
	if r != nvml.SUCCESS {
		return r
	}
	return putString(buf, length, s)
}

func deviceUint(fn string, h C.nvmlDevice_t, identity bool, out *C.uint, get func(nvml.Device) (int, nvml.Return)) nvml.Return {
	d, r := deviceOf(fn, ptr(h), identity)
	if r != nvml.SUCCESS {
		return r
	}
	if out == nil {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	v, r := get(d)
	if r == nvml.SUCCESS {
		*out = C.uint(v)
	}
	return r
}

//export nvmlDeviceGetUUID
func nvmlDeviceGetUUID(device C.nvmlDevice_t, uuid *C.char, length C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetUUID", &ret)
	return cret(deviceString("nvmlDeviceGetUUID", device, true, uuid, length, nvml.Device.GetUUID))
}

//export nvmlDeviceGetName
func nvmlDeviceGetName(device C.nvmlDevice_t, name *C.char, length C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetName", &ret)
	return cret(deviceString("nvmlDeviceGetName", device, false, name, length, nvml.Device.GetName))
}

//export nvmlDeviceGetSerial
func nvmlDeviceGetSerial(device C.nvmlDevice_t, serial *C.char, length C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetSerial", &ret)
	return cret(deviceString("nvmlDeviceGetSerial", device, false, serial, length, nvml.Device.GetSerial))
}

//export nvmlDeviceGetIndex
func nvmlDeviceGetIndex(device C.nvmlDevice_t, index *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetIndex", &ret)
	return cret(deviceUint("nvmlDeviceGetIndex", device, true, index, nvml.Device.GetIndex))
}

//export nvmlDeviceGetMinorNumber
func nvmlDeviceGetMinorNumber(device C.nvmlDevice_t, minorNumber *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetMinorNumber", &ret)
	return cret(deviceUint("nvmlDeviceGetMinorNumber", device, true, minorNumber, nvml.Device.GetMinorNumber))
}

//export nvmlDeviceGetNumaNodeId
func nvmlDeviceGetNumaNodeId(device C.nvmlDevice_t, node *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetNumaNodeId", &ret)
	return cret(deviceUint("nvmlDeviceGetNumaNodeId", device, false, node, nvml.Device.GetNumaNodeId))
}

//export nvmlDeviceGetBrand
func nvmlDeviceGetBrand(device C.nvmlDevice_t, brand *C.int) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetBrand", &ret)
	d, r := device_("nvmlDeviceGetBrand", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if brand == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	b, r := d.GetBrand()
	if r == nvml.SUCCESS {
		*brand = C.int(b)
	}
	return cret(r)
}

//export nvmlDeviceGetArchitecture
func nvmlDeviceGetArchitecture(device C.nvmlDevice_t, arch *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetArchitecture", &ret)
	d, r := device_("nvmlDeviceGetArchitecture", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if arch == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	a, r := d.GetArchitecture()
	if r == nvml.SUCCESS {
		*arch = C.uint(a)
	}
	return cret(r)
}

//export nvmlDeviceGetCudaComputeCapability
func nvmlDeviceGetCudaComputeCapability(device C.nvmlDevice_t, major, minor *C.int) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetCudaComputeCapability", &ret)
	d, r := device_("nvmlDeviceGetCudaComputeCapability", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if major == nil || minor == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	ma, mi, r := d.GetCudaComputeCapability()
	if r == nvml.SUCCESS {
		*major, *minor = C.int(ma), C.int(mi)
	}
	return cret(r)
}

//export nvmlDeviceGetMemoryInfo
func nvmlDeviceGetMemoryInfo(device C.nvmlDevice_t, memory *C.nvmlMemory_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetMemoryInfo", &ret)
	d, r := device_("nvmlDeviceGetMemoryInfo", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if memory == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	m, r := d.GetMemoryInfo()
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(memory), m)
	}
	return cret(r)
}

//export nvmlDeviceGetMemoryInfo_v2
func nvmlDeviceGetMemoryInfo_v2(device C.nvmlDevice_t, memory *C.nvmlMemory_v2_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetMemoryInfo_v2", &ret)
	d, r := device_("nvmlDeviceGetMemoryInfo_v2", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if memory == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	if memory.version != memoryV2 {
		return cret(nvml.ERROR_ARGUMENT_VERSION_MISMATCH)
	}
	m, r := d.GetMemoryInfo()
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(memory), nvml.Memory_v2{Version: uint32(memoryV2), Total: m.Total, Free: m.Free, Used: m.Used})
	}
	return cret(r)
}

//export nvmlDeviceGetPciInfo_v3
func nvmlDeviceGetPciInfo_v3(device C.nvmlDevice_t, pci *C.nvmlPciInfo_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetPciInfo_v3", &ret)
	d, r := device_("nvmlDeviceGetPciInfo_v3", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if pci == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	info, r := d.GetPciInfo()
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(pci), completePciInfo(info))
	}
	return cret(r)
}

// completePciInfo fills the fields NVML derives from the bus ID that the
// mock machines leave out: domain, bus, device and the legacy bus ID.
func completePciInfo(info nvml.PciInfo) nvml.PciInfo {
	id := cString(info.BusId[:])
	var domain, bus, dev, fn uint32
	if n, _ := sscanBusID(id, &domain, &bus, &dev, &fn); n == 4 {
		info.Domain, info.Bus, info.Device = domain, bus, dev
		if cString(info.BusIdLegacy[:]) == "" {
			legacy := formatLegacyBusID(domain, bus, dev, fn)
			for i := 0; i < len(legacy) && i < len(info.BusIdLegacy)-1; i++ {
				info.BusIdLegacy[i] = int8(legacy[i])
			}
		}
	}
	return info
}

//export nvmlDeviceGetTopologyCommonAncestor
func nvmlDeviceGetTopologyCommonAncestor(device1, device2 C.nvmlDevice_t, pathInfo *C.int) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetTopologyCommonAncestor", &ret)
	d1, r := device_("nvmlDeviceGetTopologyCommonAncestor", device1)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	d2, ok := object[nvml.Device](ptr(device2))
	if !ok || pathInfo == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	level, r := d1.GetTopologyCommonAncestor(d2)
	if r == nvml.SUCCESS {
		*pathInfo = C.int(level)
	}
	return cret(r)
}

//export nvmlDeviceGetNvLinkState
func nvmlDeviceGetNvLinkState(device C.nvmlDevice_t, link C.uint, isActive *C.int) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetNvLinkState", &ret)
	d, r := device_("nvmlDeviceGetNvLinkState", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if isActive == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	state, r := d.GetNvLinkState(int(link))
	if r == nvml.SUCCESS {
		*isActive = C.int(state)
	}
	return cret(r)
}

//export nvmlDeviceGetNvLinkRemotePciInfo_v2
func nvmlDeviceGetNvLinkRemotePciInfo_v2(device C.nvmlDevice_t, link C.uint, pci *C.nvmlPciInfo_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetNvLinkRemotePciInfo_v2", &ret)
	d, r := device_("nvmlDeviceGetNvLinkRemotePciInfo_v2", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if pci == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	info, r := d.GetNvLinkRemotePciInfo(int(link))
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(pci), completePciInfo(info))
	}
	return cret(r)
}

// device_ is deviceOf for a call that reads the GPU (fails when it is lost).
func device_(fn string, h C.nvmlDevice_t) (nvml.Device, nvml.Return) {
	return deviceOf(fn, ptr(h), false)
}

// normalizeBusID is the sysfs form of a bus ID ("0000:3b:00.0") of any
// form NVML accepts ("00000000:3B:00.0", "3b:00.0").
func normalizeBusID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	var domain, bus, dev, fn uint32
	if n, _ := sscanBusID(id, &domain, &bus, &dev, &fn); n == 4 {
		return formatBusID(domain, bus, dev, fn)
	}
	return id
}

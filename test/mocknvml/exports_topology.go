package main

/*
#include "mocknvml.h"
*/
import "C"

import (
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Topology queries of one device: NVLink fabric, module ID, addressing
// mode. They answer what the Go mock machine answers (pkg/mockmachine
// topology.go): a fabric and HMM on the Hopper and Blackwell machines,
// NOT_SUPPORTED on the A100 ones; module IDs everywhere.

// fabricHealthy is NVML_GPU_FABRIC_HEALTH_SUMMARY_HEALTHY: what the
// versioned query reports for a GPU whose registration completed without
// error (the mock has no degraded links).
const fabricHealthy = 1

//export nvmlDeviceGetGpuFabricInfo
func nvmlDeviceGetGpuFabricInfo(device C.nvmlDevice_t, info *C.nvmlGpuFabricInfo_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuFabricInfo", &ret)
	d, r := device_("nvmlDeviceGetGpuFabricInfo", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	//nolint:staticcheck // the mock machines implement the unversioned query
	f, r := d.GetGpuFabricInfo()
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(info), f)
	}
	return cret(r)
}

// nvmlDeviceGetGpuFabricInfoV fills a v2 or v3 struct (told apart by its
// version, as NVML does) from the unversioned answer.
//
//export nvmlDeviceGetGpuFabricInfoV
func nvmlDeviceGetGpuFabricInfoV(device C.nvmlDevice_t, info *C.nvmlGpuFabricInfoV_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetGpuFabricInfoV", &ret)
	d, r := device_("nvmlDeviceGetGpuFabricInfoV", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if info == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	version := info.version
	if version != gpuFabricInfoV2 && version != gpuFabricInfoV3 {
		return cret(nvml.ERROR_ARGUMENT_VERSION_MISMATCH)
	}
	//nolint:staticcheck // the mock machines implement the unversioned query
	f, r := d.GetGpuFabricInfo()
	if r != nvml.SUCCESS {
		return cret(r)
	}
	var summary uint8
	if f.State == nvml.GPU_FABRIC_STATE_COMPLETED && nvml.Return(f.Status) == nvml.SUCCESS {
		summary = fabricHealthy
	}
	if version == gpuFabricInfoV2 {
		put(unsafe.Pointer(info), nvml.GpuFabricInfo_v2{Version: uint32(version), ClusterUuid: f.ClusterUuid, Status: f.Status,
			CliqueId: f.CliqueId, State: f.State})
		return cret(nvml.SUCCESS)
	}
	put(unsafe.Pointer(info), nvml.GpuFabricInfo_v3{Version: uint32(version), ClusterUuid: f.ClusterUuid, Status: f.Status,
		CliqueId: f.CliqueId, State: f.State, HealthSummary: summary})
	return cret(nvml.SUCCESS)
}

//export nvmlDeviceGetModuleId
func nvmlDeviceGetModuleId(device C.nvmlDevice_t, moduleID *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetModuleId", &ret)
	return cret(deviceUint("nvmlDeviceGetModuleId", device, false, moduleID, nvml.Device.GetModuleId))
}

//export nvmlDeviceGetAddressingMode
func nvmlDeviceGetAddressingMode(device C.nvmlDevice_t, mode *C.nvmlDeviceAddressingMode_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetAddressingMode", &ret)
	d, r := device_("nvmlDeviceGetAddressingMode", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if mode == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	if mode.version != addressingModeV1 {
		return cret(nvml.ERROR_ARGUMENT_VERSION_MISMATCH)
	}
	m, r := d.GetAddressingMode()
	if r == nvml.SUCCESS {
		put(unsafe.Pointer(mode), nvml.DeviceAddressingMode{Version: uint32(addressingModeV1), Value: m.Value})
	}
	return cret(r)
}

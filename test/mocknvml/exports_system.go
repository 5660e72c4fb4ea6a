package main

/*
#include "mocknvml.h"
*/
import "C"

import (
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Initialization, error strings, system queries, device enumeration.

//export nvmlInit
func nvmlInit() (ret C.nvmlReturn_t) {
	defer guard("nvmlInit", &ret)
	return cret(initialize())
}

//export nvmlInit_v2
func nvmlInit_v2() (ret C.nvmlReturn_t) {
	defer guard("nvmlInit_v2", &ret)
	return cret(initialize())
}

//export nvmlInitWithFlags
func nvmlInitWithFlags(flags C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlInitWithFlags", &ret)
	return cret(initialize())
}

//export nvmlShutdown
func nvmlShutdown() (ret C.nvmlReturn_t) {
	defer guard("nvmlShutdown", &ret)
	return cret(shutdown())
}

// errorStrings are NVML's messages; the C strings are made once and never
// freed, as the caller keeps the pointer.
var errorStrings = map[nvml.Return]string{
	nvml.SUCCESS:                         "Success",
	nvml.ERROR_UNINITIALIZED:             "Uninitialized",
	nvml.ERROR_INVALID_ARGUMENT:          "Invalid Argument",
	nvml.ERROR_NOT_SUPPORTED:             "Not Supported",
	nvml.ERROR_NO_PERMISSION:             "Insufficient Permissions",
	nvml.ERROR_ALREADY_INITIALIZED:       "Already Initialized",
	nvml.ERROR_NOT_FOUND:                 "Not Found",
	nvml.ERROR_INSUFFICIENT_SIZE:         "Insufficient Size",
	nvml.ERROR_INSUFFICIENT_POWER:        "Insufficient External Power",
	nvml.ERROR_DRIVER_NOT_LOADED:         "Driver Not Loaded",
	nvml.ERROR_TIMEOUT:                   "Timeout",
	nvml.ERROR_IRQ_ISSUE:                 "Interrupt Request Issue",
	nvml.ERROR_LIBRARY_NOT_FOUND:         "NVML Shared Library Not Found",
	nvml.ERROR_FUNCTION_NOT_FOUND:        "Function Not Found",
	nvml.ERROR_CORRUPTED_INFOROM:         "Corrupted infoROM",
	nvml.ERROR_GPU_IS_LOST:               "GPU is lost",
	nvml.ERROR_RESET_REQUIRED:            "GPU requires restart",
	nvml.ERROR_OPERATING_SYSTEM:          "The operating system has blocked the request",
	nvml.ERROR_LIB_RM_VERSION_MISMATCH:   "RM has detected an NVML/RM version mismatch",
	nvml.ERROR_IN_USE:                    "In use by another client",
	nvml.ERROR_MEMORY:                    "Insufficient Memory",
	nvml.ERROR_NO_DATA:                   "No data",
	nvml.ERROR_VGPU_ECC_NOT_SUPPORTED:    "The requested vgpu operation is not available on target device, because ECC is enabled",
	nvml.ERROR_INSUFFICIENT_RESOURCES:    "Insufficient resources",
	nvml.ERROR_FREQ_NOT_SUPPORTED:        "Frequency not supported",
	nvml.ERROR_ARGUMENT_VERSION_MISMATCH: "Argument version mismatch",
	nvml.ERROR_DEPRECATED:                "Deprecated",
	nvml.ERROR_NOT_READY:                 "Not Ready",
	nvml.ERROR_GPU_NOT_FOUND:             "GPU Not Found",
	nvml.ERROR_INVALID_STATE:             "Invalid State",
	nvml.ERROR_RESET_TYPE_NOT_SUPPORTED:  "Reset Type Not Supported",
	nvml.ERROR_UNKNOWN:                   "Unknown Error",
}

var cErrorStrings sync.Map // nvml.Return -> *C.char

//export nvmlErrorString
func nvmlErrorString(result C.nvmlReturn_t) *C.char {
	r := nvml.Return(result)
	if s, ok := cErrorStrings.Load(r); ok {
		return s.(*C.char)
	}
	msg, ok := errorStrings[r]
	if !ok {
		msg = "Unknown Error"
	}
	s, _ := cErrorStrings.LoadOrStore(r, C.CString(msg))
	return s.(*C.char)
}

//export nvmlSystemGetDriverVersion
func nvmlSystemGetDriverVersion(version *C.char, length C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlSystemGetDriverVersion", &ret)
	if r := enter("nvmlSystemGetDriverVersion"); r != nvml.SUCCESS {
		return cret(r)
	}
	v, r := state.srv.SystemGetDriverVersion()
	if r != nvml.SUCCESS {
		return cret(r)
	}
	return cret(putString(version, length, v))
}

//export nvmlSystemGetNVMLVersion
func nvmlSystemGetNVMLVersion(version *C.char, length C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlSystemGetNVMLVersion", &ret)
	if r := enter("nvmlSystemGetNVMLVersion"); r != nvml.SUCCESS {
		return cret(r)
	}
	v, r := state.srv.SystemGetNVMLVersion()
	if r != nvml.SUCCESS {
		return cret(r)
	}
	return cret(putString(version, length, v))
}

func getCudaDriverVersion(fn string, out *C.int) nvml.Return {
	if r := enter(fn); r != nvml.SUCCESS {
		return r
	}
	if out == nil {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	v, r := state.srv.SystemGetCudaDriverVersion()
	if r == nvml.SUCCESS {
		*out = C.int(v)
	}
	return r
}

//export nvmlSystemGetCudaDriverVersion
func nvmlSystemGetCudaDriverVersion(cudaDriverVersion *C.int) (ret C.nvmlReturn_t) {
	defer guard("nvmlSystemGetCudaDriverVersion", &ret)
	return cret(getCudaDriverVersion("nvmlSystemGetCudaDriverVersion", cudaDriverVersion))
}

//export nvmlSystemGetCudaDriverVersion_v2
func nvmlSystemGetCudaDriverVersion_v2(cudaDriverVersion *C.int) (ret C.nvmlReturn_t) {
	defer guard("nvmlSystemGetCudaDriverVersion_v2", &ret)
	return cret(getCudaDriverVersion("nvmlSystemGetCudaDriverVersion_v2", cudaDriverVersion))
}

func getDeviceCount(fn string, out *C.uint) nvml.Return {
	if r := enter(fn); r != nvml.SUCCESS {
		return r
	}
	if out == nil {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	n, r := state.srv.DeviceGetCount()
	if r == nvml.SUCCESS {
		*out = C.uint(n)
	}
	return r
}

//export nvmlDeviceGetCount
func nvmlDeviceGetCount(deviceCount *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetCount", &ret)
	return cret(getDeviceCount("nvmlDeviceGetCount", deviceCount))
}

//export nvmlDeviceGetCount_v2
func nvmlDeviceGetCount_v2(deviceCount *C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetCount_v2", &ret)
	return cret(getDeviceCount("nvmlDeviceGetCount_v2", deviceCount))
}

// putDevice answers a handle lookup: d's handle into out, unless d's GPU
// is lost.
func putDevice(d nvml.Device, r nvml.Return, out *C.nvmlDevice_t) nvml.Return {
	if r != nvml.SUCCESS {
		return r
	}
	if lost(d) {
		return nvml.ERROR_GPU_IS_LOST
	}
	*out = C.nvmlDevice_t(handleOf(d))
	return nvml.SUCCESS
}

func handleByIndex(fn string, index C.uint, out *C.nvmlDevice_t) nvml.Return {
	if r := enter(fn); r != nvml.SUCCESS {
		return r
	}
	if out == nil {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	d, r := state.srv.DeviceGetHandleByIndex(int(index))
	return putDevice(d, r, out)
}

//export nvmlDeviceGetHandleByIndex
func nvmlDeviceGetHandleByIndex(index C.uint, device *C.nvmlDevice_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetHandleByIndex", &ret)
	return cret(handleByIndex("nvmlDeviceGetHandleByIndex", index, device))
}

//export nvmlDeviceGetHandleByIndex_v2
func nvmlDeviceGetHandleByIndex_v2(index C.uint, device *C.nvmlDevice_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetHandleByIndex_v2", &ret)
	return cret(handleByIndex("nvmlDeviceGetHandleByIndex_v2", index, device))
}

//export nvmlDeviceGetHandleByUUID
func nvmlDeviceGetHandleByUUID(uuid *C.char, device *C.nvmlDevice_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetHandleByUUID", &ret)
	if r := enter("nvmlDeviceGetHandleByUUID"); r != nvml.SUCCESS {
		return cret(r)
	}
	if uuid == nil || device == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	id := C.GoString(uuid)
	if d, r := state.srv.DeviceGetHandleByUUID(id); r == nvml.SUCCESS {
		return cret(putDevice(d, r, device))
	}
	// NVML also finds MIG devices by their UUID.
	for _, h := range state.srv.Devices {
		for _, m := range migDevices(h) {
			if u, r := m.GetUUID(); r == nvml.SUCCESS && u == id {
				*device = C.nvmlDevice_t(migHandle(h, m))
				if lost(m) {
					return cret(nvml.ERROR_GPU_IS_LOST)
				}
				return cret(nvml.SUCCESS)
			}
		}
	}
	return cret(nvml.ERROR_NOT_FOUND)
}

// migDevices lists the MIG devices of the GPU h (none when it is not in
// MIG mode).
func migDevices(h nvml.Device) []nvml.Device {
	if current, _, r := h.GetMigMode(); r != nvml.SUCCESS || current != nvml.DEVICE_MIG_ENABLE {
		return nil
	}
	n, r := h.GetMaxMigDeviceCount()
	if r != nvml.SUCCESS {
		return nil
	}
	var out []nvml.Device
	for i := 0; i < n; i++ {
		if m, r := h.GetMigDeviceHandleByIndex(i); r == nvml.SUCCESS {
			out = append(out, m)
		}
	}
	return out
}

func handleByPciBusID(fn string, busID *C.char, out *C.nvmlDevice_t) nvml.Return {
	if r := enter(fn); r != nvml.SUCCESS {
		return r
	}
	if busID == nil || out == nil {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	want := normalizeBusID(C.GoString(busID))
	for _, h := range state.srv.Devices {
		pci, r := h.GetPciInfo()
		if r != nvml.SUCCESS {
			continue
		}
		if normalizeBusID(cString(pci.BusId[:])) == want {
			return putDevice(h, nvml.SUCCESS, out)
		}
	}
	return nvml.ERROR_NOT_FOUND
}

//export nvmlDeviceGetHandleByPciBusId
func nvmlDeviceGetHandleByPciBusId(pciBusId *C.char, device *C.nvmlDevice_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetHandleByPciBusId", &ret)
	return cret(handleByPciBusID("nvmlDeviceGetHandleByPciBusId", pciBusId, device))
}

//export nvmlDeviceGetHandleByPciBusId_v2
func nvmlDeviceGetHandleByPciBusId_v2(pciBusId *C.char, device *C.nvmlDevice_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetHandleByPciBusId_v2", &ret)
	return cret(handleByPciBusID("nvmlDeviceGetHandleByPciBusId_v2", pciBusId, device))
}

// cString is the Go string of a NUL-terminated C char array.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

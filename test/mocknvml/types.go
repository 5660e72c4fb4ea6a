package main

/*
#include "mocknvml.h"
*/
import "C"

import (
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Compile-time checks that the structs of mocknvml.h have the sizes of
// go-nvml's Go types, which cgo generated from NVML's own header: each
// pair of array lengths underflows (a compile error) unless they are equal.
var (
	_ [unsafe.Sizeof(C.nvmlPciInfo_t{}) - unsafe.Sizeof(nvml.PciInfo{})]byte
	_ [unsafe.Sizeof(nvml.PciInfo{}) - unsafe.Sizeof(C.nvmlPciInfo_t{})]byte
	_ [unsafe.Sizeof(C.nvmlMemory_t{}) - unsafe.Sizeof(nvml.Memory{})]byte
	_ [unsafe.Sizeof(nvml.Memory{}) - unsafe.Sizeof(C.nvmlMemory_t{})]byte
	_ [unsafe.Sizeof(C.nvmlMemory_v2_t{}) - unsafe.Sizeof(nvml.Memory_v2{})]byte
	_ [unsafe.Sizeof(nvml.Memory_v2{}) - unsafe.Sizeof(C.nvmlMemory_v2_t{})]byte
	_ [unsafe.Sizeof(C.nvmlGpuInstancePlacement_t{}) - unsafe.Sizeof(nvml.GpuInstancePlacement{})]byte
	_ [unsafe.Sizeof(nvml.GpuInstancePlacement{}) - unsafe.Sizeof(C.nvmlGpuInstancePlacement_t{})]byte
	_ [unsafe.Sizeof(C.nvmlComputeInstancePlacement_t{}) - unsafe.Sizeof(nvml.ComputeInstancePlacement{})]byte
	_ [unsafe.Sizeof(nvml.ComputeInstancePlacement{}) - unsafe.Sizeof(C.nvmlComputeInstancePlacement_t{})]byte
	_ [unsafe.Sizeof(C.nvmlGpuInstanceProfileInfo_t{}) - unsafe.Sizeof(nvml.GpuInstanceProfileInfo{})]byte
	_ [unsafe.Sizeof(nvml.GpuInstanceProfileInfo{}) - unsafe.Sizeof(C.nvmlGpuInstanceProfileInfo_t{})]byte
	_ [unsafe.Sizeof(C.nvmlGpuInstanceProfileInfo_v2_t{}) - unsafe.Sizeof(nvml.GpuInstanceProfileInfo_v2{})]byte
	_ [unsafe.Sizeof(nvml.GpuInstanceProfileInfo_v2{}) - unsafe.Sizeof(C.nvmlGpuInstanceProfileInfo_v2_t{})]byte
	_ [unsafe.Sizeof(C.nvmlComputeInstanceProfileInfo_t{}) - unsafe.Sizeof(nvml.ComputeInstanceProfileInfo{})]byte
	_ [unsafe.Sizeof(nvml.ComputeInstanceProfileInfo{}) - unsafe.Sizeof(C.nvmlComputeInstanceProfileInfo_t{})]byte
	_ [unsafe.Sizeof(C.nvmlComputeInstanceProfileInfo_v2_t{}) - unsafe.Sizeof(nvml.ComputeInstanceProfileInfo_v2{})]byte
	_ [unsafe.Sizeof(nvml.ComputeInstanceProfileInfo_v2{}) - unsafe.Sizeof(C.nvmlComputeInstanceProfileInfo_v2_t{})]byte
	_ [unsafe.Sizeof(C.nvmlGpuFabricInfo_t{}) - unsafe.Sizeof(nvml.GpuFabricInfo{})]byte
	_ [unsafe.Sizeof(nvml.GpuFabricInfo{}) - unsafe.Sizeof(C.nvmlGpuFabricInfo_t{})]byte
	_ [unsafe.Sizeof(C.nvmlGpuFabricInfo_v2_t{}) - unsafe.Sizeof(nvml.GpuFabricInfo_v2{})]byte
	_ [unsafe.Sizeof(nvml.GpuFabricInfo_v2{}) - unsafe.Sizeof(C.nvmlGpuFabricInfo_v2_t{})]byte
	_ [unsafe.Sizeof(C.nvmlGpuFabricInfo_v3_t{}) - unsafe.Sizeof(nvml.GpuFabricInfo_v3{})]byte
	_ [unsafe.Sizeof(nvml.GpuFabricInfo_v3{}) - unsafe.Sizeof(C.nvmlGpuFabricInfo_v3_t{})]byte
	_ [unsafe.Sizeof(C.nvmlDeviceAddressingMode_t{}) - unsafe.Sizeof(nvml.DeviceAddressingMode{})]byte
	_ [unsafe.Sizeof(nvml.DeviceAddressingMode{}) - unsafe.Sizeof(C.nvmlDeviceAddressingMode_t{})]byte
	// The structs with handles: a handle is one pointer, as go-nvml's
	// wrapper structs of one pointer are.
	_ [unsafe.Sizeof(C.nvmlEventData_t{}) - 8 - 2*8 - 2*4]byte
	_ [8 + 2*8 + 2*4 - unsafe.Sizeof(C.nvmlEventData_t{})]byte
	_ [unsafe.Sizeof(C.nvmlGpuInstanceInfo_t{}) - 8 - 2*4 - unsafe.Sizeof(nvml.GpuInstancePlacement{})]byte
	_ [8 + 2*4 + unsafe.Sizeof(nvml.GpuInstancePlacement{}) - unsafe.Sizeof(C.nvmlGpuInstanceInfo_t{})]byte
	_ [unsafe.Sizeof(C.nvmlComputeInstanceInfo_t{}) - 2*8 - 2*4 - unsafe.Sizeof(nvml.ComputeInstancePlacement{})]byte
	_ [2*8 + 2*4 + unsafe.Sizeof(nvml.ComputeInstancePlacement{}) - unsafe.Sizeof(C.nvmlComputeInstanceInfo_t{})]byte
)

// Struct versions as NVML's NVML_STRUCT_VERSION macro makes them: the size
// of the struct with the version in the top byte. The v2 and v3 profile
// structs of a kind have the same size on 64-bit machines.
var (
	gpuInstanceProfileInfoV2     = structVersion(unsafe.Sizeof(nvml.GpuInstanceProfileInfo_v2{}), 2)
	gpuInstanceProfileInfoV3     = structVersion(unsafe.Sizeof(nvml.GpuInstanceProfileInfo_v3{}), 3)
	computeInstanceProfileInfoV2 = structVersion(unsafe.Sizeof(nvml.ComputeInstanceProfileInfo_v2{}), 2)
	computeInstanceProfileInfoV3 = structVersion(unsafe.Sizeof(nvml.ComputeInstanceProfileInfo_v3{}), 3)
	memoryV2                     = structVersion(unsafe.Sizeof(nvml.Memory_v2{}), 2)
	gpuFabricInfoV2              = structVersion(unsafe.Sizeof(nvml.GpuFabricInfo_v2{}), 2)
	gpuFabricInfoV3              = structVersion(unsafe.Sizeof(nvml.GpuFabricInfo_v3{}), 3)
	addressingModeV1             = structVersion(unsafe.Sizeof(nvml.DeviceAddressingMode{}), 1)
)

func structVersion(size uintptr, version uint32) C.uint {
	return C.uint(uint32(size) | version<<24)
}

func cret(r nvml.Return) C.nvmlReturn_t { return C.nvmlReturn_t(r) }

// put writes v to the C memory at p, whose C type has the layout of T.
func put[T any](p unsafe.Pointer, v T) {
	*(*T)(p) = v
}

// putString writes s with its terminating NUL into the C buffer buf of
// length bytes; a short buffer is ERROR_INSUFFICIENT_SIZE, as in NVML.
func putString(buf *C.char, length C.uint, s string) nvml.Return {
	if buf == nil {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	if uint64(len(s))+1 > uint64(length) {
		return nvml.ERROR_INSUFFICIENT_SIZE
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(length))
	copy(b, s)
	b[len(s)] = 0
	return nvml.SUCCESS
}

// name96 is s as a C char array of a versioned profile struct.
func name96(s string) [96]int8 {
	var out [96]int8
	for i := 0; i < len(s) && i < len(out)-1; i++ {
		out[i] = int8(s[i])
	}
	return out
}

package main

/*
#include "mocknvml.h"
*/
import "C"

import (
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// The MIG lifecycle: switching MIG mode, creating and destroying GPU and
// compute instances. The mock machine decides what each call does and
// answers (MIG mode required, placements free, instances in use...); the
// library checks the C arguments, hands out the handles of what is
// created, and retires those of what is gone (instances.go). The calls are
// serialized among themselves (state.lifecycle).

// fullGPU starts a lifecycle call on a device handle, which must be a full
// GPU of the machine, not a MIG device (ERROR_INVALID_ARGUMENT), nor lost.
func fullGPU(fn string, h C.nvmlDevice_t) (*server.Device, nvml.Return) {
	d, r := device_(fn, h)
	if r != nvml.SUCCESS {
		return nil, r
	}
	g, ok := d.(*server.Device)
	if !ok {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	return g, nvml.SUCCESS
}

//export nvmlDeviceSetMigMode
func nvmlDeviceSetMigMode(device C.nvmlDevice_t, mode C.uint, activationStatus *C.nvmlReturn_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceSetMigMode", &ret)
	state.lifecycle.Lock()
	defer state.lifecycle.Unlock()
	g, r := fullGPU("nvmlDeviceSetMigMode", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if activationStatus == nil || (mode != nvml.DEVICE_MIG_DISABLE && mode != nvml.DEVICE_MIG_ENABLE) {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	activation, r := g.SetMigMode(int(mode))
	*activationStatus = cret(activation)
	if r == nvml.SUCCESS {
		sweep(g)
	}
	return cret(r)
}

// createGpuInstance is the two GPU instance creations: at the placement,
// or where the mock machine puts it when placement is nil.
func createGpuInstance(fn string, device C.nvmlDevice_t, profileId C.uint, placement *C.nvmlGpuInstancePlacement_t, withPlacement bool, gpuInstance *C.nvmlGpuInstance_t) nvml.Return {
	state.lifecycle.Lock()
	defer state.lifecycle.Unlock()
	g, r := fullGPU(fn, device)
	if r != nvml.SUCCESS {
		return r
	}
	if gpuInstance == nil || (withPlacement && placement == nil) {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	p, r := giProfileByID(g, uint32(profileId))
	if r != nvml.SUCCESS {
		return r
	}
	var gi nvml.GpuInstance
	if withPlacement {
		pl := nvml.GpuInstancePlacement{Start: uint32(placement.start), Size: uint32(placement.size)}
		gi, r = g.CreateGpuInstanceWithPlacement(&p, &pl)
	} else {
		gi, r = g.CreateGpuInstance(&p)
	}
	if r != nvml.SUCCESS {
		return r
	}
	if gi == nil {
		return nvml.ERROR_UNKNOWN
	}
	*gpuInstance = C.nvmlGpuInstance_t(newGIHandle(gi))
	return nvml.SUCCESS
}

//export nvmlDeviceCreateGpuInstance
func nvmlDeviceCreateGpuInstance(device C.nvmlDevice_t, profileId C.uint, gpuInstance *C.nvmlGpuInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceCreateGpuInstance", &ret)
	return cret(createGpuInstance("nvmlDeviceCreateGpuInstance", device, profileId, nil, false, gpuInstance))
}

//export nvmlDeviceCreateGpuInstanceWithPlacement
func nvmlDeviceCreateGpuInstanceWithPlacement(device C.nvmlDevice_t, profileId C.uint, placement *C.nvmlGpuInstancePlacement_t, gpuInstance *C.nvmlGpuInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceCreateGpuInstanceWithPlacement", &ret)
	return cret(createGpuInstance("nvmlDeviceCreateGpuInstanceWithPlacement", device, profileId, placement, true, gpuInstance))
}

//export nvmlGpuInstanceDestroy
func nvmlGpuInstanceDestroy(gpuInstance_ C.nvmlGpuInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceDestroy", &ret)
	state.lifecycle.Lock()
	defer state.lifecycle.Unlock()
	gi, info, r := gpuInstance("nvmlGpuInstanceDestroy", gpuInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if r := gi.Destroy(); r != nvml.SUCCESS {
		return cret(r)
	}
	retire(unsafe.Pointer(gpuInstance_))
	sweep(serverGPU(info.Device))
	return cret(nvml.SUCCESS)
}

// createComputeInstance is the two compute instance creations: at the
// placement, or where the mock machine puts it when placement is nil.
func createComputeInstance(fn string, gpuInstance_ C.nvmlGpuInstance_t, profileId C.uint, placement *C.nvmlComputeInstancePlacement_t, withPlacement bool, computeInstance *C.nvmlComputeInstance_t) nvml.Return {
	state.lifecycle.Lock()
	defer state.lifecycle.Unlock()
	gi, _, r := gpuInstance(fn, gpuInstance_)
	if r != nvml.SUCCESS {
		return r
	}
	if computeInstance == nil || (withPlacement && placement == nil) {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	p, r := ciProfileByID(gi, uint32(profileId))
	if r != nvml.SUCCESS {
		return r
	}
	var ci nvml.ComputeInstance
	if withPlacement {
		pl := nvml.ComputeInstancePlacement{Start: uint32(placement.start), Size: uint32(placement.size)}
		ci, r = gi.CreateComputeInstanceWithPlacement(&p, &pl)
	} else {
		ci, r = gi.CreateComputeInstance(&p)
	}
	if r != nvml.SUCCESS {
		return r
	}
	if ci == nil {
		return nvml.ERROR_UNKNOWN
	}
	*computeInstance = C.nvmlComputeInstance_t(newCIHandle(ci))
	return nvml.SUCCESS
}

//export nvmlGpuInstanceCreateComputeInstance
func nvmlGpuInstanceCreateComputeInstance(gpuInstance_ C.nvmlGpuInstance_t, profileId C.uint, computeInstance *C.nvmlComputeInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceCreateComputeInstance", &ret)
	return cret(createComputeInstance("nvmlGpuInstanceCreateComputeInstance", gpuInstance_, profileId, nil, false, computeInstance))
}

//export nvmlGpuInstanceCreateComputeInstanceWithPlacement
func nvmlGpuInstanceCreateComputeInstanceWithPlacement(gpuInstance_ C.nvmlGpuInstance_t, profileId C.uint, placement *C.nvmlComputeInstancePlacement_t, computeInstance *C.nvmlComputeInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlGpuInstanceCreateComputeInstanceWithPlacement", &ret)
	return cret(createComputeInstance("nvmlGpuInstanceCreateComputeInstanceWithPlacement", gpuInstance_, profileId, placement, true, computeInstance))
}

//export nvmlComputeInstanceDestroy
func nvmlComputeInstanceDestroy(computeInstance_ C.nvmlComputeInstance_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlComputeInstanceDestroy", &ret)
	state.lifecycle.Lock()
	defer state.lifecycle.Unlock()
	ci, info, r := computeInstanceOf("nvmlComputeInstanceDestroy", computeInstance_)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if r := ci.Destroy(); r != nvml.SUCCESS {
		return cret(r)
	}
	retire(unsafe.Pointer(computeInstance_))
	g := serverGPU(info.Device)
	if g == nil && info.GpuInstance != nil {
		if giInfo, r := info.GpuInstance.GetInfo(); r == nvml.SUCCESS {
			g = serverGPU(giInfo.Device)
		}
	}
	sweep(g)
	return cret(nvml.SUCCESS)
}

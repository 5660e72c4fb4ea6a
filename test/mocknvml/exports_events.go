package main

/*
#include "mocknvml.h"
*/
import "C"

import (
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Events: the event sets of the mock machine's mockmachine.Events, which
// deliver what is injected (the events file) and ERROR_GPU_IS_LOST for a
// GPU that is lost.

//export nvmlEventSetCreate
func nvmlEventSetCreate(set *C.nvmlEventSet_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlEventSetCreate", &ret)
	if r := enter("nvmlEventSetCreate"); r != nvml.SUCCESS {
		return cret(r)
	}
	if set == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	s, r := state.srv.EventSetCreate()
	if r == nvml.SUCCESS {
		*set = C.nvmlEventSet_t(handleOf(s))
	}
	return cret(r)
}

//export nvmlDeviceGetSupportedEventTypes
func nvmlDeviceGetSupportedEventTypes(device C.nvmlDevice_t, eventTypes *C.ulonglong) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceGetSupportedEventTypes", &ret)
	d, r := device_("nvmlDeviceGetSupportedEventTypes", device)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	if eventTypes == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	t, r := d.GetSupportedEventTypes()
	if r == nvml.SUCCESS {
		*eventTypes = C.ulonglong(t)
	}
	return cret(r)
}

//export nvmlDeviceRegisterEvents
func nvmlDeviceRegisterEvents(device C.nvmlDevice_t, eventTypes C.ulonglong, set C.nvmlEventSet_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlDeviceRegisterEvents", &ret)
	// mockmachine.Events answers ERROR_GPU_IS_LOST for a lost GPU itself.
	d, r := deviceOf("nvmlDeviceRegisterEvents", ptr(device), true)
	if r != nvml.SUCCESS {
		return cret(r)
	}
	s, ok := object[nvml.EventSet](unsafe.Pointer(set))
	if !ok {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	return cret(d.RegisterEvents(uint64(eventTypes), s))
}

//export nvmlEventSetWait_v2
func nvmlEventSetWait_v2(set C.nvmlEventSet_t, data *C.nvmlEventData_t, timeoutms C.uint) (ret C.nvmlReturn_t) {
	defer guard("nvmlEventSetWait_v2", &ret)
	if r := enter("nvmlEventSetWait_v2"); r != nvml.SUCCESS {
		return cret(r)
	}
	s, ok := object[nvml.EventSet](unsafe.Pointer(set))
	if !ok || data == nil {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	ev, r := s.Wait(uint32(timeoutms))
	if r != nvml.SUCCESS {
		return cret(r)
	}
	*data = C.nvmlEventData_t{
		device:            C.nvmlDevice_t(handleOf(ev.Device)),
		eventType:         C.ulonglong(ev.EventType),
		eventData:         C.ulonglong(ev.EventData),
		gpuInstanceId:     C.uint(ev.GpuInstanceId),
		computeInstanceId: C.uint(ev.ComputeInstanceId),
	}
	return cret(nvml.SUCCESS)
}

//export nvmlEventSetFree
func nvmlEventSetFree(set C.nvmlEventSet_t) (ret C.nvmlReturn_t) {
	defer guard("nvmlEventSetFree", &ret)
	if r := enter("nvmlEventSetFree"); r != nvml.SUCCESS {
		return cret(r)
	}
	s, ok := object[nvml.EventSet](unsafe.Pointer(set))
	if !ok {
		return cret(nvml.ERROR_INVALID_ARGUMENT)
	}
	r := s.Free()
	release(unsafe.Pointer(set))
	return cret(r)
}

package main

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// The handles of the MIG objects that the library's callers create and
// destroy: GPU instances, compute instances and the MIG devices they make.
//
// Each such handle stands for an instance of one GPU, by ID (instanceKey),
// not for a Go object: looking the same instance up twice gives the same
// handle. Once the instance is gone (destroyed through the library, or no
// longer listed by the mock machine after a destroy or a MIG mode change:
// sweep), its handle is retired: every call on it is
// ERROR_INVALID_ARGUMENT, and an instance created later with the same IDs
// gets a new handle.

type instanceKind int

const (
	gpuInstanceKind instanceKind = iota
	computeInstanceKind
	migDeviceKind
)

// instanceKey identifies a MIG object of a GPU: the GPU instance gi, or the
// compute instance (or MIG device) ci of the GPU instance gi.
type instanceKey struct {
	kind instanceKind
	gpu  *server.Device
	gi   int
	ci   int
}

// serverGPU is d as the mock machine's full GPU, or nil.
func serverGPU(d nvml.Device) *server.Device {
	if d == nil {
		return nil
	}
	return gpuOf(d)
}

// gpuInstanceKey is the identity of gi: its instanceKey, or gi itself when
// the mock does not tell gi's GPU and ID.
func gpuInstanceKey(gi nvml.GpuInstance) any {
	info, r := gi.GetInfo()
	if g := serverGPU(info.Device); r == nvml.SUCCESS && g != nil {
		return instanceKey{kind: gpuInstanceKind, gpu: g, gi: int(info.Id)}
	}
	return gi
}

// computeInstanceKey is the identity of ci: its instanceKey, or ci itself
// when the mock does not tell ci's GPU, GPU instance and ID.
func computeInstanceKey(ci nvml.ComputeInstance) any {
	info, r := ci.GetInfo()
	if r != nvml.SUCCESS || info.GpuInstance == nil {
		return ci
	}
	giInfo, r := info.GpuInstance.GetInfo()
	if r != nvml.SUCCESS {
		return ci
	}
	g := serverGPU(info.Device)
	if g == nil {
		g = serverGPU(giInfo.Device)
	}
	if g == nil {
		return ci
	}
	return instanceKey{kind: computeInstanceKind, gpu: g, gi: int(giInfo.Id), ci: int(info.Id)}
}

// giHandle returns the C handle of the GPU instance gi.
func giHandle(gi nvml.GpuInstance) unsafe.Pointer {
	if gi == nil {
		return nil
	}
	key := gpuInstanceKey(gi)
	state.mu.Lock()
	defer state.mu.Unlock()
	return handleOfKeyLocked(key, gi)
}

// ciHandle returns the C handle of the compute instance ci.
func ciHandle(ci nvml.ComputeInstance) unsafe.Pointer {
	if ci == nil {
		return nil
	}
	key := computeInstanceKey(ci)
	state.mu.Lock()
	defer state.mu.Unlock()
	return handleOfKeyLocked(key, ci)
}

// newGIHandle is giHandle for a GPU instance just created: a handle still
// held for its IDs (made by a lookup that raced with the destruction of an
// earlier instance with the same IDs) is retired first, so that a new
// instance always gets a new handle.
func newGIHandle(gi nvml.GpuInstance) unsafe.Pointer {
	key := gpuInstanceKey(gi)
	state.mu.Lock()
	defer state.mu.Unlock()
	retireKeyLocked(key)
	return handleOfKeyLocked(key, gi)
}

// newCIHandle is newGIHandle for a compute instance just created, and for
// the MIG device it makes.
func newCIHandle(ci nvml.ComputeInstance) unsafe.Pointer {
	key := computeInstanceKey(ci)
	state.mu.Lock()
	defer state.mu.Unlock()
	retireKeyLocked(key)
	if k, ok := key.(instanceKey); ok {
		k.kind = migDeviceKind
		retireKeyLocked(k)
	}
	return handleOfKeyLocked(key, ci)
}

// retireKeyLocked retires the live handle of the identity key, if any;
// state.mu is held.
func retireKeyLocked(key any) {
	if h, ok := state.objects[key]; ok {
		retireLocked(h)
	}
}

// retireLocked retires the handle h; state.mu is held.
func retireLocked(h unsafe.Pointer) {
	obj, ok := state.handles[h]
	if !ok {
		return
	}
	if _, gone := obj.(retired); gone {
		return
	}
	if d, ok := obj.(nvml.Device); ok {
		delete(state.migParent, d)
	}
	delete(state.objects, state.keys[h])
	delete(state.keys, h)
	state.handles[h] = retired{}
}

// retire retires the handle h of an object just destroyed.
func retire(h unsafe.Pointer) {
	state.mu.Lock()
	defer state.mu.Unlock()
	retireLocked(h)
}

// sweep retires the handles of the MIG objects of g that the mock machine
// no longer lists: its GPU instances, their compute instances, and its MIG
// devices (none unless g is in MIG mode). Called with state.lifecycle held
// after each call that may make MIG objects disappear, so that no object
// is created while it runs. If the mock fails to list g's objects, nothing
// is retired.
func sweep(g *server.Device) {
	if g == nil {
		return
	}
	live, ok := liveInstances(g)
	if !ok {
		return
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	for h, key := range state.keys {
		if k, ok := key.(instanceKey); ok && k.gpu == g && !live[k] {
			retireLocked(h)
		}
	}
}

// liveInstances lists the MIG objects of g; false when the mock panicked.
func liveInstances(g *server.Device) (live map[instanceKey]bool, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			if !strings.Contains(fmt.Sprint(r), "method is nil") {
				fmt.Fprintf(os.Stderr, "mocknvml: listing the MIG objects of a GPU panicked: %v\n", r)
			}
			live, ok = nil, false
		}
	}()
	live = map[instanceKey]bool{}
	for id := 0; id < nvml.GPU_INSTANCE_PROFILE_COUNT; id++ {
		p, r := g.GetGpuInstanceProfileInfo(id)
		if r != nvml.SUCCESS {
			continue
		}
		gis, r := g.GetGpuInstances(&p)
		if r != nvml.SUCCESS {
			continue
		}
		for _, gi := range gis {
			info, r := gi.GetInfo()
			if r != nvml.SUCCESS {
				continue
			}
			live[instanceKey{kind: gpuInstanceKind, gpu: g, gi: int(info.Id)}] = true
			for cid := 0; cid < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; cid++ {
				cp, r := computeInstanceProfileAt(gi, cid)
				if r != nvml.SUCCESS {
					continue
				}
				cis, r := gi.GetComputeInstances(&cp)
				if r != nvml.SUCCESS {
					continue
				}
				for _, ci := range cis {
					if ciInfo, r := ci.GetInfo(); r == nvml.SUCCESS {
						live[instanceKey{kind: computeInstanceKind, gpu: g, gi: int(info.Id), ci: int(ciInfo.Id)}] = true
					}
				}
			}
		}
	}
	for _, m := range migDevices(g) {
		gi, r1 := m.GetGpuInstanceId()
		ci, r2 := m.GetComputeInstanceId()
		if r1 == nvml.SUCCESS && r2 == nvml.SUCCESS {
			live[instanceKey{kind: migDeviceKind, gpu: g, gi: gi, ci: ci}] = true
		}
	}
	return live, true
}

// implemented calls f, a call of the mock machine, and tells whether the
// mock implements it (go-nvml's mocks panic "method is nil" otherwise);
// any other panic goes on.
func implemented[T any](f func() (T, nvml.Return)) (v T, r nvml.Return, ok bool) {
	defer func() {
		if x := recover(); x != nil {
			if !strings.Contains(fmt.Sprint(x), "method is nil") {
				panic(x)
			}
			ok = false
		}
	}()
	v, r = f()
	return v, r, true
}

package main

/*
#include <stdlib.h>
#include "mocknvml.h"
*/
import "C"

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// state is the library's one machine and the handles it gave out.
var state struct {
	mu       sync.Mutex
	inits    int // nvmlInit calls not yet matched by nvmlShutdown
	settings settings
	srv      *server.Server // nil until the first successful nvmlInit
	events   *mockmachine.Events

	// handles maps the C handles given out (distinct C allocations) to
	// their objects (nvml.Device, nvml.GpuInstance, nvml.ComputeInstance,
	// nvml.EventSet), or to retired{} once the object is gone; objects
	// maps the identity of each live object (the object itself, or the
	// instanceKey of a GPU instance, compute instance or MIG device) to
	// its handle, and keys maps the live handles back to that identity.
	handles map[unsafe.Pointer]any
	objects map[any]unsafe.Pointer
	keys    map[unsafe.Pointer]any
	// migParent is the GPU of each MIG device handle given out.
	migParent map[nvml.Device]*server.Device
	// lifecycle serializes the calls that create or destroy MIG objects or
	// switch MIG mode, and the sweep of handles that follows each.
	lifecycle sync.Mutex
}

// retired stands, in state.handles, for an object that was destroyed: its
// handle is never freed, so that the C address is never given to another
// object, and every call on it is ERROR_INVALID_ARGUMENT.
type retired struct{}

// quiet turns logf off (log: off).
var quiet atomic.Bool

func logf(format string, args ...any) {
	if quiet.Load() {
		return
	}
	fmt.Fprintf(os.Stderr, "mocknvml: "+format+"\n", args...)
}

// initialize is nvmlInit: the machine is built at the first success.
func initialize() nvml.Return {
	state.mu.Lock()
	defer state.mu.Unlock()
	s := state.settings
	if state.srv == nil {
		var err error
		if s, err = loadSettings(); err != nil {
			fmt.Fprintf(os.Stderr, "mocknvml: nvmlInit: %v\n", err)
			return nvml.ERROR_UNKNOWN
		}
	}
	ret := s.initError
	if r, set := liveInitError.get(); set {
		ret = r
	}
	if ret != nvml.SUCCESS {
		return ret
	}
	if state.srv == nil {
		if err := buildMachine(s); err != nil {
			fmt.Fprintf(os.Stderr, "mocknvml: nvmlInit: %v\n", err)
			return nvml.ERROR_UNKNOWN
		}
	}
	state.inits++
	return nvml.SUCCESS
}

// buildMachine creates the mock machine of s; state.mu is held.
func buildMachine(s settings) error {
	var opts []mockmachine.Option
	if s.migState != "" {
		opts = append(opts, mockmachine.WithMIGState(s.migState))
	}
	srv, err := mockmachine.New(s.machine, s.seed, opts...)
	if err != nil {
		return err
	}
	ev, err := mockmachine.InstallEvents(srv)
	if err != nil {
		return err
	}
	for _, gpu := range s.lost {
		if err := ev.SetLost(gpu, true); err != nil {
			return fmt.Errorf("lost GPU: %w", err)
		}
	}
	state.settings, state.srv, state.events = s, srv, ev
	quiet.Store(s.quiet)
	state.handles = map[unsafe.Pointer]any{}
	state.objects = map[any]unsafe.Pointer{}
	state.keys = map[unsafe.Pointer]any{}
	state.migParent = map[nvml.Device]*server.Device{}
	logf("mock machine %s (seed %q), %d GPUs", s.machine, s.seed, len(srv.Devices))
	if s.eventsFile != "" {
		logger := klog.Background()
		if s.quiet {
			logger = logr.Discard()
		}
		go ev.WatchFile(klog.NewContext(context.Background(), logger), s.eventsFile, s.eventsPoll)
	}
	return nil
}

func shutdown() nvml.Return {
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.inits == 0 {
		return nvml.ERROR_UNINITIALIZED
	}
	state.inits--
	return nvml.SUCCESS
}

// enter starts every call but nvmlInit, nvmlShutdown and nvmlErrorString:
// it applies the call's delay and fails when NVML is not initialized.
func enter(fn string) nvml.Return {
	if d := delayOf(fn); d > 0 {
		time.Sleep(d)
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.inits == 0 {
		return nvml.ERROR_UNINITIALIZED
	}
	return nvml.SUCCESS
}

func delayOf(fn string) time.Duration {
	if d, set := liveDelays.get(); set {
		return d.of(fn)
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	return state.settings.delays.of(fn)
}

// handleOf returns the C handle of obj, making one the first time.
func handleOf(obj any) unsafe.Pointer {
	if obj == nil {
		return nil
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	return handleOfLocked(obj)
}

func handleOfLocked(obj any) unsafe.Pointer {
	return handleOfKeyLocked(obj, obj)
}

// handleOfKeyLocked returns the live handle of the identity key, now
// standing for obj (a later lookup of the same instance may return another
// Go object for it), making one the first time.
func handleOfKeyLocked(key, obj any) unsafe.Pointer {
	if h, ok := state.objects[key]; ok {
		if old, ok := state.handles[h].(nvml.Device); ok && old != obj {
			delete(state.migParent, old)
		}
		state.handles[h] = obj
		return h
	}
	h := C.calloc(1, 8)
	state.objects[key] = h
	state.keys[h] = key
	state.handles[h] = obj
	return h
}

// object returns what the C handle h stands for, if it is a T.
func object[T any](h unsafe.Pointer) (T, bool) {
	state.mu.Lock()
	defer state.mu.Unlock()
	obj, ok := state.handles[h].(T)
	return obj, ok
}

// release forgets the handle h (an event set that was freed).
func release(h unsafe.Pointer) {
	state.mu.Lock()
	defer state.mu.Unlock()
	if _, ok := state.handles[h]; ok {
		delete(state.handles, h)
		delete(state.objects, state.keys[h])
		delete(state.keys, h)
		C.free(h)
	}
}

// gpuOf is the full GPU of d: d itself, or the parent of a MIG device.
func gpuOf(d nvml.Device) *server.Device {
	if g, ok := d.(*server.Device); ok {
		return g
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	return state.migParent[d]
}

// lost tells whether the GPU of d is lost.
func lost(d nvml.Device) bool {
	g := gpuOf(d)
	return g != nil && state.events.Probe(g.UUID) == nvml.ERROR_GPU_IS_LOST
}

// migHandle records the parent of a MIG device handle being given out.
// The handle is that of the MIG device's (GPU, GPU instance ID, compute
// instance ID), whichever Go object the mock machine returns for it.
func migHandle(parent nvml.Device, mig nvml.Device) unsafe.Pointer {
	g, _ := parent.(*server.Device)
	var key any = mig
	if g != nil {
		gi, r1 := mig.GetGpuInstanceId()
		ci, r2 := mig.GetComputeInstanceId()
		if r1 == nvml.SUCCESS && r2 == nvml.SUCCESS {
			key = instanceKey{kind: migDeviceKind, gpu: g, gi: gi, ci: ci}
		}
	}
	state.mu.Lock()
	defer state.mu.Unlock()
	if g != nil {
		state.migParent[mig] = g
	}
	return handleOfKeyLocked(key, mig)
}

// deviceOf starts a call on a device handle: enter, then the handle's
// device, which must not be lost unless identity is set (the call only
// reads what identifies the handle).
func deviceOf(fn string, h unsafe.Pointer, identity bool) (nvml.Device, nvml.Return) {
	if r := enter(fn); r != nvml.SUCCESS {
		return nil, r
	}
	d, ok := object[nvml.Device](h)
	if !ok {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	if !identity && lost(d) {
		return nil, nvml.ERROR_GPU_IS_LOST
	}
	return d, nvml.SUCCESS
}

// guard turns a panic of the call into its NVML answer: a function the
// mock machine leaves unset (go-nvml's mocks panic "method is nil") is not
// supported; anything else is a bug of the mock, said on stderr. No Go
// panic may unwind into the C caller.
func guard(fn string, ret *C.nvmlReturn_t) {
	r := recover()
	if r == nil {
		return
	}
	if strings.Contains(fmt.Sprint(r), "method is nil") {
		*ret = C.nvmlReturn_t(nvml.ERROR_NOT_SUPPORTED)
		return
	}
	fmt.Fprintf(os.Stderr, "mocknvml: %s panicked: %v\n", fn, r)
	*ret = C.nvmlReturn_t(nvml.ERROR_UNKNOWN)
}

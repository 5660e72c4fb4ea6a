package cdi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/nvidia-container-toolkit/pkg/nvcdi"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/specs-go"
)

// DefaultHookPath is where the NVIDIA Container Toolkit installs nvidia-cdi-hook.
const DefaultHookPath = "/usr/bin/nvidia-cdi-hook"

// EditsOptions configure Edits.
type EditsOptions struct {
	// NVML is an initialized NVML (real or mock), owned by the caller.
	NVML nvml.Interface
	// DriverRoot is where this process sees the driver's files: "/" for a
	// host installation seen from the host, or the mount point of the host's
	// driver root inside the plugin's container (e.g. "/driver-root").
	DriverRoot string
	// HostDriverRoot is the same directory as seen by the container runtime
	// on the host ("/" or "/run/nvidia/driver"); host paths in the edits are
	// rewritten from DriverRoot to it. Empty means DriverRoot.
	HostDriverRoot string
	// DevRoot is where the driver's device nodes are; empty means DriverRoot
	// when it holds dev/nvidiactl, else "/".
	DevRoot string
	// HookPath is the host path of nvidia-cdi-hook, which the runtime runs to
	// create symlinks and refresh the linker cache in the container.
	HookPath string
}

// Edits holds the container edits of one driver installation. It computes
// the driver-wide edits and every GPU's edits eagerly in NewEdits, so that
// prepares only copy from memory. Safe for concurrent use.
//
// The edits describe the driver version that was running when NewEdits ran;
// a driver change needs a new Edits (the plugin restarts when the driver
// is reloaded, as the GPUs disappear meanwhile).
type Edits struct {
	common specs.ContainerEdits

	// toHost maps the paths this process sees to the host's.
	toHost func(specs.ContainerEdits) specs.ContainerEdits

	mu      sync.RWMutex
	lib     nvcdi.Interface
	devices map[string]specs.ContainerEdits // by GPU UUID
}

// NewEdits discovers the driver's files under opts.DriverRoot and the edits
// of every GPU in uuids.
func NewEdits(ctx context.Context, opts EditsOptions, uuids []string) (*Edits, error) {
	logger := klog.FromContext(ctx).WithName("cdi")
	if opts.DriverRoot == "" {
		opts.DriverRoot = "/"
	}
	if opts.DevRoot == "" {
		opts.DevRoot = defaultDevRoot(opts.DriverRoot)
	}
	if opts.HookPath == "" {
		opts.HookPath = DefaultHookPath
	}
	lib, err := nvcdi.New(
		nvcdi.WithNvmlLib(opts.NVML),
		nvcdi.WithMode(nvcdi.ModeNvml),
		nvcdi.WithDriverRoot(opts.DriverRoot),
		nvcdi.WithDevRoot(opts.DevRoot),
		nvcdi.WithNVIDIACDIHookPath(opts.HookPath),
		nvcdi.WithLogger(klogAdapter{logger}),
		// libnvidia-sandboxutils is optional and not present on every
		// driver; NVML gives everything this driver needs.
		nvcdi.WithFeatureFlags(nvcdi.FeatureDisableNvsandboxUtils),
	)
	if err != nil {
		return nil, fmt.Errorf("setting up CDI edit discovery for driver root %q: %w", opts.DriverRoot, err)
	}
	common, err := lib.GetCommonEdits()
	if err != nil {
		return nil, fmt.Errorf("discovering the driver files under driver root %q: %w (is --driver-root right?)", opts.DriverRoot, err)
	}
	if opts.HostDriverRoot == "" {
		opts.HostDriverRoot = opts.DriverRoot
	}
	e := &Edits{lib: lib, devices: map[string]specs.ContainerEdits{}, toHost: rootRewriter(opts.DriverRoot, opts.HostDriverRoot)}
	if common != nil && common.ContainerEdits != nil {
		e.common = e.toHost(*common.ContainerEdits)
	}
	for _, uuid := range uuids {
		if _, err := e.Device(uuid); err != nil {
			return nil, err
		}
	}
	logger.V(2).Info("Discovered driver container edits", "driverRoot", opts.DriverRoot, "devRoot", opts.DevRoot,
		"deviceNodes", len(e.common.DeviceNodes), "mounts", len(e.common.Mounts), "hooks", len(e.common.Hooks))
	return e, nil
}

// Common returns the driver-wide edits. The caller must not modify the
// returned value's slices.
func (e *Edits) Common() specs.ContainerEdits { return e.common }

// Device returns the edits of the GPU with the given UUID. The caller must
// not modify the returned value's slices.
func (e *Edits) Device(uuid string) (specs.ContainerEdits, error) {
	e.mu.RLock()
	edits, ok := e.devices[uuid]
	e.mu.RUnlock()
	if ok {
		return edits, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if edits, ok := e.devices[uuid]; ok {
		return edits, nil
	}
	devs, err := e.lib.GetDeviceSpecsByID(uuid)
	if err != nil {
		return specs.ContainerEdits{}, fmt.Errorf("discovering the container edits of GPU %s: %w", uuid, err)
	}
	if len(devs) == 0 {
		return specs.ContainerEdits{}, fmt.Errorf("discovering the container edits of GPU %s: no device found", uuid)
	}
	edits = e.toHost(devs[0].ContainerEdits)
	e.devices[uuid] = edits
	return edits, nil
}

// rootRewriter returns a function that rewrites the host paths (mount
// sources, device node host paths) of edits from under root `from` to under
// root `to`. Container paths and hook arguments are container-side and stay.
func rootRewriter(from, to string) func(specs.ContainerEdits) specs.ContainerEdits {
	from, to = filepath.Clean(from), filepath.Clean(to)
	if from == to {
		return func(e specs.ContainerEdits) specs.ContainerEdits { return e }
	}
	rewrite := func(p string) string {
		if p == "" {
			return p
		}
		rel, err := filepath.Rel(from, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return p
		}
		return filepath.Join(to, rel)
	}
	return func(e specs.ContainerEdits) specs.ContainerEdits {
		out := CloneEdits(e)
		for i, m := range out.Mounts {
			c := *m
			c.HostPath = rewrite(c.HostPath)
			out.Mounts[i] = &c
		}
		for i, n := range out.DeviceNodes {
			c := *n
			// nvcdi leaves HostPath empty when it equals Path under "/".
			if c.HostPath != "" {
				c.HostPath = rewrite(c.HostPath)
			}
			if c.HostPath == c.Path {
				c.HostPath = ""
			}
			out.DeviceNodes[i] = &c
		}
		return out
	}
}

func defaultDevRoot(driverRoot string) string {
	if _, err := os.Stat(filepath.Join(driverRoot, "dev", "nvidiactl")); err == nil {
		return driverRoot
	}
	return "/"
}

// klogAdapter routes nvcdi's messages to klog. nvcdi reports every optional
// file it does not find as a warning; those are verbosity 4 here.
type klogAdapter struct{ logger klog.Logger }

func (a klogAdapter) Debugf(f string, args ...any) { a.logger.V(5).Info(fmt.Sprintf(f, args...)) }
func (a klogAdapter) Tracef(f string, args ...any) { a.logger.V(6).Info(fmt.Sprintf(f, args...)) }
func (a klogAdapter) Infof(f string, args ...any)  { a.logger.V(3).Info(fmt.Sprintf(f, args...)) }
func (a klogAdapter) Warningf(f string, args ...any) {
	a.logger.V(4).Info(fmt.Sprintf(f, args...), "severity", "warning")
}
func (a klogAdapter) Errorf(f string, args ...any) { a.logger.Error(nil, fmt.Sprintf(f, args...)) }

package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/driverwatch"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/resourceslice"
	"github.com/gpudra/gpudra/pkg/sharing/timeslicing"
)

// Roots are the resolved locations of a node's driver, as Open found them.
type Roots struct {
	// DriverRoot is where this process reads the driver's files.
	DriverRoot string
	// HostDriverRoot is the same directory as the host sees it.
	HostDriverRoot string
	// DevRoot is where this process finds dev/nvidia*; empty: automatic
	// (cdi.EditsOptions.DevRoot).
	DevRoot string
	// MockHostRoot is the mock host root as this process sees it; empty
	// for real NVML.
	MockHostRoot string
	// SysfsRoot is where this process sees the host's sysfs (--sysfs-root,
	// resourceslice.DefaultSysfsRoot when empty).
	SysfsRoot string
	// CDIRoot and HookPath are the flags' values.
	CDIRoot  string
	HookPath string
}

// Mode says how a binary uses the node.
type Mode int

const (
	// Plugin: a kubelet or device plugin, which owns the node's driver
	// side: with a mock backend it lays out the mock host, and it installs
	// the CDI hook when asked to.
	Plugin Mode = iota
	// HostTool: the gpudra host tool, which changes nothing on the node: a
	// mock host must have been laid out by the plugin already.
	HostTool
)

// Options tune Open.
type Options struct {
	// Mode is Plugin or HostTool.
	Mode Mode
	// Seed makes a mock machine's UUIDs stable and distinct per node: the
	// node name, the same in every binary.
	Seed string
	// HostRoot is where this process sees the host's / (HostTool only);
	// empty: "/".
	HostRoot string
	// Edits asks for the CDI container edits (Node.Edits).
	Edits bool
}

// Node is an opened GPU node: NVML, its inventory, the resolved roots and
// the container edits. Close releases NVML; nothing else needs releasing.
type Node struct {
	Backend   Backend
	NVML      nvml.Interface
	Inventory *inventory.Inventory
	// Devices are the preparable devices of Inventory (the vocabulary the
	// slices, the claim state and health share).
	Devices *devices.Set
	Roots   Roots
	// Edits are the container edits of the driver and every GPU; nil
	// unless Options.Edits.
	Edits *cdi.Edits
}

// Open brings a GPU node up in the one order every binary needs: parse the
// backend, open NVML, discover the GPUs (a GPU NVML cannot use is logged with
// its fix and left in Inventory.Unusable: it never fails Open), lay out the
// mock host (Plugin mode with --mock-host-root) and resolve the roots,
// install the CDI hook (Plugin mode with --install-cdi-hook-from), build the
// container edits. On error nothing stays open.
func Open(ctx context.Context, f Flags, opts Options) (_ *Node, err error) {
	logger := klog.FromContext(ctx)
	b, err := ParseBackend(f.NVML, opts.Seed)
	if err != nil {
		return nil, err
	}
	roots, err := resolveRoots(f, b, opts)
	if err != nil {
		return nil, err
	}
	if mb, ok := b.(*mockBackend); ok {
		mb.mockHostRoot = roots.MockHostRoot
	}
	lib, err := b.Open(roots.DriverRoot)
	if err != nil {
		return nil, err
	}
	n := &Node{Backend: b, NVML: lib, Roots: roots}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	if n.Inventory, err = inventory.DiscoverWith(ctx, lib, inventory.DiscoverOptions{NUMANode: b.NUMANode(roots.SysfsRoot)}); err != nil {
		return nil, fmt.Errorf("discovering GPUs: %w", err)
	}
	for _, u := range n.Inventory.Unusable {
		logger.Error(u.Err, "GPU unusable: the node's other GPUs are used without it", "index", u.Index, "uuid", u.UUID,
			"pciBusID", u.PCIBusID, "fix", u.Fix())
	}
	n.Devices = devices.FromInventory(n.Inventory)
	if opts.Mode == Plugin && roots.MockHostRoot != "" {
		if err := mockmachine.LayOutHost(mockmachine.HostOptions{DriverRoot: roots.MockHostRoot, DevRoot: roots.MockHostRoot}, n.Inventory); err != nil {
			return nil, err
		}
	}
	if opts.Mode == Plugin && f.InstallHookFrom != "" {
		if err := installFile(f.InstallHookFrom, f.HookPath); err != nil {
			return nil, fmt.Errorf("installing nvidia-cdi-hook: %w", err)
		}
	}
	logger.Info("Discovered GPUs", "count", len(n.Inventory.Devices), "unusable", len(n.Inventory.Unusable), "driverVersion", n.Inventory.DriverVersion,
		"cudaDriverVersion", n.Inventory.CUDADriverVersion, "backend", b.String())
	if opts.Edits {
		n.Edits, err = cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: roots.DriverRoot, HostDriverRoot: roots.HostDriverRoot,
			DevRoot: roots.DevRoot, HookPath: roots.HookPath}, n.Inventory.UUIDs())
		if err != nil {
			return nil, err
		}
	}
	return n, nil
}

// resolveRoots applies the mock host root (it is then driver root, host
// driver root and device root) and, for the host tool, the host root under
// which it sees host paths.
func resolveRoots(f Flags, b Backend, opts Options) (Roots, error) {
	r := Roots{DriverRoot: f.DriverRoot, HostDriverRoot: f.HostDriverRoot, DevRoot: f.DevRoot, SysfsRoot: f.SysfsRoot, CDIRoot: f.CDIRoot, HookPath: f.HookPath}
	if r.SysfsRoot == "" {
		r.SysfsRoot = resourceslice.DefaultSysfsRoot
	}
	if f.MockHostRoot == "" {
		return r, nil
	}
	if !b.Mock() {
		return r, errNeedsMock(b)
	}
	local := f.MockHostRoot
	if opts.Mode == HostTool {
		local = filepath.Join(hostRoot(opts), f.MockHostRoot)
		if _, err := os.Stat(local); err != nil {
			return r, fmt.Errorf("mock host root %s: %w (the plugin lays it out when it starts; start it once, or pass the right --mock-host-root)", f.MockHostRoot, err)
		}
	}
	r.DriverRoot, r.HostDriverRoot, r.DevRoot, r.MockHostRoot = local, f.MockHostRoot, local, local
	return r, nil
}

func hostRoot(opts Options) string {
	if opts.HostRoot == "" {
		return "/"
	}
	return opts.HostRoot
}

// Close shuts NVML down. Idempotent.
func (n *Node) Close() {
	if n == nil || n.NVML == nil {
		return
	}
	_ = n.NVML.Shutdown()
	n.NVML = nil
}

// DeviceEdits returns the container edits of every preparable device: the
// GPUs' (Edits) and those of the MIG devices, whose capability device nodes
// come from the backend. With dynamicMIG the result also gives the edits
// of MIG devices made later (cdi.MIGEdits). Needs Options.Edits.
func (n *Node) DeviceEdits(dynamicMIG bool) (cdi.DeviceEdits, error) {
	if len(n.Inventory.MIGDevices) == 0 && !dynamicMIG {
		return n.Edits, nil
	}
	migs := make([]cdi.MIGDevice, 0, len(n.Inventory.MIGDevices))
	for _, m := range n.Inventory.MIGDevices {
		migs = append(migs, cdi.MIGDevice{UUID: m.UUID, ParentUUID: m.ParentUUID, ParentMinor: m.ParentMinor,
			GPUInstanceID: m.GPUInstanceID, ComputeInstanceID: m.ComputeInstanceID})
	}
	caps, err := n.Backend.MIGCaps(n.Inventory, n.Roots.MockHostRoot)
	if err == nil {
		var out cdi.DeviceEdits
		if dynamicMIG {
			out, err = cdi.WithDynamicMIGCaps(n.Edits, migs, caps)
		} else {
			out, err = cdi.WithMIGCaps(n.Edits, migs, caps)
		}
		if err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("MIG device edits: %w", err)
}

// PCIeRoot is the backend's resolver of a GPU's PCIe root through the
// host's sysfs at Roots.SysfsRoot; nil for a mock backend.
func (n *Node) PCIeRoot() func(busID string) (string, error) {
	return n.Backend.PCIeRoot(n.Roots.SysfsRoot)
}

// TimeSlicer returns the backend's time slicer (nil: time-slicing is off,
// logged); dataDir is the plugin's own directory.
func (n *Node) TimeSlicer(ctx context.Context, dataDir string) timeslicing.TimeSlicer {
	return n.Backend.TimeSlicer(ctx, n.Roots.DriverRoot, n.Roots.MockHostRoot, dataDir)
}

// HealthOptions completes opts with what the backend knows: how to probe a
// lost GPU.
func (n *Node) HealthOptions(opts health.Options) health.Options {
	if opts.Probe == nil {
		opts.Probe = n.Backend.HealthProbe()
	}
	return opts
}

// InjectEvents runs the backend's event injection from the mock host until
// ctx is done (see Backend.InjectEvents).
func (n *Node) InjectEvents(ctx context.Context) {
	n.Backend.InjectEvents(ctx, n.Roots.MockHostRoot)
}

// WatchDriver calls onChange once when the driver under the driver root
// changes (see driverwatch.Watch); zero interval turns it off.
func (n *Node) WatchDriver(ctx context.Context, interval time.Duration, onChange func(before, after string)) {
	if interval <= 0 {
		return
	}
	driverwatch.Watch(ctx, n.Roots.DriverRoot, driverwatch.DefaultProcRoot, interval, onChange)
}

// HostDriver is the driver root as the host sees it: HostDriverRoot, else
// DriverRoot (the process sees the driver where the host does).
func (r Roots) HostDriver() string {
	if r.HostDriverRoot != "" {
		return r.HostDriverRoot
	}
	return r.DriverRoot
}

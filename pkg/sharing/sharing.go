// THIS FILE IS THE CONTRACT between the claim state (pkg/claimstate) and the
// sharing implementations (pkg/sharing/timeslicing, pkg/sharing/mps). Keep
// it stable: change it only in ways that compile with every implementation.

package sharing

import (
	"context"
	"fmt"
	"slices"

	"tags.cncf.io/container-device-interface/specs-go"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
)

// Applier makes the sharing settings of a claim take effect.
//
// Implementations must be safe for concurrent use; the claim state
// serializes the calls of one claim but calls for different claims run in
// parallel.
type Applier interface {
	// Apply makes the sharing settings of the claim's devices take effect
	// and returns the extra container edits for the claim's CDI spec
	// (claim-wide and per device name). Idempotent: a repeated Apply for
	// the same claim returns the same edits and changes nothing. The claim
	// state also calls Apply again for a claim recorded before a restart
	// or reboot, so that settings that a reboot wiped are made again.
	//
	// Devices without a sharing setting for this applier are ignored. An
	// error names the claim and the device and says how to fix it; after
	// an error the claim state calls Undo.
	Apply(ctx context.Context, c Claim) (Edits, error)
	// Undo reverts what Apply did for the claim. Idempotent; safe after a
	// failed or partial Apply and after a restart: it works from the Claim
	// alone (which a restarted claim state rebuilds from the checkpoint
	// record), never from what an earlier Apply kept in memory.
	Undo(ctx context.Context, c Claim) error
}

// Claim is a prepared (or being prepared) claim as the sharing code sees
// it. The claim state keeps one per claim in memory, built once: from the
// resolved configs when it prepares the claim, or from the claim's
// checkpoint record when it loads the checkpoint at start-up. The same
// value is handed to every Apply and Undo of the claim, so appliers must
// treat it, its Devices and their Configs as read-only.
type Claim struct {
	UID       string
	Namespace string
	Name      string
	// Devices are the claim's devices of this driver, in allocation order.
	// A device that satisfies several requests appears once per request,
	// with the same Name.
	Devices []Device
}

// Device is one prepared device of a claim.
type Device struct {
	// Name is the device's name in the ResourceSlice, e.g. "gpu-0" or
	// "gpu-0-mig-1g10gb-0".
	Name string
	// Type is devices.KindGPU or devices.KindMIG.
	Type devices.Kind
	// UUID is the device's UUID: "GPU-..." for a full GPU, "MIG-..." for a
	// MIG device.
	UUID string
	// ParentUUID is the UUID of the GPU a MIG device belongs to; empty
	// for a full GPU.
	ParentUUID string
	// Requests are the names of the claim's requests the device satisfies.
	Requests []string
	// AdminAccess is true when the claim asked for admin access to the
	// device (monitoring without exclusive use).
	AdminAccess bool
	// Config is the effective opaque config, normalized and validated: a
	// *configapi.GpuConfig for a GPU, a *configapi.MigDeviceConfig for a
	// MIG device. Nil means exclusive use without sharing settings.
	Config configapi.Config
	// Share is set when the claim holds a share of the device (consumable
	// capacity: the device allows multiple allocations, and the scheduler
	// gave the claim part of its capacity); nil for an exclusive or
	// admin-access device.
	Share *Share
}

// Share is a claim's part of a GPU that several claims share (a device
// allocated with a share ID), with the limits its allocation consumed.
type Share struct {
	// ID is the allocation's share ID (unique per share of the device).
	ID string
	// MemoryBytes is the device memory the share consumed; 0 means no
	// memory limit (a request policy whose default is 0).
	MemoryBytes int64
	// ComputeShares of ComputeTotal is the share's part of the GPU's
	// compute (the "shares" capacity); ComputeTotal 0 means no compute
	// limit.
	ComputeShares, ComputeTotal int64
}

// ActiveThreadPercentage is the share's compute limit as MPS takes it
// (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE): its part of ComputeTotal, rounded
// up, at least 1; 0 when the share has no compute limit.
func (s *Share) ActiveThreadPercentage() int64 {
	if s == nil || s.ComputeTotal <= 0 || s.ComputeShares <= 0 {
		return 0
	}
	return max(1, min(100, (s.ComputeShares*100+s.ComputeTotal-1)/s.ComputeTotal))
}

// GPUUUID returns the UUID of the physical GPU: the parent's for a MIG
// device, the device's own otherwise.
func (d Device) GPUUUID() string {
	if d.ParentUUID != "" {
		return d.ParentUUID
	}
	return d.UUID
}

// Strategy returns the device's sharing strategy (configapi.TimeSlicingStrategy
// or configapi.MpsStrategy), or "" when it is used exclusively.
func (d Device) Strategy() string {
	switch c := d.Config.(type) {
	case *configapi.GpuConfig:
		if c != nil && c.Sharing != nil {
			return string(c.Sharing.Strategy)
		}
	case *configapi.MigDeviceConfig:
		if c != nil && c.Sharing != nil {
			return string(c.Sharing.Strategy)
		}
	}
	return ""
}

// MpsConfig returns the device's MPS settings, or nil when its strategy is
// not MPS.
func (d Device) MpsConfig() *configapi.MpsConfig {
	switch c := d.Config.(type) {
	case *configapi.GpuConfig:
		if c != nil && c.Sharing.IsMPS() {
			return c.Sharing.MpsConfig
		}
	case *configapi.MigDeviceConfig:
		if c != nil && c.Sharing.IsMPS() {
			return c.Sharing.MpsConfig
		}
	}
	return nil
}

// Ref names the claim in errors: "claim <namespace>/<name> (uid <uid>)".
func (c Claim) Ref() string {
	return fmt.Sprintf("claim %s/%s (uid %s)", c.Namespace, c.Name, c.UID)
}

// Edits are the container edits that sharing adds to a claim's CDI spec.
// The zero value adds nothing.
type Edits struct {
	// Claim edits apply to every container that gets any device of the
	// claim (the spec-level edits).
	Claim specs.ContainerEdits
	// Devices holds the edits of single devices, by device name
	// (Device.Name).
	Devices map[string]specs.ContainerEdits
}

// Merge returns e followed by o: claim-wide edits after claim-wide edits,
// device edits after the same device's edits. Neither e nor o is modified.
func (e Edits) Merge(o Edits) Edits {
	devs := make(map[string]specs.ContainerEdits, len(e.Devices)+len(o.Devices))
	for name, de := range e.Devices {
		devs[name] = de
	}
	e.Devices = devs
	e.Claim = appendEdits(e.Claim, o.Claim)
	for name, de := range o.Devices {
		e.Devices[name] = appendEdits(e.Devices[name], de)
	}
	return e
}

// appendEdits returns a followed by b in new slices, so that neither
// argument's backing arrays are written.
func appendEdits(a, b specs.ContainerEdits) specs.ContainerEdits {
	a.Env = slices.Concat(a.Env, b.Env)
	a.DeviceNodes = slices.Concat(a.DeviceNodes, b.DeviceNodes)
	a.NetDevices = slices.Concat(a.NetDevices, b.NetDevices)
	a.Hooks = slices.Concat(a.Hooks, b.Hooks)
	a.Mounts = slices.Concat(a.Mounts, b.Mounts)
	a.AdditionalGIDs = slices.Concat(a.AdditionalGIDs, b.AdditionalGIDs)
	if b.IntelRdt != nil {
		a.IntelRdt = b.IntelRdt
	}
	return a
}

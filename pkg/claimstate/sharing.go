package claimstate

import (
	"context"
	"fmt"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/specs-go"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/opaqueconfig"
	"github.com/gpudra/gpudra/pkg/resourceslice"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// indexMIGDevices makes the node's MIG devices preparable by their
// ResourceSlice names and removes the GPUs in MIG mode, which are not
// published as whole GPUs. A MIG device is kept in s.devices as an
// inventory.Device carrying its MIG UUID, so that the record's UUID is the
// MIG UUID and the spec gets the MIG device's edits.
func (s *State) indexMIGDevices() {
	s.migs = map[string]inventory.MIGDevice{}
	for _, d := range s.opts.Inventory.Devices {
		if d.MIGEnabled {
			delete(s.devices, resourceslice.DeviceName(d))
		}
	}
	for _, m := range s.opts.Inventory.MIGDevices {
		name := resourceslice.MIGDeviceName(m)
		s.migs[name] = m
		parent, _ := s.opts.Inventory.DeviceByUUID(m.ParentUUID)
		parent.UUID = m.UUID
		parent.MemoryBytes = m.MemoryBytes
		s.devices[name] = parent
	}
}

// deviceTypeOption tells opaqueconfig which allocated devices are MIG
// devices, so that they get a MigDeviceConfig.
func (s *State) deviceTypeOption() opaqueconfig.Option {
	return opaqueconfig.WithDeviceType(func(r resourceapi.DeviceRequestAllocationResult) opaqueconfig.DeviceType {
		if _, ok := s.migs[r.Device]; ok {
			return opaqueconfig.DeviceTypeMIG
		}
		return opaqueconfig.DeviceTypeGPU
	})
}

// sharingClaim builds the sharing view of a record. It works from the
// record alone (plus the inventory for a MIG device's parent), so Undo
// after a restart sees what Apply saw.
func (s *State) sharingClaim(rec *checkpoint.ClaimRecord) (sharing.Claim, error) {
	c := sharing.Claim{UID: rec.ClaimUID, Namespace: rec.Namespace, Name: rec.Name}
	for _, d := range rec.Devices {
		sd := sharing.Device{
			Name:        d.Device,
			Type:        sharing.DeviceTypeGPU,
			UUID:        d.UUID,
			Requests:    append([]string(nil), d.Requests...),
			AdminAccess: d.AdminAccess,
		}
		if m, ok := s.migs[d.Device]; ok || strings.HasPrefix(d.UUID, "MIG-") {
			sd.Type = sharing.DeviceTypeMIG
			sd.ParentUUID = m.ParentUUID
		}
		if len(d.Config) > 0 {
			obj, err := opaqueconfig.Decode(d.Config)
			if err != nil {
				return c, fmt.Errorf("device %s: its recorded config cannot be decoded: %w; unprepare the claim (delete its pods) and prepare it again", d.Device, err)
			}
			cfg, ok := obj.(configapi.Config)
			if !ok {
				return c, fmt.Errorf("device %s: its recorded config is a %T, not a GpuConfig or MigDeviceConfig", d.Device, obj)
			}
			cfg.Normalize()
			sd.Config = cfg
		}
		c.Devices = append(c.Devices, sd)
	}
	return c, nil
}

// applySharing makes the sharing settings of c (sharingClaim of a record)
// take effect (idempotent, see sharing.Applier) and returns the edits to add
// to the claim's spec. A claim without sharing settings needs no Applier;
// one with sharing settings on a State without Applier fails with an error
// that says so.
func (s *State) applySharing(ctx context.Context, c sharing.Claim) (sharing.Edits, error) {
	if !sharing.UsesSharing(c) {
		return sharing.Edits{}, nil
	}
	if s.opts.Sharing == nil {
		for _, d := range c.Devices {
			if st := d.Strategy(); st != "" && (st != configapi.TimeSlicingStrategy || d.Type != sharing.DeviceTypeMIG) {
				return sharing.Edits{}, fmt.Errorf("device %s: sharing.strategy %q is not supported by this plugin (it runs without sharing support): "+
					"remove the sharing config, or run a plugin with sharing enabled", d.Name, st)
			}
		}
		return sharing.Edits{}, nil
	}
	return s.opts.Sharing.Apply(klog.NewContext(ctx, klog.FromContext(ctx).WithName("sharing")), c)
}

// usesSharing tells whether the record's devices have sharing settings.
func (s *State) usesSharing(rec *checkpoint.ClaimRecord) (bool, error) {
	c, err := s.sharingClaim(rec)
	if err != nil {
		return false, err
	}
	return sharing.UsesSharing(c), nil
}

// adoptIntoBoot records a claim of an earlier boot under the current one,
// so that it counts as from an earlier boot only until the first start-up
// after the reboot. A claim with sharing settings, which the reboot reset
// (time slice, MPS daemon), gets them applied again and its spec rewritten
// with the edits Apply returns; adoptIntoBoot reports whether it did that.
// The caller holds the claim's lock.
func (s *State) adoptIntoBoot(ctx context.Context, rec *checkpoint.ClaimRecord) (reapplied bool, err error) {
	shared, err := s.usesSharing(rec)
	if err != nil {
		return false, err
	}
	if shared {
		spec, err := s.buildSpec(ctx, rec)
		if err != nil {
			return false, fmt.Errorf("applying its sharing settings again: %w", err)
		}
		if err := s.opts.Specs.Write(rec.ClaimUID, spec); err != nil {
			return false, err
		}
	}
	updated := *rec
	updated.BootID = s.opts.BootID
	if err := s.opts.Checkpoints.Put(&updated); err != nil {
		return shared, err
	}
	s.mu.Lock()
	if s.records[rec.ClaimUID] == rec {
		s.records[rec.ClaimUID] = &updated
		s.releaseLocked(rec)
		s.reserveLocked(&updated)
	}
	s.mu.Unlock()
	return shared, nil
}

// undoSharing reverts applySharing; idempotent, and a no-op for a claim
// without sharing settings or a State without Applier.
func (s *State) undoSharing(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	if s.opts.Sharing == nil {
		return nil
	}
	c, err := s.sharingClaim(rec)
	if err != nil {
		return err
	}
	if !sharing.UsesSharing(c) {
		return nil
	}
	if err := s.opts.Sharing.Undo(klog.NewContext(ctx, klog.FromContext(ctx).WithName("sharing")), c); err != nil {
		return fmt.Errorf("undoing sharing settings: %w", err)
	}
	return nil
}

// withSharingEdits adds the sharing edits to the driver-wide edits and to
// each device's edits.
func withSharingEdits(common specs.ContainerEdits, e sharing.Edits) specs.ContainerEdits {
	return sharing.Edits{Claim: common}.Merge(sharing.Edits{Claim: e.Claim}).Claim
}

// checkConfigRequests fails when a config of this driver names a request
// that the claim does not have: such a config would silently configure
// nothing. The claim's requests are those of its spec (a prioritized-list
// request also by "parent/sub"), or, for a claim without spec requests,
// those of its allocation results.
func checkConfigRequests(claim *resourceapi.ResourceClaim, driverName string) error {
	known := map[string]bool{}
	var names []string
	add := func(n string) {
		if !known[n] {
			known[n] = true
			names = append(names, fmt.Sprintf("%q", n))
		}
	}
	for _, r := range claim.Spec.Devices.Requests {
		add(r.Name)
		for _, sub := range r.FirstAvailable {
			add(r.Name + "/" + sub.Name)
		}
	}
	if len(known) == 0 {
		for _, r := range claim.Status.Allocation.Devices.Results {
			add(r.Request)
			if parent, _, ok := strings.Cut(r.Request, "/"); ok {
				add(parent)
			}
		}
	}
	for i, c := range claim.Status.Allocation.Devices.Config {
		if c.Opaque == nil || c.Opaque.Driver != driverName {
			continue
		}
		for _, r := range c.Requests {
			if !known[r] {
				return fmt.Errorf("%s config #%d (status.allocation.devices.config[%d]) names request %q in its requests, which the claim does not have: "+
					"use one of %s, or leave requests empty to configure all of them", c.Source, i+1, i, r, strings.Join(names, ", "))
			}
		}
	}
	return nil
}

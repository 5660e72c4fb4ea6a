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
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/opaqueconfig"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// deviceTypeOption tells opaqueconfig which allocated devices are MIG
// devices, so that they get a MigDeviceConfig.
func (s *State) deviceTypeOption() opaqueconfig.Option {
	return opaqueconfig.WithDeviceType(func(r resourceapi.DeviceRequestAllocationResult) opaqueconfig.DeviceType {
		if d, ok := s.opts.Devices.Get(r.Device); ok && d.Kind == devices.KindMIG {
			return opaqueconfig.DeviceTypeMIG
		}
		return opaqueconfig.DeviceTypeGPU
	})
}

// sharingDevice is the sharing view of a recorded device, without its
// config. A device that the node has as a MIG device is one, with its
// parent; so is a device recorded with a MIG UUID that the node no longer
// has (its parent is then unknown).
func (s *State) sharingDevice(d checkpoint.PreparedDevice) sharing.Device {
	sd := sharing.Device{
		Name:        d.Device,
		Type:        devices.KindGPU,
		UUID:        d.UUID,
		Requests:    append([]string(nil), d.Requests...),
		AdminAccess: d.AdminAccess,
		Share:       sharingShare(d),
	}
	if dev, ok := s.opts.Devices.Get(d.Device); ok && dev.Kind == devices.KindMIG {
		sd.Type = devices.KindMIG
		sd.ParentUUID = dev.ParentUUID
	} else if strings.HasPrefix(d.UUID, "MIG-") {
		sd.Type = devices.KindMIG
	}
	return sd
}

// loadedClaim is the in-memory claim of a record read from the checkpoint:
// its sharing view is built from the record alone (plus the node's devices
// for a MIG device's parent), so that Undo after a restart sees what Apply
// saw. A recorded config that cannot be decoded leaves its device without
// config and sets configErr (the first such error).
func (s *State) loadedClaim(rec *checkpoint.ClaimRecord) *preparedClaim {
	pc := &preparedClaim{rec: rec, sharing: sharing.Claim{UID: rec.ClaimUID, Namespace: rec.Namespace, Name: rec.Name}}
	for _, d := range rec.Devices {
		sd := s.sharingDevice(d)
		if len(d.Config) > 0 {
			cfg, err := decodeRecordedConfig(d)
			if err != nil && pc.configErr == nil {
				pc.configErr = err
			}
			sd.Config = cfg
		}
		pc.sharing.Devices = append(pc.sharing.Devices, sd)
	}
	return pc
}

// decodeRecordedConfig decodes and normalizes the recorded config of d; it
// returns a nil Config with the error.
func decodeRecordedConfig(d checkpoint.PreparedDevice) (configapi.Config, error) {
	obj, err := opaqueconfig.Decode(d.Config)
	if err != nil {
		return nil, fmt.Errorf("device %s: its recorded config cannot be decoded: %w; unprepare the claim (delete its pods) and prepare it again", d.Device, err)
	}
	cfg, ok := obj.(configapi.Config)
	if !ok {
		return nil, fmt.Errorf("device %s: its recorded config is a %T, not a GpuConfig or MigDeviceConfig", d.Device, obj)
	}
	cfg.Normalize()
	return cfg, nil
}

// applySharing makes the sharing settings of c take effect (idempotent,
// see sharing.Applier) and returns the edits to add to the claim's spec. A
// claim without sharing settings reaches no applier.
func (s *State) applySharing(ctx context.Context, c sharing.Claim) (sharing.Edits, error) {
	if !sharing.UsesSharing(c) {
		return sharing.Edits{}, nil
	}
	s.mu.Lock()
	delete(s.undone, c.UID)
	s.mu.Unlock()
	return s.opts.Sharing.Apply(klog.NewContext(ctx, klog.FromContext(ctx).WithName("sharing")), c)
}

// adoptIntoBoot records a claim of an earlier boot under the current one,
// so that it counts as from an earlier boot only until the first start-up
// after the reboot. A claim with sharing settings, which the reboot reset
// (time slice, MPS daemon), gets them applied again and its spec rewritten
// with the edits Apply returns; adoptIntoBoot reports whether it did that.
// The caller holds the claim's lock.
func (s *State) adoptIntoBoot(ctx context.Context, pc *preparedClaim) (reapplied bool, err error) {
	if pc.configErr != nil {
		return false, pc.configErr
	}
	rec := pc.rec
	shared := sharing.UsesSharing(pc.sharing)
	if shared {
		spec, err := s.buildSpec(ctx, pc)
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
	if s.prepared[rec.ClaimUID] == pc {
		s.prepared[rec.ClaimUID] = &preparedClaim{rec: &updated, sharing: pc.sharing, configErr: pc.configErr}
		s.releaseLocked(rec)
		s.reserveLocked(&updated)
	}
	s.mu.Unlock()
	return shared, nil
}

// undoSharing reverts applySharing; idempotent, and a no-op for a claim
// without sharing settings. It fails for a claim whose recorded configs
// cannot be decoded: what to undo is unknown.
func (s *State) undoSharing(ctx context.Context, pc *preparedClaim) error {
	if pc.configErr != nil {
		return pc.configErr
	}
	if !sharing.UsesSharing(pc.sharing) {
		return nil
	}
	uid := pc.sharing.UID
	s.mu.Lock()
	s.undone[uid] = true
	s.mu.Unlock()
	if err := s.opts.Sharing.Undo(klog.NewContext(ctx, klog.FromContext(ctx).WithName("sharing")), pc.sharing); err != nil {
		// Some settings may remain: the claim counts as holding them.
		s.mu.Lock()
		delete(s.undone, uid)
		s.mu.Unlock()
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

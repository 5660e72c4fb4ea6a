package claimstate

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/migmanager"
)

// MIGDevices creates and destroys the dynamic MIG devices of claims and
// switches the mode of partitionable GPUs; *migmanager.Manager implements
// it. See migmanager's contracts: Create leaves nothing behind on failure,
// Destroy is idempotent.
type MIGDevices interface {
	Create(ctx context.Context, spec migmanager.Spec) (migmanager.Instance, error)
	Destroy(ctx context.Context, spec migmanager.Spec) error
	Lookup(ctx context.Context, spec migmanager.Spec) (migmanager.Instance, bool, error)
	UseWhole(ctx context.Context, parentUUID string) error
}

// MIGEditsSource gives the container edits of a MIG device that did not
// exist when the plugin started (a dynamic one); the cdi package's MIG
// edits implement it.
type MIGEditsSource interface {
	MIGDevice(m cdi.MIGDevice) (specs.ContainerEdits, error)
}

// The life of a dynamic MIG device, and why it never leaks:
//
//  1. Prepare records the claim with the device's intent (MIGInstance,
//     Created false) before anything is made: from then on a record names
//     the instance.
//  2. It creates the instance (migmanager.Create), then writes the spec and
//     the record with the instance's IDs and UUID (Created true).
//  3. Unprepare removes the spec, undoes the sharing settings, destroys the
//     instance, then removes the record.
//
// A failure in 1-2 is rolled back at once (rollback destroys the instance).
// After a crash, Reconcile rolls back the claims recorded with an intent
// (their prepare never returned: the kubelet prepares them again), and
// re-creates the instance of a prepared claim that lost it (a reboot
// destroys every MIG device; a claim's spec then names the new IDs), except
// a claim of the current boot whose spec is gone too: that is an unprepare
// that crashed after removing both, which Reconcile finishes.

// hasDynamicMIG tells whether rec has a dynamic MIG device.
func hasDynamicMIG(rec *checkpoint.ClaimRecord) bool {
	for _, d := range rec.Devices {
		if d.MIG != nil {
			return true
		}
	}
	return false
}

// hasIntent tells whether rec has a dynamic MIG device that was not
// recorded as created.
func hasIntent(rec *checkpoint.ClaimRecord) bool {
	for _, d := range rec.Devices {
		if d.MIG != nil && !d.MIG.Created {
			return true
		}
	}
	return false
}

func migSpec(m *checkpoint.MIGInstance) migmanager.Spec {
	return migmanager.Spec{
		ParentUUID:               m.ParentUUID,
		GPUInstanceProfileIndex:  m.GPUInstanceProfileIndex,
		GPUInstanceProfileID:     m.GPUInstanceProfileID,
		ComputeInstanceProfileID: m.ComputeInstanceProfileID,
		Placement:                inventory.MIGPlacement{Start: m.PlacementStart, Size: m.PlacementSize},
	}
}

// migIntent is the intent of the dynamic MIG device dev.
func migIntent(dev devices.Device) *checkpoint.MIGInstance {
	p := dev.Dynamic
	return &checkpoint.MIGInstance{
		ParentUUID:               dev.ParentUUID,
		GPUInstanceProfileIndex:  p.Profile.ProfileIndex,
		GPUInstanceProfileID:     p.Profile.GPUInstanceProfileID,
		ComputeInstanceProfileID: p.Profile.ComputeInstanceProfileID,
		PlacementStart:           p.Placement.Start,
		PlacementSize:            p.Placement.Size,
	}
}

func (s *State) migDevices() (MIGDevices, error) {
	if s.opts.MIG == nil {
		return nil, errors.New("dynamic MIG devices are not enabled on this node (Options.MIG is nil)")
	}
	return s.opts.MIG, nil
}

// useWhole puts the partitionable GPUs that rec gets whole out of MIG mode.
// A switch needs no record: it is idempotent, and a GPU out of MIG mode
// without a claim is what the next partition's prepare switches back.
func (s *State) useWhole(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	for _, d := range rec.Devices {
		dev, ok := s.opts.Devices.Get(d.Device)
		if !ok || !dev.Partitionable || d.AdminAccess {
			continue
		}
		mig, err := s.migDevices()
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Device, err)
		}
		if err := mig.UseWhole(ctx, dev.UUID); err != nil {
			return fmt.Errorf("device %s: %w", d.Device, err)
		}
	}
	return nil
}

// createMIG creates the dynamic MIG devices of pc that are not created yet
// and records their identity in pc's record and sharing view (which the
// caller owns: the claim is not prepared yet). A device allocated for
// several requests is created once.
func (s *State) createMIG(ctx context.Context, pc *preparedClaim) error {
	rec := pc.rec
	for i := range rec.Devices {
		d := &rec.Devices[i]
		if d.MIG == nil || d.MIG.Created {
			continue
		}
		mig, err := s.migDevices()
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Device, err)
		}
		inst, err := mig.Create(ctx, migSpec(d.MIG))
		if err != nil {
			return fmt.Errorf("device %s: %w", d.Device, err)
		}
		s.setCreated(pc, d.Device, inst)
	}
	return nil
}

// setCreated records inst as the MIG device of every entry of device name
// in pc.
func (s *State) setCreated(pc *preparedClaim, name string, inst migmanager.Instance) {
	for j := range pc.rec.Devices {
		e := &pc.rec.Devices[j]
		if e.Device != name || e.MIG == nil {
			continue
		}
		m := *e.MIG
		m.Created, m.GPUInstanceID, m.ComputeInstanceID, m.UUID = true, inst.GPUInstanceID, inst.ComputeInstanceID, inst.UUID
		e.MIG = &m
		e.UUID = inst.UUID
	}
	for j := range pc.sharing.Devices {
		if pc.sharing.Devices[j].Name == name {
			pc.sharing.Devices[j].UUID = inst.UUID
		}
	}
}

// destroyMIG destroys the dynamic MIG devices of rec, created or intended.
func (s *State) destroyMIG(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	var errs []error
	done := map[string]bool{}
	for _, d := range rec.Devices {
		if d.MIG == nil || done[d.Device] {
			continue
		}
		done[d.Device] = true
		mig, err := s.migDevices()
		if err == nil {
			err = mig.Destroy(ctx, migSpec(d.MIG))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s: destroying its MIG device: %w", d.Device, err))
		}
	}
	return errors.Join(errs...)
}

// migEdits returns the container edits of the created dynamic MIG device
// d.
func (s *State) migEdits(d checkpoint.PreparedDevice) (specs.ContainerEdits, error) {
	src, ok := s.opts.Edits.(MIGEditsSource)
	if !ok {
		return specs.ContainerEdits{}, fmt.Errorf("device %s: the node's container edits do not cover MIG devices made on demand", d.Device)
	}
	parents := s.opts.Devices.OfGPU(d.MIG.ParentUUID)
	if len(parents) == 0 {
		return specs.ContainerEdits{}, fmt.Errorf("device %s: its GPU %s is not on this node any more", d.Device, d.MIG.ParentUUID)
	}
	return src.MIGDevice(cdi.MIGDevice{UUID: d.MIG.UUID, ParentUUID: d.MIG.ParentUUID, ParentMinor: parents[0].GPU.Minor,
		GPUInstanceID: d.MIG.GPUInstanceID, ComputeInstanceID: d.MIG.ComputeInstanceID})
}

// rollBackIntent undoes the prepare of a claim recorded with an intent
// that a crash interrupted: its MIG devices, spec and record go. The
// caller holds the claim's lock.
func (s *State) rollBackIntent(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	pc := s.loadedClaim(rec)
	if err := s.destroyMIG(ctx, rec); err != nil {
		return err
	}
	if err := s.opts.Specs.Remove(rec.ClaimUID); err != nil {
		return err
	}
	if err := s.undoSharing(ctx, pc); err != nil {
		return err
	}
	if err := s.opts.Checkpoints.Delete(rec.ClaimUID); err != nil {
		return fmt.Errorf("removing the claim from the checkpoint: %w", err)
	}
	s.mu.Lock()
	delete(s.intents, rec.ClaimUID)
	delete(s.undone, rec.ClaimUID)
	s.releaseLocked(rec)
	s.mu.Unlock()
	klog.FromContext(ctx).Info("Rolled back the interrupted prepare of a claim with MIG devices made on demand",
		"claim", klog.KRef(rec.Namespace, rec.Name), "claimUID", rec.ClaimUID)
	return nil
}

// ensureMIG makes sure that the created dynamic MIG devices of the
// prepared claim pc exist (see the life of a dynamic MIG device above). It
// reports whether it re-created any, and whether it finished an
// interrupted unprepare instead (the claim is then gone). The caller holds
// the claim's lock.
func (s *State) ensureMIG(ctx context.Context, pc *preparedClaim) (recreated, finished bool, err error) {
	rec := pc.rec
	if !hasDynamicMIG(rec) {
		return false, false, nil
	}
	mig, err := s.migDevices()
	if err != nil {
		return false, false, err
	}
	var missing []string
	for _, d := range rec.Devices {
		if d.MIG == nil || !d.MIG.Created || slices.Contains(missing, d.Device) {
			continue
		}
		inst, found, err := mig.Lookup(ctx, migSpec(d.MIG))
		if err != nil {
			return false, false, fmt.Errorf("device %s: %w", d.Device, err)
		}
		if !found || inst.UUID != d.MIG.UUID {
			if found {
				// Another MIG device at the same place: not ours to reuse.
				return false, false, fmt.Errorf("device %s: its GPU instance was replaced by MIG device %s, which the driver did not make: destroy it and restart the plugin", d.Device, inst.UUID)
			}
			missing = append(missing, d.Device)
		}
	}
	if len(missing) == 0 {
		return false, false, nil
	}
	specExists, err := s.opts.Specs.Exists(rec.ClaimUID)
	if err != nil {
		return false, false, err
	}
	if !specExists && rec.BootID == s.opts.BootID {
		// The unprepare removed the spec and destroyed the devices.
		if err := s.unprepareLocked(ctx, pc); err != nil {
			return false, false, err
		}
		klog.FromContext(ctx).Info("Finished the interrupted unprepare of a claim with MIG devices made on demand",
			"claim", klog.KRef(rec.Namespace, rec.Name), "claimUID", rec.ClaimUID)
		return false, true, nil
	}
	updated := *rec
	updated.Devices = append([]checkpoint.PreparedDevice(nil), rec.Devices...)
	next := &preparedClaim{rec: &updated, sharing: pc.sharing, configErr: pc.configErr}
	next.sharing.Devices = append(next.sharing.Devices[:0:0], pc.sharing.Devices...)
	for _, name := range missing {
		for _, d := range updated.Devices {
			if d.Device != name {
				continue
			}
			inst, err := mig.Create(ctx, migSpec(d.MIG))
			if err != nil {
				return false, false, fmt.Errorf("device %s: re-creating its MIG device: %w", name, err)
			}
			s.setCreated(next, name, inst)
			break
		}
	}
	spec, err := s.buildSpec(ctx, next)
	if err == nil {
		err = s.opts.Specs.Write(rec.ClaimUID, spec)
	}
	if err == nil {
		err = s.opts.Checkpoints.Put(&updated)
	}
	if err != nil {
		return true, false, err
	}
	s.mu.Lock()
	if s.prepared[rec.ClaimUID] == pc {
		s.prepared[rec.ClaimUID] = next
		s.releaseLocked(rec)
		s.reserveLocked(&updated)
	}
	s.mu.Unlock()
	klog.FromContext(ctx).Info("Re-created the lost MIG devices of a prepared claim", "claim", klog.KRef(rec.Namespace, rec.Name),
		"claimUID", types.UID(rec.ClaimUID), "devices", missing)
	return true, false, nil
}

// overlaps tells whether devices a and b cannot be prepared at once
// although their names differ: partitions of one GPU whose memory slices
// overlap, or a partitionable GPU and one of its partitions.
func (s *State) overlaps(a, b string) bool {
	da, okA := s.opts.Devices.Get(a)
	db, okB := s.opts.Devices.Get(b)
	if !okA || !okB || da.GPUUUID() != db.GPUUUID() {
		return false
	}
	switch {
	case da.Dynamic != nil && db.Dynamic != nil:
		return da.Dynamic.Placement.Overlaps(db.Dynamic.Placement)
	case da.Dynamic != nil:
		return db.Partitionable
	case db.Dynamic != nil:
		return da.Partitionable
	}
	return false
}

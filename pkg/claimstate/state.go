// Package claimstate prepares and unprepares ResourceClaims on one node: it
// decides which of the node's GPUs a claim gets, writes the claim's CDI spec
// and records the claim durably, so that a restarted plugin knows exactly
// what it prepared.
//
// Contracts:
//   - Prepare and Unprepare are idempotent. A repeated Prepare returns the
//     same CDI device IDs and re-creates a spec that went missing; Unprepare
//     of an unknown claim succeeds.
//   - Calls for different claims run in parallel: the only state shared
//     between claims (which claim holds which device) is guarded by a mutex
//     that is never held across NVML calls or file I/O. Calls for the same
//     claim are serialized.
//   - Durability: Prepare returns only after the claim's record and its spec
//     are durable (see persist); Unprepare removes the spec, undoes the
//     sharing settings, then removes the record (both removals at once for a
//     claim without sharing settings). A crash in between leaves a
//     record without a spec, which Reconcile re-creates at start-up (applying
//     the sharing settings again), or a spec without a record (a claim
//     without sharing settings), which Reconcile deletes at start-up and an
//     Unprepare of the claim removes. Sharing settings are applied only to a
//     recorded claim, so none outlives a crash unrecorded. The kubelet
//     retries the prepare of a claim whose call did not return, and gets the
//     same CDI IDs.
package claimstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/opaqueconfig"
	"github.com/gpudra/gpudra/pkg/resourceslice"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// EditsSource provides the container edits of the node's driver and GPUs.
// *cdi.Edits implements it.
type EditsSource interface {
	Common() specs.ContainerEdits
	Device(uuid string) (specs.ContainerEdits, error)
}

// Options configure a State.
type Options struct {
	// DriverName is the DRA driver name, e.g. "gpu.nvidia.com".
	DriverName string
	// PoolName is the node's pool, the node name.
	PoolName string
	// Inventory lists the node's GPUs.
	Inventory *inventory.Inventory
	// Edits gives each GPU's container edits.
	Edits EditsSource
	// Specs is the CDI spec directory.
	Specs *cdi.SpecDir
	// Naming is the CDI naming of DriverName.
	Naming cdi.Naming
	// Checkpoints stores the prepared claims.
	Checkpoints *checkpoint.Store
	// BootID identifies the current boot (checkpoint.ReadBootID).
	BootID string
	// Now returns the current time; defaults to time.Now.
	Now func() time.Time
	// Sharing applies the claims' sharing settings (time-slicing, MPS);
	// see sharing.go. Nil: no sharing support, and a claim with a sharing
	// config fails to prepare with an error that says so.
	Sharing sharing.Applier
}

// State is the node's prepared claims. Create it with New.
type State struct {
	opts    Options
	devices map[string]inventory.Device    // by device name in the ResourceSlice
	migs    map[string]inventory.MIGDevice // MIG devices by device name; see indexMIGDevices
	claims  *keyedMutex

	mu      sync.Mutex
	records map[string]*checkpoint.ClaimRecord // by claim UID
	owners  map[string]*checkpoint.ClaimRecord // device name -> claim holding it exclusively (prepared or being prepared)
}

// New loads the checkpoint. Records that cannot be read are returned as
// load errors to report, not as a failure: one bad file never stops the
// plugin from serving the other claims.
func New(ctx context.Context, opts Options) (*State, []checkpoint.LoadError, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &State{
		opts:    opts,
		devices: map[string]inventory.Device{},
		claims:  newKeyedMutex(),
		records: map[string]*checkpoint.ClaimRecord{},
		owners:  map[string]*checkpoint.ClaimRecord{},
	}
	for _, d := range opts.Inventory.Devices {
		s.devices[resourceslice.DeviceName(d)] = d
	}
	s.indexMIGDevices()
	records, loadErrs, err := opts.Checkpoints.List()
	if err != nil {
		return nil, nil, fmt.Errorf("loading the claim checkpoint: %w", err)
	}
	for _, rec := range records {
		if rec.DriverName != "" && rec.DriverName != opts.DriverName {
			continue
		}
		s.records[rec.ClaimUID] = rec
		s.reserveLocked(rec)
	}
	klog.FromContext(ctx).V(2).Info("Loaded claim checkpoint", "claims", len(s.records), "unreadable", len(loadErrs))
	return s, loadErrs, nil
}

// reserveLocked marks the exclusive devices of rec as held by its claim.
func (s *State) reserveLocked(rec *checkpoint.ClaimRecord) {
	for _, d := range rec.Devices {
		if !d.AdminAccess {
			s.owners[d.Device] = rec
		}
	}
}

func (s *State) releaseLocked(rec *checkpoint.ClaimRecord) {
	for _, d := range rec.Devices {
		if owner := s.owners[d.Device]; !d.AdminAccess && owner != nil && owner.ClaimUID == rec.ClaimUID {
			delete(s.owners, d.Device)
		}
	}
}

// PreparedClaims returns the UIDs of the prepared claims, sorted.
func (s *State) PreparedClaims() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	uids := make([]string, 0, len(s.records))
	for uid := range s.records {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	return uids
}

// Prepare prepares the devices allocated to claim by this driver and returns
// their CDI device IDs. See the package contracts.
func (s *State) Prepare(ctx context.Context, claim *resourceapi.ResourceClaim) ([]kubeletplugin.Device, error) {
	ref := claimRef(claim.Namespace, claim.Name, claim.UID)
	uid := string(claim.UID)
	if err := checkpoint.ValidateClaimUID(uid); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if claim.Status.Allocation == nil {
		return nil, fmt.Errorf("%s: the claim is not allocated: the scheduler allocates it before the kubelet prepares it", ref)
	}
	unlock := s.claims.Lock(uid)
	defer unlock()
	logger := klog.FromContext(ctx).WithValues("claim", klog.KObj(claim), "claimUID", uid)

	wanted, err := s.devicesFor(claim, ref)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	existing := s.records[uid]
	s.mu.Unlock()
	if existing != nil {
		if sameDevices(existing.Devices, wanted) {
			if err := s.ensureSpec(ctx, existing); err != nil {
				return nil, fmt.Errorf("%s: %w", ref, err)
			}
			logger.V(4).Info("Claim already prepared")
			return s.result(existing), nil
		}
		// The claim was re-allocated since it was prepared: start over.
		logger.Info("Prepared devices differ from the claim's allocation, preparing again", "prepared", deviceNames(existing.Devices), "allocated", deviceNames(wanted))
		if err := s.unprepareLocked(ctx, existing); err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
	}

	rec := &checkpoint.ClaimRecord{
		BootID:      s.opts.BootID,
		DriverName:  s.opts.DriverName,
		ClaimUID:    uid,
		Namespace:   claim.Namespace,
		Name:        claim.Name,
		PreparedAt:  s.opts.Now().UTC(),
		Devices:     wanted,
		CDISpecName: s.opts.Naming.SpecFileName(uid),
	}
	if err := s.reserve(rec, ref); err != nil {
		return nil, err
	}
	if err := s.persist(ctx, rec); err != nil {
		s.mu.Lock()
		s.releaseLocked(rec)
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	s.mu.Lock()
	s.records[uid] = rec
	s.mu.Unlock()
	logger.V(2).Info("Prepared claim", "devices", deviceNames(rec.Devices))
	return s.result(rec), nil
}

// persist records a newly prepared claim, applies its sharing settings and
// writes its spec. It returns once all of it is durable; on failure it undoes
// what it did, so that a failed prepare leaves nothing behind.
//
// A claim with sharing settings is recorded before they are applied: the
// record is what lets Unprepare, and Reconcile after a crash, undo them. A
// claim without them changes nothing but its two files, so its record and
// spec are written concurrently and the two fsyncs overlap.
func (s *State) persist(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	uid := rec.ClaimUID
	c, err := s.sharingClaim(rec)
	if err != nil {
		return err
	}
	if sharing.UsesSharing(c) {
		if err := s.opts.Checkpoints.Put(rec); err != nil {
			return err
		}
		spec, err := s.buildSpecFor(ctx, rec, c)
		if err == nil {
			err = s.opts.Specs.Write(uid, spec)
		}
		if err != nil {
			return errors.Join(err, s.rollback(ctx, rec))
		}
		return nil
	}
	spec, err := s.buildSpecFor(ctx, rec, c)
	if err != nil {
		return err
	}
	specErr := make(chan error, 1)
	go func() { specErr <- s.opts.Specs.Write(uid, spec) }()
	err = s.opts.Checkpoints.Put(rec)
	if err = errors.Join(err, <-specErr); err != nil {
		return errors.Join(err, s.rollback(ctx, rec))
	}
	return nil
}

// rollback undoes a persist that failed half-way: spec, sharing settings,
// record, in the order of unprepareLocked; each step is idempotent.
func (s *State) rollback(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	var errs []error
	if err := s.opts.Specs.Remove(rec.ClaimUID); err != nil {
		errs = append(errs, err)
	}
	if err := s.undoSharing(ctx, rec); err != nil {
		errs = append(errs, err)
	}
	if err := s.opts.Checkpoints.Delete(rec.ClaimUID); err != nil {
		errs = append(errs, fmt.Errorf("removing the claim from the checkpoint: %w", err))
	}
	return errors.Join(errs...)
}

// Unprepare undoes Prepare for the claim with the given UID; an unknown
// claim is not an error.
func (s *State) Unprepare(ctx context.Context, namespace, name string, claimUID types.UID) error {
	uid := string(claimUID)
	if err := checkpoint.ValidateClaimUID(uid); err != nil {
		// Such a claim can never have been prepared.
		return nil
	}
	unlock := s.claims.Lock(uid)
	defer unlock()
	s.mu.Lock()
	rec := s.records[uid]
	s.mu.Unlock()
	if rec == nil {
		// Not prepared, or prepared by a plugin version that crashed before
		// recording it: make sure no spec stays behind.
		if err := s.opts.Specs.Remove(uid); err != nil {
			return fmt.Errorf("%s: %w", claimRef(namespace, name, claimUID), err)
		}
		return nil
	}
	if err := s.unprepareLocked(ctx, rec); err != nil {
		return fmt.Errorf("%s: %w", claimRef(namespace, name, claimUID), err)
	}
	klog.FromContext(ctx).V(2).Info("Unprepared claim", "claim", klog.KRef(namespace, name), "claimUID", uid)
	return nil
}

// unprepareLocked removes the spec, undoes the sharing settings, then
// removes the record and the reservation; without sharing settings it
// removes the spec and the record concurrently (the two fsyncs overlap).
// Either way a failure leaves a state a repeated Unprepare completes. The
// caller holds the claim's lock.
func (s *State) unprepareLocked(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	if c, err := s.sharingClaim(rec); err == nil && !sharing.UsesSharing(c) {
		// Nothing to undo between the two removals: they run at once.
		specErr := make(chan error, 1)
		go func() { specErr <- s.opts.Specs.Remove(rec.ClaimUID) }()
		err := s.opts.Checkpoints.Delete(rec.ClaimUID)
		if err != nil {
			err = fmt.Errorf("removing the claim from the checkpoint: %w", err)
		}
		if err = errors.Join(<-specErr, err); err != nil {
			return err
		}
	} else {
		if err := s.opts.Specs.Remove(rec.ClaimUID); err != nil {
			return err
		}
		if err := s.undoSharing(ctx, rec); err != nil {
			return err
		}
		if err := s.opts.Checkpoints.Delete(rec.ClaimUID); err != nil {
			return fmt.Errorf("removing the claim from the checkpoint: %w", err)
		}
	}
	s.mu.Lock()
	s.releaseLocked(rec)
	delete(s.records, rec.ClaimUID)
	s.mu.Unlock()
	return nil
}

// reserve takes the exclusive devices of rec for its claim, or fails
// without taking any when one is held by another claim.
func (s *State) reserve(rec *checkpoint.ClaimRecord, ref string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range rec.Devices {
		if d.AdminAccess {
			continue
		}
		if holder := s.owners[d.Device]; holder != nil && holder.ClaimUID != rec.ClaimUID {
			other := claimRef(holder.Namespace, holder.Name, types.UID(holder.ClaimUID))
			return fmt.Errorf("%s: device %s (GPU %s) is already prepared for %s: a GPU is given to one claim at a time; "+
				"share it by referencing the same ResourceClaim from several pods, or wait until the other claim's pods are gone",
				ref, d.Device, d.UUID, other)
		}
	}
	s.reserveLocked(rec)
	return nil
}

// devicesFor validates the claim's allocation results of this driver and
// resolves their configs.
func (s *State) devicesFor(claim *resourceapi.ResourceClaim, ref string) ([]checkpoint.PreparedDevice, error) {
	if err := checkConfigRequests(claim, s.opts.DriverName); err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	configs, err := opaqueconfig.Resolve(claim, s.opts.DriverName, s.deviceTypeOption())
	if err != nil {
		return nil, err
	}
	var out []checkpoint.PreparedDevice
	for i, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver != s.opts.DriverName {
			continue
		}
		if r.Pool != s.opts.PoolName {
			return nil, fmt.Errorf("%s: request %q was allocated device %s of pool %q, but this node's pool is %q: "+
				"the claim was allocated for another node; delete the pod so that the scheduler allocates it again", ref, r.Request, r.Device, r.Pool, s.opts.PoolName)
		}
		dev, ok := s.devices[r.Device]
		if !ok {
			return nil, fmt.Errorf("%s: request %q was allocated device %q, which this node does not have (it has %s): "+
				"the ResourceSlice the scheduler used is stale; delete the pod so that the claim is allocated again", ref, r.Request, r.Device, s.deviceList())
		}
		pd := checkpoint.PreparedDevice{
			Requests:    []string{r.Request},
			Pool:        r.Pool,
			Device:      r.Device,
			UUID:        dev.UUID,
			AdminAccess: r.AdminAccess != nil && *r.AdminAccess,
		}
		pd.CDIDeviceIDs = []string{s.opts.Naming.DeviceID(string(claim.UID), r.Device)}
		if eff, ok := configs[i]; ok && eff.Config != nil {
			raw, err := json.Marshal(eff.Config)
			if err != nil {
				return nil, fmt.Errorf("%s: device %s: encoding its config: %w", ref, r.Device, err)
			}
			pd.Config = raw
		}
		out = append(out, pd)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no device of driver %s is allocated to the claim: the kubelet should not have asked this driver to prepare it", ref, s.opts.DriverName)
	}
	return out, nil
}

// buildSpec applies the claim's sharing settings (idempotent) and assembles
// the claim's CDI spec from its record with the sharing edits; it is the
// only producer of claim specs, so Prepare and Reconcile write identical
// specs.
func (s *State) buildSpec(ctx context.Context, rec *checkpoint.ClaimRecord) (*specs.Spec, error) {
	c, err := s.sharingClaim(rec)
	if err != nil {
		return nil, err
	}
	return s.buildSpecFor(ctx, rec, c)
}

// buildSpecFor is buildSpec with the record's sharing view already built.
func (s *State) buildSpecFor(ctx context.Context, rec *checkpoint.ClaimRecord, c sharing.Claim) (*specs.Spec, error) {
	shared, err := s.applySharing(ctx, c)
	if err != nil {
		return nil, err
	}
	var devs []cdi.ClaimDevice
	seen := map[string]bool{}
	for _, d := range rec.Devices {
		if seen[d.Device] {
			continue
		}
		seen[d.Device] = true
		edits, err := s.opts.Edits.Device(d.UUID)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.Device, err)
		}
		if extra, ok := shared.Devices[d.Device]; ok {
			edits = withSharingEdits(edits, sharing.Edits{Claim: extra})
		}
		devs = append(devs, cdi.ClaimDevice{Name: d.Device, Edits: edits})
	}
	return cdi.ClaimSpec(s.opts.Naming, rec.ClaimUID, withSharingEdits(s.opts.Edits.Common(), shared), devs)
}

// ensureSpec re-creates the claim's spec when it went missing, applying
// the claim's sharing settings again (a reboot wipes them with the spec).
func (s *State) ensureSpec(ctx context.Context, rec *checkpoint.ClaimRecord) error {
	ok, err := s.opts.Specs.Exists(rec.ClaimUID)
	if err != nil || ok {
		return err
	}
	spec, err := s.buildSpec(ctx, rec)
	if err != nil {
		return err
	}
	return s.opts.Specs.Write(rec.ClaimUID, spec)
}

func (s *State) result(rec *checkpoint.ClaimRecord) []kubeletplugin.Device {
	out := make([]kubeletplugin.Device, 0, len(rec.Devices))
	for _, d := range rec.Devices {
		out = append(out, kubeletplugin.Device{
			Requests:     append([]string(nil), d.Requests...),
			PoolName:     d.Pool,
			DeviceName:   d.Device,
			CDIDeviceIDs: append([]string(nil), d.CDIDeviceIDs...),
		})
	}
	return out
}

func (s *State) deviceList() string {
	names := make([]string, 0, len(s.devices))
	for n := range s.devices {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Sprint(names)
}

func sameDevices(a, b []checkpoint.PreparedDevice) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Device != b[i].Device || a[i].Pool != b[i].Pool || a[i].AdminAccess != b[i].AdminAccess ||
			fmt.Sprint(a[i].Requests) != fmt.Sprint(b[i].Requests) {
			return false
		}
	}
	return true
}

func deviceNames(devs []checkpoint.PreparedDevice) []string {
	out := make([]string, 0, len(devs))
	for _, d := range devs {
		out = append(out, d.Device)
	}
	return out
}

func claimRef(namespace, name string, uid types.UID) string {
	return fmt.Sprintf("claim %s/%s (uid %s)", namespace, name, uid)
}

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
//   - A recorded claim that no kubelet can use any more (gone from the API
//     server, or no longer allocated on this node) does not hold its
//     devices for good: a prepare that needs one of them, and SweepStale,
//     unprepare it once the API server confirms it (see stale.go). A claim
//     that exists with the recorded UID and an allocation on this node is
//     never touched.
package claimstate

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/specs-go"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/opaqueconfig"
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
	// Devices are the node's preparable devices, by the names the
	// ResourceSlices publish (devices.FromInventory). Required.
	Devices *devices.Set
	// Edits gives each device's container edits, by its UUID (a GPU's or
	// a MIG device's).
	Edits EditsSource
	// Specs is the CDI spec directory.
	Specs *cdi.SpecDir
	// Naming is the CDI naming of DriverName.
	Naming cdi.Naming
	// UseDriverSpec makes the specs of newly prepared claims hold only the
	// claim's own edits: each of their devices gets the CDI IDs
	// Naming.DeviceIDs (the driver-wide spec's device, then the claim's),
	// and the driver-wide edits come from the driver-wide spec
	// (cdi.DriverSpec of Edits.Common()), which the caller writes into
	// Specs before New (SpecDir.WriteDriverSpec) so that it is current.
	// Whatever the option, a claim keeps the format it was recorded with
	// (its recorded CDI IDs tell it): a claim recorded with the driver
	// device's ID gets its spec only after the State made sure that the
	// driver-wide spec exists (SpecDir.EnsureDriverSpec), and one recorded
	// without it (by a plugin from before the driver spec, or with the
	// option off) a self-contained spec, so that its recorded IDs stay
	// complete.
	UseDriverSpec bool
	// DeviceSpec is the static device spec (StaticDeviceSpec), which the
	// caller writes into Specs before New (SpecDir.WriteDeviceSpec); nil
	// for none. With UseDriverSpec, a newly prepared claim all of whose
	// devices are in it and have nothing of the claim's own (no config
	// with container edits or node settings, no share with limits, no
	// dynamic MIG device) gets no spec at all: its devices get the IDs
	// Naming.StaticDeviceIDs, and its prepare and unprepare write only its
	// record, causing no event in the CDI directory. Such a claim keeps
	// that format for as long as it is recorded (its recorded IDs tell it);
	// the State makes sure that the driver-wide and device specs exist
	// (EnsureDriverSpec, EnsureDeviceSpec) before it returns those IDs.
	DeviceSpec *specs.Spec
	// Checkpoints stores the prepared claims.
	Checkpoints *checkpoint.Store
	// BootID identifies the current boot (checkpoint.ReadBootID).
	BootID string
	// Now returns the current time; defaults to time.Now.
	Now func() time.Time
	// Sharing applies the claims' sharing settings (time-slicing, MPS);
	// see sharing.go. Required: a node without any sharing strategy
	// passes sharing.Composite{}, which fails the prepare of a claim that
	// asks for one with an error that says so.
	Sharing sharing.Applier
	// LookupClaim, when set, reads a claim from the API server (a quorum
	// read, not a cache); a nil claim or an error for which
	// apierrors.IsNotFound is true means that the claim does not exist.
	// It lets the State unprepare recorded claims that no kubelet can use
	// any more (see stale.go): when a prepare finds a device held by such
	// a claim, and in SweepStale. Without it, only Unprepare removes a
	// record.
	LookupClaim func(ctx context.Context, namespace, name string) (*resourceapi.ResourceClaim, error)
	// OnStaleClaim, when set, is told of every stale claim the State
	// unprepared (for events and metrics). It is called without any of
	// the State's locks held, but may delay the prepare that found the
	// claim.
	OnStaleClaim func(ctx context.Context, c StaleClaim)
	// MIG creates and destroys the dynamic MIG devices (devices.Device
	// Dynamic) and switches partitionable GPUs out of MIG mode; see
	// mig.go. Nil on a node without dynamic MIG: a claim of such a device
	// then fails. Edits must then implement MIGEditsSource.
	MIG MIGDevices
	// ComputeShares is the share count of the GPUs' "shares" capacity
	// (consumable capacity with a share count); 0 when the slices publish
	// none. A share's compute limit is its consumed shares of it.
	ComputeShares int64
}

// State is the node's prepared claims. Create it with New.
type State struct {
	opts   Options
	claims *keyedMutex
	// driverSpec is the driver-wide spec, built once from Edits.Common().
	driverSpec func() (*specs.Spec, error)
	// staticDevices names the devices of Options.DeviceSpec.
	staticDevices map[string]bool

	mu sync.Mutex
	// prepared holds the prepared claims by UID.
	prepared map[string]*preparedClaim
	// recording holds, by UID, the claims with sharing settings whose
	// Prepare has made their record durable but has not returned yet
	// (see persist). A UID is in prepared or recording, never both.
	recording map[string]*preparedClaim
	// owners maps a device name to the claim holding it exclusively
	// (prepared or being prepared).
	owners map[string]*checkpoint.ClaimRecord
	// intents holds, by UID, the loaded records of prepares that a crash
	// interrupted while making their dynamic MIG devices (see mig.go):
	// never prepared, rolled back by Reconcile (or by a new Prepare of the
	// claim). Their devices stay reserved until then.
	intents map[string]*checkpoint.ClaimRecord
	// shares maps a device name to the claims holding a share of it, by
	// UID (see shares.go); a device is in owners or in shares, never both.
	shares map[string]map[string]*checkpoint.ClaimRecord
	// undone holds, by UID, the claims whose sharing settings are being
	// undone or were undone while their record remains: SharingClaims
	// leaves them out, so that two claims undone at once do not each keep
	// a shared setting (a time slice, a GPU's MPS daemon) for the other.
	// An Apply of the claim takes it out again.
	undone map[string]bool
}

// preparedClaim is a claim as the State keeps it in memory: its checkpoint
// record and its sharing view, built once, from the resolved configs when
// Prepare records the claim or from the record when New loads it. It is
// never modified once built: a change (adoptIntoBoot) builds a new one.
type preparedClaim struct {
	rec *checkpoint.ClaimRecord
	// sharing is the claim's devices with their decoded, normalized
	// configs, as the sharing appliers see them.
	sharing sharing.Claim
	// configErr, set only for a loaded record, says why a recorded config
	// cannot be decoded; sharing then has that device without config.
	// Every step that needs the claim's sharing settings (writing its
	// spec, undoing them) fails with it.
	configErr error
}

// New loads the checkpoint. Records that cannot be read are returned as
// load errors to report, not as a failure: one bad file never stops the
// plugin from serving the other claims.
func New(ctx context.Context, opts Options) (*State, []checkpoint.LoadError, error) {
	if opts.Devices == nil {
		return nil, nil, errors.New("claim state: Options.Devices is nil: pass the node's preparable devices (devices.FromInventory)")
	}
	if opts.Sharing == nil {
		return nil, nil, errors.New("claim state: Options.Sharing is nil: pass the node's sharing applier (sharing.Composite{} when no strategy is available)")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &State{
		opts:      opts,
		claims:    newKeyedMutex(),
		prepared:  map[string]*preparedClaim{},
		recording: map[string]*preparedClaim{},
		owners:    map[string]*checkpoint.ClaimRecord{},
		intents:   map[string]*checkpoint.ClaimRecord{},
		shares:    map[string]map[string]*checkpoint.ClaimRecord{},
		undone:    map[string]bool{},
	}
	s.driverSpec = sync.OnceValues(func() (*specs.Spec, error) { return cdi.DriverSpec(opts.Naming, opts.Edits.Common()) })
	if opts.DeviceSpec != nil && opts.UseDriverSpec {
		s.staticDevices = make(map[string]bool, len(opts.DeviceSpec.Devices))
		for _, d := range opts.DeviceSpec.Devices {
			s.staticDevices[d.Name] = true
		}
	}
	records, loadErrs, err := opts.Checkpoints.List()
	if err != nil {
		return nil, nil, fmt.Errorf("loading the claim checkpoint: %w", err)
	}
	for _, rec := range records {
		if rec.DriverName != "" && rec.DriverName != opts.DriverName {
			continue
		}
		if hasIntent(rec) {
			s.intents[rec.ClaimUID] = rec
		} else {
			s.prepared[rec.ClaimUID] = s.loadedClaim(rec)
		}
		s.reserveLocked(rec)
	}
	klog.FromContext(ctx).V(2).Info("Loaded claim checkpoint", "claims", len(s.prepared), "unreadable", len(loadErrs))
	return s, loadErrs, nil
}

// reserveLocked marks the devices of rec as held by its claim: exclusively,
// or as a share.
func (s *State) reserveLocked(rec *checkpoint.ClaimRecord) {
	for _, d := range rec.Devices {
		switch {
		case d.AdminAccess:
		case d.Share != nil:
			if s.shares[d.Device] == nil {
				s.shares[d.Device] = map[string]*checkpoint.ClaimRecord{}
			}
			s.shares[d.Device][rec.ClaimUID] = rec
		default:
			s.owners[d.Device] = rec
		}
	}
}

func (s *State) releaseLocked(rec *checkpoint.ClaimRecord) {
	for _, d := range rec.Devices {
		if d.AdminAccess {
			continue
		}
		if owner := s.owners[d.Device]; owner != nil && owner.ClaimUID == rec.ClaimUID {
			delete(s.owners, d.Device)
		}
		if holders := s.shares[d.Device]; holders[rec.ClaimUID] == rec {
			delete(holders, rec.ClaimUID)
			if len(holders) == 0 {
				delete(s.shares, d.Device)
			}
		}
	}
}

// PreparedClaims returns the UIDs of the prepared claims, sorted.
func (s *State) PreparedClaims() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	uids := make([]string, 0, len(s.prepared))
	for uid := range s.prepared {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	return uids
}

// SharingClaims returns the sharing view of the recorded claims that have
// sharing settings: the prepared ones and those whose Prepare has recorded
// them but not returned yet. A claim is among them from the moment its
// record is durable (before its settings are applied) until its record is
// deleted (after they are undone). They are ordered by prepare time, oldest
// first, then by UID. The Claims share memory with the State and must not
// be modified. It takes only the State's own short-held mutex, so sharing
// appliers may call it from Apply or Undo (timeslicing.Options.Claims).
func (s *State) SharingClaims() []sharing.Claim {
	s.mu.Lock()
	pcs := make([]*preparedClaim, 0, len(s.prepared)+len(s.recording))
	for _, m := range []map[string]*preparedClaim{s.prepared, s.recording} {
		for uid, pc := range m {
			if sharing.UsesSharing(pc.sharing) && !s.undone[uid] {
				pcs = append(pcs, pc)
			}
		}
	}
	s.mu.Unlock()
	slices.SortFunc(pcs, func(a, b *preparedClaim) int {
		if c := a.rec.PreparedAt.Compare(b.rec.PreparedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.rec.ClaimUID, b.rec.ClaimUID)
	})
	out := make([]sharing.Claim, 0, len(pcs))
	for _, pc := range pcs {
		out = append(out, pc.sharing)
	}
	return out
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

	wanted, shared, err := s.devicesFor(claim, ref)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	existing := s.prepared[uid]
	intent := s.intents[uid]
	s.mu.Unlock()
	if intent != nil {
		if err := s.rollBackIntent(ctx, intent); err != nil {
			return nil, fmt.Errorf("%s: rolling back its interrupted prepare: %w", ref, err)
		}
	}
	if existing != nil {
		if sameDevices(existing.rec.Devices, wanted) {
			if err := s.ensureSpec(ctx, existing); err != nil {
				return nil, fmt.Errorf("%s: %w", ref, err)
			}
			logger.V(4).Info("Claim already prepared")
			return s.result(existing.rec), nil
		}
		// The claim was re-allocated since it was prepared: start over.
		logger.Info("Prepared devices differ from the claim's allocation, preparing again", "prepared", deviceNames(existing.rec.Devices), "allocated", deviceNames(wanted))
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
	pc := &preparedClaim{rec: rec, sharing: sharing.Claim{UID: uid, Namespace: claim.Namespace, Name: claim.Name, Devices: shared}}
	if err := s.reserveFreeingStale(ctx, rec, claim, ref); err != nil {
		return nil, err
	}
	if err := s.persist(ctx, pc); err != nil {
		s.mu.Lock()
		s.releaseLocked(rec)
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	s.mu.Lock()
	s.prepared[uid] = pc
	delete(s.recording, uid)
	s.mu.Unlock()
	logger.V(2).Info("Prepared claim", "devices", deviceNames(rec.Devices))
	return s.result(rec), nil
}

// persist records a newly prepared claim, applies its sharing settings and
// writes its spec. It returns once all of it is durable; on failure it undoes
// what it did, so that a failed prepare leaves nothing behind.
//
// A claim with sharing settings is recorded before they are applied: the
// record is what lets Unprepare, and Reconcile after a crash, undo them.
// From then on it is in s.recording, so that the appliers count it among
// the recorded claims (SharingClaims) while its prepare goes on. A claim
// without them changes nothing but its two files, so its record and spec
// are written concurrently and the two fsyncs overlap.
func (s *State) persist(ctx context.Context, pc *preparedClaim) error {
	rec := pc.rec
	uid := rec.ClaimUID
	if err := s.useWhole(ctx, rec); err != nil {
		return err
	}
	if !s.needsClaimSpec(rec) {
		// Nothing of the claim's own: the record is all there is to write.
		if err := s.ensureStaticSpecs(); err != nil {
			return err
		}
		return s.opts.Checkpoints.Put(rec)
	}
	if dynamic := hasDynamicMIG(rec); dynamic || sharing.UsesSharing(pc.sharing) {
		// With dynamic MIG devices this first record is their intent.
		if err := s.opts.Checkpoints.Put(rec); err != nil {
			return err
		}
		s.mu.Lock()
		s.recording[uid] = pc
		s.mu.Unlock()
		err := s.createMIG(ctx, pc)
		var spec *specs.Spec
		if err == nil {
			spec, err = s.buildSpec(ctx, pc)
		}
		if err == nil && dynamic {
			// The spec and the record with the created devices at once: a
			// crash between them leaves the devices, which Reconcile then
			// keeps (see mig.go).
			specErr := make(chan error, 1)
			go func() { specErr <- s.opts.Specs.Write(uid, spec) }()
			err = errors.Join(s.opts.Checkpoints.Put(rec), <-specErr)
		} else if err == nil {
			err = s.opts.Specs.Write(uid, spec)
		}
		if err != nil {
			return errors.Join(err, s.rollback(ctx, pc))
		}
		return nil
	}
	spec, err := s.buildSpec(ctx, pc)
	if err != nil {
		return err
	}
	specErr := make(chan error, 1)
	go func() { specErr <- s.opts.Specs.Write(uid, spec) }()
	err = s.opts.Checkpoints.Put(rec)
	if err = errors.Join(err, <-specErr); err != nil {
		return errors.Join(err, s.rollback(ctx, pc))
	}
	return nil
}

// rollback undoes a persist that failed half-way: spec, sharing settings,
// record, in the order of unprepareLocked; each step is idempotent. The
// claim stays in s.recording for as long as its record may exist.
func (s *State) rollback(ctx context.Context, pc *preparedClaim) error {
	uid := pc.rec.ClaimUID
	var errs []error
	if err := s.opts.Specs.Remove(uid); err != nil {
		errs = append(errs, err)
	}
	if err := s.undoSharing(ctx, pc); err != nil {
		errs = append(errs, err)
	}
	if err := s.destroyMIG(ctx, pc.rec); err != nil {
		// The record stays: it names the instances left to destroy.
		return errors.Join(append(errs, err)...)
	}
	if err := s.opts.Checkpoints.Delete(uid); err != nil {
		errs = append(errs, fmt.Errorf("removing the claim from the checkpoint: %w", err))
	} else {
		s.mu.Lock()
		delete(s.recording, uid)
		delete(s.undone, uid)
		s.mu.Unlock()
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
	pc := s.prepared[uid]
	s.mu.Unlock()
	if pc == nil {
		// Not prepared, or prepared by a plugin version that crashed before
		// recording it: make sure no spec stays behind.
		if err := s.opts.Specs.Remove(uid); err != nil {
			return fmt.Errorf("%s: %w", claimRef(namespace, name, claimUID), err)
		}
		return nil
	}
	if err := s.unprepareLocked(ctx, pc); err != nil {
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
func (s *State) unprepareLocked(ctx context.Context, pc *preparedClaim) error {
	rec := pc.rec
	if pc.configErr == nil && !s.needsClaimSpec(rec) {
		// No spec, nothing to undo: the record is all there is to remove.
		if err := s.opts.Checkpoints.Delete(rec.ClaimUID); err != nil {
			return fmt.Errorf("removing the claim from the checkpoint: %w", err)
		}
	} else if pc.configErr == nil && !sharing.UsesSharing(pc.sharing) && !hasDynamicMIG(rec) {
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
		if err := s.undoSharing(ctx, pc); err != nil {
			return err
		}
		if err := s.destroyMIG(ctx, rec); err != nil {
			return err
		}
		if err := s.opts.Checkpoints.Delete(rec.ClaimUID); err != nil {
			return fmt.Errorf("removing the claim from the checkpoint: %w", err)
		}
	}
	s.mu.Lock()
	s.releaseLocked(rec)
	delete(s.prepared, rec.ClaimUID)
	delete(s.undone, rec.ClaimUID)
	s.mu.Unlock()
	return nil
}

// conflict is a device that a claim wants and another claim holds.
type conflict struct {
	device checkpoint.PreparedDevice
	holder *checkpoint.ClaimRecord
	// capacity, when set, says which capacity of a shared GPU the
	// other claims' shares leave too little of.
	capacity string
}

// err is the error of a prepare refused because of the conflict; ref names
// the claim being prepared.
func (c *conflict) err(ref string) error {
	other := claimRef(c.holder.Namespace, c.holder.Name, types.UID(c.holder.ClaimUID))
	if c.capacity != "" {
		return fmt.Errorf("%s: the share of device %s (GPU %s) does not fit beside the shares already prepared, %s: "+
			"the scheduler allocated more than the GPU holds (a stale ResourceSlice or a claim that was never unprepared); "+
			"delete the pod so that the claim is allocated again", ref, c.device.Device, c.device.UUID, c.capacity)
	}
	if c.device.Share != nil || holdsShare(c.holder, c.device.Device) {
		return fmt.Errorf("%s: device %s (GPU %s) is prepared for %s, and a GPU is used either by one claim or as shares, not both: "+
			"wait until the other claim's pods are gone, or ask both claims for shares (capacity requests)", ref, c.device.Device, c.device.UUID, other)
	}
	return fmt.Errorf("%s: device %s (GPU %s) is already prepared for %s: a GPU is given to one claim at a time; "+
		"share it by referencing the same ResourceClaim from several pods, or wait until the other claim's pods are gone",
		ref, c.device.Device, c.device.UUID, other)
}

// reserve takes the exclusive devices of rec for its claim, or returns the
// first one held by another claim without taking any.
func (s *State) reserve(rec *checkpoint.ClaimRecord) *conflict {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range rec.Devices {
		if d.AdminAccess {
			continue
		}
		if d.Share != nil {
			if c := s.shareConflictLocked(rec, d); c != nil {
				return c
			}
			continue
		}
		if holder := s.owners[d.Device]; holder != nil && holder.ClaimUID != rec.ClaimUID {
			return &conflict{device: d, holder: holder}
		}
		if c := s.exclusiveConflictLocked(rec, d); c != nil {
			return c
		}
		for name, holder := range s.owners {
			if holder.ClaimUID != rec.ClaimUID && name != d.Device && s.overlaps(name, d.Device) {
				return &conflict{device: d, holder: holder}
			}
		}
	}
	s.reserveLocked(rec)
	return nil
}

// devicesFor validates the claim's allocation results of this driver and
// resolves their configs. It returns the devices to record, each with its
// config as JSON, and the same devices as the sharing appliers see them,
// with the resolved configs themselves.
func (s *State) devicesFor(claim *resourceapi.ResourceClaim, ref string) ([]checkpoint.PreparedDevice, []sharing.Device, error) {
	if err := checkConfigRequests(claim, s.opts.DriverName); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ref, err)
	}
	configs, err := opaqueconfig.Resolve(claim, s.opts.DriverName, s.deviceTypeOption())
	if err != nil {
		return nil, nil, err
	}
	var (
		out    []checkpoint.PreparedDevice
		shared []sharing.Device
	)
	for i, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver != s.opts.DriverName {
			continue
		}
		if r.Pool != s.opts.PoolName {
			return nil, nil, fmt.Errorf("%s: request %q was allocated device %s of pool %q, but this node's pool is %q: "+
				"the claim was allocated for another node; delete the pod so that the scheduler allocates it again", ref, r.Request, r.Device, r.Pool, s.opts.PoolName)
		}
		dev, ok := s.opts.Devices.Get(r.Device)
		if u, unusable := s.opts.Devices.Unusable(r.Device); !ok && unusable {
			return nil, nil, fmt.Errorf("%s: request %q was allocated device %s, which is %s: NVML cannot use it (%v), so it is published tainted and cannot be prepared: "+
				"delete the pod so that the claim is allocated another device, and %s", ref, r.Request, r.Device, u, u.Err, u.Fix())
		}
		if !ok {
			return nil, nil, fmt.Errorf("%s: request %q was allocated device %q, which this node does not have (it has %s): "+
				"the ResourceSlice the scheduler used is stale; delete the pod so that the claim is allocated again", ref, r.Request, r.Device, s.deviceList())
		}
		pd := checkpoint.PreparedDevice{
			Requests:    []string{r.Request},
			Pool:        r.Pool,
			Device:      r.Device,
			UUID:        dev.UUID,
			AdminAccess: r.AdminAccess != nil && *r.AdminAccess,
		}
		if dev.Dynamic != nil {
			pd.MIG = migIntent(dev)
		}
		pd.ShareID, pd.Share = s.shareOf(r, dev)
		sd := s.sharingDevice(pd)
		if eff, ok := configs[i]; ok && eff.Config != nil {
			raw, err := json.Marshal(eff.Config)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: device %s: encoding its config: %w", ref, r.Device, err)
			}
			pd.Config = raw
			cfg, ok := eff.Config.(configapi.Config)
			if !ok {
				return nil, nil, fmt.Errorf("%s: device %s: its config is a %T, not a GpuConfig or MigDeviceConfig", ref, r.Device, eff.Config)
			}
			cfg.Normalize() // after encoding: the record keeps the config as resolved
			sd.Config = cfg
		}
		out = append(out, pd)
		shared = append(shared, sd)
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("%s: no device of driver %s is allocated to the claim: the kubelet should not have asked this driver to prepare it", ref, s.opts.DriverName)
	}
	if err := checkOneShareEach(out, ref); err != nil {
		return nil, nil, err
	}
	static := s.staticDevices != nil && !sharing.UsesSharing(sharing.Claim{Devices: shared})
	for i := range out {
		static = static && s.staticDevices[out[i].Device] && out[i].MIG == nil && out[i].Share == nil && !hasSharingConfig(shared[i].Config)
	}
	for i := range out {
		pd := &out[i]
		switch {
		case static:
			pd.CDIDeviceIDs = s.opts.Naming.StaticDeviceIDs(pd.Device)
		case s.opts.UseDriverSpec:
			pd.CDIDeviceIDs = s.opts.Naming.DeviceIDs(string(claim.UID), pd.Device)
		default:
			pd.CDIDeviceIDs = []string{s.opts.Naming.DeviceID(string(claim.UID), pd.Device)}
		}
	}
	return out, shared, nil
}

// hasSharingConfig tells whether c asks for any sharing strategy, which a
// device of the static device spec cannot carry.
func hasSharingConfig(c configapi.Config) bool {
	switch c := c.(type) {
	case *configapi.GpuConfig:
		return c != nil && c.Sharing != nil
	case *configapi.MigDeviceConfig:
		return c != nil && c.Sharing != nil
	case nil:
		return false
	}
	return true
}

// needsClaimSpec tells whether the claim of rec has a spec of its own: a
// claim prepared with Naming.StaticDeviceIDs has none.
func (s *State) needsClaimSpec(rec *checkpoint.ClaimRecord) bool {
	for _, d := range rec.Devices {
		if s.opts.Naming.NeedsClaimSpec(d.CDIDeviceIDs) {
			return true
		}
	}
	return len(rec.Devices) == 0
}

// ensureStaticSpecs makes sure that the driver-wide and static device specs
// exist, writing a missing one (a wiped CDI directory), before the IDs of
// Naming.StaticDeviceIDs are handed out or reported prepared. Without a
// device spec it fails: such IDs come only from the specs New was given.
func (s *State) ensureStaticSpecs() error {
	if s.opts.DeviceSpec == nil {
		return errors.New("the claim was prepared with the static device CDI spec, but the plugin has none: restart the plugin so that it writes it")
	}
	driverSpec, err := s.driverSpec()
	if err != nil {
		return err
	}
	if err := s.opts.Specs.EnsureDriverSpec(driverSpec); err != nil {
		return err
	}
	return s.opts.Specs.EnsureDeviceSpec(s.opts.DeviceSpec)
}

// buildSpec applies the claim's sharing settings (idempotent) and assembles
// the claim's CDI spec from its record with the sharing edits; it is the
// only producer of claim specs, so Prepare and Reconcile write identical
// specs. The record's CDI IDs choose the format (see
// Options.UseDriverSpec): for a claim whose IDs reference the driver-wide
// spec, buildSpec returns only once that spec exists (writing it if it went
// missing), so that a claim spec written after it never lacks it.
func (s *State) buildSpec(ctx context.Context, pc *preparedClaim) (*specs.Spec, error) {
	if pc.configErr != nil {
		return nil, pc.configErr
	}
	rec := pc.rec
	shared, err := s.applySharing(ctx, pc.sharing)
	if err != nil {
		return nil, err
	}
	var devs []cdi.ClaimDevice
	seen := map[string]bool{}
	usesDriverSpec := false
	for _, d := range rec.Devices {
		usesDriverSpec = usesDriverSpec || s.opts.Naming.UsesDriverSpec(d.CDIDeviceIDs)
		if seen[d.Device] {
			continue
		}
		seen[d.Device] = true
		var edits specs.ContainerEdits
		var err error
		if d.MIG != nil {
			edits, err = s.migEdits(d)
		} else {
			edits, err = s.opts.Edits.Device(d.UUID)
		}
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.Device, err)
		}
		if extra, ok := shared.Devices[d.Device]; ok {
			edits = withSharingEdits(edits, sharing.Edits{Claim: extra})
		}
		devs = append(devs, cdi.ClaimDevice{Name: d.Device, Edits: edits})
	}
	if !usesDriverSpec {
		return cdi.ClaimSpec(s.opts.Naming, rec.ClaimUID, withSharingEdits(s.opts.Edits.Common(), shared), devs)
	}
	spec, err := cdi.ClaimSpecUsingDriverSpec(s.opts.Naming, rec.ClaimUID, shared.Claim, devs)
	if err != nil {
		return nil, err
	}
	driverSpec, err := s.driverSpec()
	if err != nil {
		return nil, err
	}
	if err := s.opts.Specs.EnsureDriverSpec(driverSpec); err != nil {
		return nil, err
	}
	return spec, nil
}

// ensureSpec re-creates the claim's spec when it went missing, applying
// the claim's sharing settings again (a reboot wipes them with the spec).
func (s *State) ensureSpec(ctx context.Context, pc *preparedClaim) error {
	if !s.needsClaimSpec(pc.rec) {
		return s.ensureStaticSpecs()
	}
	ok, err := s.opts.Specs.Exists(pc.rec.ClaimUID)
	if err != nil || ok {
		return err
	}
	spec, err := s.buildSpec(ctx, pc)
	if err != nil {
		return err
	}
	return s.opts.Specs.Write(pc.rec.ClaimUID, spec)
}

func (s *State) result(rec *checkpoint.ClaimRecord) []kubeletplugin.Device {
	out := make([]kubeletplugin.Device, 0, len(rec.Devices))
	for _, d := range rec.Devices {
		kd := kubeletplugin.Device{
			Requests:     append([]string(nil), d.Requests...),
			PoolName:     d.Pool,
			DeviceName:   d.Device,
			CDIDeviceIDs: append([]string(nil), d.CDIDeviceIDs...),
		}
		if d.ShareID != "" {
			id := types.UID(d.ShareID)
			kd.ShareID = &id
		}
		out = append(out, kd)
	}
	return out
}

func (s *State) deviceList() string {
	names := s.opts.Devices.Names()
	sort.Strings(names)
	return fmt.Sprint(names)
}

func sameDevices(a, b []checkpoint.PreparedDevice) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Device != b[i].Device || a[i].Pool != b[i].Pool || a[i].AdminAccess != b[i].AdminAccess || a[i].ShareID != b[i].ShareID ||
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

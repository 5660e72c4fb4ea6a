package claimstate

import (
	"context"
	"errors"
	"fmt"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/checkpoint"
)

// Stale claims. A claim stays recorded until the kubelet unprepares it. A
// kubelet that never does (the plugin was down when the claim's pods went,
// and the kubelet forgot the claim, or the node's kubelet state was wiped)
// leaves a record that holds its devices for good, while the scheduler,
// which sees the claim gone, allocates them to other claims: every prepare
// of those fails. A recorded claim is stale when the API server says that
// no kubelet can use it on this node: it does not exist, the claim of that
// name has another UID (deleted and created again), or it is allocated no
// device of this driver in this node's pool (deallocated: the API server
// deallocates a claim only once no pod reserves it). A claim that exists
// with the recorded UID and an allocation here is never touched, nor is
// one the API server could not be asked about.
//
// Stale records are found two ways: a prepare that finds a wanted device
// held by a prepared claim asks the API server about that claim and, if it
// is stale, unprepares it at once (reserveFreeingStale); SweepStale checks
// every record older than a grace period.

// StaleClaim is a recorded claim that the State unprepared because it was
// stale.
type StaleClaim struct {
	Namespace, Name string
	UID             types.UID
	// Devices are the devices it held.
	Devices    []string
	PreparedAt time.Time
	// Reason says why it is stale, e.g. "it no longer exists in the API
	// server".
	Reason string
	// For is the claim (namespace/name) whose prepare found the stale
	// claim holding Device; empty when SweepStale removed it.
	For    string
	Device string
}

// liveness is what the API server says of a recorded claim.
type liveness int

const (
	// livenessUnknown: the API server could not be asked; the record stays.
	livenessUnknown liveness = iota
	// live: the kubelet may still use the claim; the record stays.
	live
	// gone: no kubelet can use the claim on this node; it is stale.
	gone
)

// livenessOf asks the API server about the claim of rec. For a stale claim
// it says why; livenessUnknown comes with the error. The caller holds the
// claim's lock, so that no prepare of it runs meanwhile.
func (s *State) livenessOf(ctx context.Context, rec *checkpoint.ClaimRecord) (liveness, string, error) {
	if s.opts.LookupClaim == nil {
		return livenessUnknown, "", errors.New("the claim state has no API client (Options.LookupClaim)")
	}
	if rec.Namespace == "" || rec.Name == "" {
		return livenessUnknown, "", errors.New("its record names no claim")
	}
	c, err := s.opts.LookupClaim(ctx, rec.Namespace, rec.Name)
	switch {
	case apierrors.IsNotFound(err) || err == nil && c == nil:
		return gone, "it no longer exists in the API server", nil
	case err != nil:
		return livenessUnknown, "", err
	case string(c.UID) != rec.ClaimUID:
		return gone, fmt.Sprintf("the API server's claim %s/%s has uid %s: the recorded one was deleted", rec.Namespace, rec.Name, c.UID), nil
	case c.Status.Allocation == nil:
		return gone, "it is no longer allocated", nil
	}
	for _, r := range c.Status.Allocation.Devices.Results {
		if r.Driver == s.opts.DriverName && r.Pool == s.opts.PoolName {
			return live, "", nil
		}
	}
	return gone, fmt.Sprintf("it is allocated no device of %s in this node's pool %s", s.opts.DriverName, s.opts.PoolName), nil
}

// reserveFreeingStale reserves the devices of rec (see reserve). When one is
// held by another prepared claim, it asks the API server about that claim
// and, if it is stale, unprepares it and tries again; each holder is asked
// once. A holder being prepared right now, a live one and one the API
// server cannot tell about keep the device: the prepare fails with the
// conflict's error (and, when the API server could not be asked, why).
func (s *State) reserveFreeingStale(ctx context.Context, rec *checkpoint.ClaimRecord, claim *resourceapi.ResourceClaim, ref string) error {
	asked := map[string]bool{}
	for {
		c := s.reserve(rec)
		if c == nil {
			return nil
		}
		if s.opts.LookupClaim == nil || asked[c.holder.ClaimUID] {
			return c.err(ref)
		}
		asked[c.holder.ClaimUID] = true
		retry, note := s.freeStale(ctx, c, claim)
		if note != nil {
			return fmt.Errorf("%w (%s: %v)", c.err(ref), claimRef(c.holder.Namespace, c.holder.Name, types.UID(c.holder.ClaimUID)), note)
		}
		if !retry {
			return c.err(ref)
		}
	}
}

// freeStale unprepares the holder of c's device if it is stale. It tells
// whether the device may be free now (the holder was removed, or let it go
// meanwhile), and, when it keeps the holder for another reason than its
// being live, why. The caller holds the lock of the claim being prepared.
func (s *State) freeStale(ctx context.Context, c *conflict, claim *resourceapi.ResourceClaim) (retry bool, note error) {
	s.mu.Lock()
	pc := s.prepared[c.holder.ClaimUID]
	s.mu.Unlock()
	if pc == nil {
		// Reserved but not prepared: its prepare is running, so the
		// kubelet wants it.
		return false, nil
	}
	sc, retry, note := s.freeStaleLocking(ctx, c)
	if sc != nil {
		sc.For, sc.Device = claim.Namespace+"/"+claim.Name, c.device.Device
		klog.FromContext(ctx).Info("Unprepared a stale claim that held a device of the claim being prepared",
			"staleClaim", klog.KRef(sc.Namespace, sc.Name), "staleClaimUID", sc.UID, "device", sc.Device,
			"claim", klog.KObj(claim), "claimUID", claim.UID, "reason", sc.Reason, "preparedAt", sc.PreparedAt, "devices", sc.Devices)
		s.notifyStale(ctx, *sc)
	}
	return retry, note
}

// freeStaleLocking is freeStale under the holder's lock. No deadlock: a
// claim's lock is taken while another's is held only here, and only for a
// prepared claim, which the claim of a prepare that reached its
// reservation never is (Prepare unprepares a claim before reserving for it).
func (s *State) freeStaleLocking(ctx context.Context, c *conflict) (_ *StaleClaim, retry bool, note error) {
	uid := c.holder.ClaimUID
	unlock := s.claims.Lock(uid)
	defer unlock()
	s.mu.Lock()
	pc := s.prepared[uid]
	owner := s.owners[c.device.Device]
	s.mu.Unlock()
	if pc == nil || owner == nil || owner.ClaimUID != uid {
		// Unprepared meanwhile.
		return nil, true, nil
	}
	lv, reason, err := s.livenessOf(ctx, pc.rec)
	switch lv {
	case livenessUnknown:
		return nil, false, fmt.Errorf("the plugin could not ask the API server whether it still exists: %w", err)
	case live:
		return nil, false, nil
	}
	if err := s.unprepareLocked(ctx, pc); err != nil {
		return nil, false, fmt.Errorf("it is stale (%s), but unpreparing it failed: %w", reason, err)
	}
	sc := staleClaim(pc.rec, reason)
	return &sc, true, nil
}

// SweepStale unprepares the stale recorded claims (see the top of this
// file) and returns them. It leaves alone the records prepared less than
// grace ago (by Options.Now), the claims whose prepare or unprepare runs
// right now, the live ones and those the API server could not be asked
// about; errs names the claims it could neither keep for sure nor remove.
// Without Options.LookupClaim it does nothing.
func (s *State) SweepStale(ctx context.Context, grace time.Duration) (removed []StaleClaim, errs []error) {
	if s.opts.LookupClaim == nil {
		return nil, nil
	}
	now := s.opts.Now()
	for _, uid := range s.PreparedClaims() {
		if err := ctx.Err(); err != nil {
			return removed, append(errs, err)
		}
		// A claim whose lock is taken is being prepared or unprepared:
		// the kubelet is working on it.
		unlock, ok := s.claims.TryLock(uid)
		if !ok {
			continue
		}
		sc, err := s.sweepOne(ctx, uid, now, grace)
		unlock()
		if err != nil {
			errs = append(errs, err)
		}
		if sc != nil {
			klog.FromContext(ctx).Info("Unprepared a stale claim", "staleClaim", klog.KRef(sc.Namespace, sc.Name), "staleClaimUID", sc.UID,
				"reason", sc.Reason, "preparedAt", sc.PreparedAt, "devices", sc.Devices)
			s.notifyStale(ctx, *sc)
			removed = append(removed, *sc)
		}
	}
	return removed, errs
}

// sweepOne unprepares the claim if it is stale and was prepared at least
// grace before now. The caller holds the claim's lock.
func (s *State) sweepOne(ctx context.Context, uid string, now time.Time, grace time.Duration) (*StaleClaim, error) {
	s.mu.Lock()
	pc := s.prepared[uid]
	s.mu.Unlock()
	if pc == nil || now.Sub(pc.rec.PreparedAt) < grace {
		return nil, nil
	}
	ref := claimRef(pc.rec.Namespace, pc.rec.Name, types.UID(uid))
	lv, reason, err := s.livenessOf(ctx, pc.rec)
	switch lv {
	case livenessUnknown:
		return nil, fmt.Errorf("%s: kept: the plugin could not ask the API server whether it still exists: %w", ref, err)
	case live:
		return nil, nil
	}
	if err := s.unprepareLocked(ctx, pc); err != nil {
		return nil, fmt.Errorf("%s: it is stale (%s), but unpreparing it failed: %w", ref, reason, err)
	}
	sc := staleClaim(pc.rec, reason)
	return &sc, nil
}

func staleClaim(rec *checkpoint.ClaimRecord, reason string) StaleClaim {
	return StaleClaim{
		Namespace: rec.Namespace, Name: rec.Name, UID: types.UID(rec.ClaimUID),
		Devices: deviceNames(rec.Devices), PreparedAt: rec.PreparedAt, Reason: reason,
	}
}

func (s *State) notifyStale(ctx context.Context, sc StaleClaim) {
	if s.opts.OnStaleClaim != nil {
		s.opts.OnStaleClaim(ctx, sc)
	}
}

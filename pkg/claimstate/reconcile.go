package claimstate

import (
	"context"
	"fmt"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"k8s.io/klog/v2"
)

// ReconcileReport says what Reconcile changed.
type ReconcileReport struct {
	// SpecsRecreated counts prepared claims whose spec was missing (a tmpfs
	// CDI directory after a reboot) and was written again.
	SpecsRecreated int
	// OrphansRemoved counts specs of this driver that no prepared claim owns.
	OrphansRemoved int
	// FromPreviousBoot counts prepared claims recorded in an earlier boot.
	// They are kept: the kubelet unprepares the claims whose pods are gone
	// and prepares again those it still needs.
	FromPreviousBoot int
	// TempsRemoved counts temporary files of interrupted spec writes.
	TempsRemoved int
	// SharingReapplied counts claims of an earlier boot whose sharing
	// settings (time slice, MPS daemon), lost with the reboot, were applied
	// again.
	SharingReapplied int
	// MIGRolledBack counts claims whose prepare a crash interrupted while
	// making their dynamic MIG devices: their devices, spec and record
	// were removed (the kubelet prepares them again).
	MIGRolledBack int
	// MIGRecreated counts prepared claims whose dynamic MIG devices were
	// gone (a reboot) and were made again.
	MIGRecreated int
	// UnpreparesFinished counts claims whose unprepare a crash
	// interrupted after it destroyed their MIG devices; it was finished.
	UnpreparesFinished int
	// Errors lists what could not be reconciled; each names the claim.
	Errors []error
}

// staleTempAge is the age from which a temporary file of a spec write is
// left over from a crash rather than a write in progress.
const staleTempAge = time.Minute

// Reconcile brings the CDI directory in line with the checkpoint: every
// prepared claim gets its spec, and specs of this driver without a prepared
// claim are deleted. It is safe to run while claims are being prepared.
func (s *State) Reconcile(ctx context.Context) ReconcileReport {
	logger := klog.FromContext(ctx)
	var report ReconcileReport

	s.mu.Lock()
	intents := make([]string, 0, len(s.intents))
	for uid := range s.intents {
		intents = append(intents, uid)
	}
	s.mu.Unlock()
	sort.Strings(intents)
	for _, uid := range intents {
		unlock := s.claims.Lock(uid)
		s.mu.Lock()
		rec := s.intents[uid]
		s.mu.Unlock()
		if rec != nil {
			if err := s.rollBackIntent(ctx, rec); err != nil {
				report.Errors = append(report.Errors, fmt.Errorf("%s: rolling back its interrupted prepare: %w", claimRef(rec.Namespace, rec.Name, types.UID(uid)), err))
			} else {
				report.MIGRolledBack++
			}
		}
		unlock()
	}

	for _, uid := range s.PreparedClaims() {
		unlock := s.claims.Lock(uid)
		s.mu.Lock()
		pc := s.prepared[uid]
		s.mu.Unlock()
		if pc != nil {
			recreated, finished, err := s.ensureMIG(ctx, pc)
			switch {
			case err != nil:
				report.Errors = append(report.Errors, fmt.Errorf("%s: %w", claimRef(pc.rec.Namespace, pc.rec.Name, types.UID(uid)), err))
			case finished:
				report.UnpreparesFinished++
				pc = nil
			case recreated:
				report.MIGRecreated++
				s.mu.Lock()
				pc = s.prepared[uid]
				s.mu.Unlock()
			}
		}
		if pc != nil {
			rec := pc.rec
			if rec.BootID != s.opts.BootID {
				report.FromPreviousBoot++
				reapplied, err := s.adoptIntoBoot(ctx, pc)
				if err != nil {
					report.Errors = append(report.Errors, fmt.Errorf("%s: recording it under the current boot: %w", claimRef(rec.Namespace, rec.Name, types.UID(uid)), err))
				} else if reapplied {
					report.SharingReapplied++
				}
			}
			var exists bool
			var err error
			if s.needsClaimSpec(rec) {
				exists, err = s.opts.Specs.Exists(uid)
			} else {
				// No spec of its own; the specs it references exist.
				exists, err = true, s.ensureStaticSpecs()
			}
			if err == nil && !exists {
				if err = s.ensureSpec(ctx, pc); err == nil {
					report.SpecsRecreated++
					logger.Info("Re-created missing CDI spec of prepared claim", "claim", klog.KRef(rec.Namespace, rec.Name), "claimUID", uid)
				}
			}
			if err != nil {
				report.Errors = append(report.Errors, fmt.Errorf("%s: re-creating its CDI spec: %w", claimRef(rec.Namespace, rec.Name, types.UID(uid)), err))
			}
		}
		unlock()
	}

	// A crash in the middle of a spec write leaves its temporary file; the
	// age spares writes in progress.
	if n, err := s.opts.Specs.RemoveStaleTemps(staleTempAge); err != nil {
		report.Errors = append(report.Errors, err)
	} else {
		report.TempsRemoved = n
	}

	uids, err := s.opts.Specs.ClaimUIDs()
	if err != nil {
		report.Errors = append(report.Errors, err)
		return report
	}
	for _, uid := range uids {
		unlock := s.claims.Lock(uid)
		s.mu.Lock()
		_, prepared := s.prepared[uid]
		s.mu.Unlock()
		if !prepared {
			if err := s.opts.Specs.Remove(uid); err != nil {
				report.Errors = append(report.Errors, err)
			} else {
				report.OrphansRemoved++
				logger.Info("Removed orphaned CDI spec", "claimUID", uid)
			}
		}
		unlock()
	}
	return report
}

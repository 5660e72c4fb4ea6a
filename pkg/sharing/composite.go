package sharing

import (
	"context"
	"errors"
	"fmt"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
)

// Composite is the Applier that the claim state holds: it hands each
// strategy's devices to that strategy's Applier. A nil field means the
// strategy is not available on this node; a claim asking for it fails with
// an error that says so. Composite itself holds no state.
type Composite struct {
	// TimeSlicing applies sharing.strategy TimeSlicing of full GPUs.
	TimeSlicing Applier
	// MPS applies sharing.strategy MPS of GPUs and MIG devices.
	MPS Applier
	// Shares enforces the limits of the claims' shares of GPUs (devices
	// with a Share): one MPS control daemon per shared GPU, and each
	// share's limits in its container. Nil: shares are accounting only
	// (the scheduler keeps their sum within the GPU; nothing stops a
	// container from using more), which Apply allows.
	Shares Applier
}

var _ Applier = Composite{}

// Apply checks that every device's strategy is available, then calls the
// time-slicing applier with the claim's time-slicing devices and the MPS
// applier with its MPS devices, and merges their edits. Each applier sees a
// Claim holding only its own devices; an applier with no device in the
// claim is not called. MIG devices with strategy TimeSlicing need nothing:
// a MIG device's time slice cannot be changed, so they are left out.
func (c Composite) Apply(ctx context.Context, claim Claim) (Edits, error) {
	ts, mps, shares := c.split(claim)
	for _, d := range shares.Devices {
		if d.Strategy() == configapi.MpsStrategy {
			return Edits{}, fmt.Errorf("%s: device %s (%s) is a share of a GPU (its allocation has a share ID) with sharing.strategy %q: "+
				"a share runs on the GPU's own MPS daemon with the limits its allocation consumed; remove the MPS config, "+
				"and request memory and shares in the claim's capacity instead", claim.Ref(), d.Name, d.UUID, configapi.MpsStrategy)
		}
	}
	if len(mps.Devices) > 0 && c.MPS == nil {
		d := mps.Devices[0]
		return Edits{}, fmt.Errorf("%s: device %s (%s): sharing.strategy %q is not available on this node: "+
			"the plugin runs without MPS support; use sharing.strategy %q, or remove the sharing config",
			claim.Ref(), d.Name, d.UUID, configapi.MpsStrategy, configapi.TimeSlicingStrategy)
	}
	if len(ts.Devices) > 0 && c.TimeSlicing == nil {
		d := ts.Devices[0]
		return Edits{}, fmt.Errorf("%s: device %s (%s): sharing.strategy %q is not available on this node: "+
			"the plugin runs without time-slicing support; remove the sharing config, or use sharing.strategy %q",
			claim.Ref(), d.Name, d.UUID, configapi.TimeSlicingStrategy, configapi.MpsStrategy)
	}
	var out Edits
	if len(ts.Devices) > 0 {
		e, err := c.TimeSlicing.Apply(ctx, ts)
		if err != nil {
			return Edits{}, err
		}
		out = out.Merge(e)
	}
	if len(mps.Devices) > 0 {
		e, err := c.MPS.Apply(ctx, mps)
		if err != nil {
			return Edits{}, err
		}
		out = out.Merge(e)
	}
	if len(shares.Devices) > 0 && c.Shares != nil {
		e, err := c.Shares.Apply(ctx, shares)
		if err != nil {
			return Edits{}, err
		}
		out = out.Merge(e)
	}
	return out, nil
}

// Undo calls Undo of every applier that has devices in the claim, also when
// an earlier one fails, and returns all errors joined.
func (c Composite) Undo(ctx context.Context, claim Claim) error {
	ts, mps, shares := c.split(claim)
	var errs []error
	if len(shares.Devices) > 0 && c.Shares != nil {
		errs = append(errs, c.Shares.Undo(ctx, shares))
	}
	if len(mps.Devices) > 0 && c.MPS != nil {
		errs = append(errs, c.MPS.Undo(ctx, mps))
	}
	if len(ts.Devices) > 0 && c.TimeSlicing != nil {
		errs = append(errs, c.TimeSlicing.Undo(ctx, ts))
	}
	return errors.Join(errs...)
}

// split returns the claim's time-slicing devices (full GPUs only), its
// MPS devices and its shares, each as a Claim. A share is only among the
// shares, whatever its strategy.
func (Composite) split(claim Claim) (ts, mps, shares Claim) {
	ts = Claim{UID: claim.UID, Namespace: claim.Namespace, Name: claim.Name}
	mps, shares = ts, ts
	for _, d := range claim.Devices {
		if d.Share != nil {
			shares.Devices = append(shares.Devices, d)
			continue
		}
		switch d.Strategy() {
		case configapi.TimeSlicingStrategy:
			if d.Type != devices.KindMIG {
				ts.Devices = append(ts.Devices, d)
			}
		case configapi.MpsStrategy:
			mps.Devices = append(mps.Devices, d)
		}
	}
	return ts, mps, shares
}

// UsesSharing reports whether any device of the claim needs an Applier:
// strategy MPS, TimeSlicing on a full GPU, or a share.
func UsesSharing(claim Claim) bool {
	ts, mps, shares := Composite{}.split(claim)
	return len(ts.Devices) > 0 || len(mps.Devices) > 0 || len(shares.Devices) > 0
}

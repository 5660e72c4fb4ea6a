package plugin

import (
	"context"

	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/sharing"
	"github.com/gpudra/gpudra/pkg/sharing/timeslicing"
)

// newSharing returns the claim state's sharing Applier: time-slicing through
// the node's time slicer (nvidia-smi on a real node, a state file of the
// mock machine, which the end-to-end suite reads) and mps for MPS (nil: MPS
// is off), and shares for the shares of GPUs (nil: accounting only).
// Without a time slicer (no nvidia-smi), time-slicing is off and
// claims asking for it fail with an error that says so; the plugin still
// serves the others. claims returns the claim state's recorded claims
// (timeslicing.Options.Claims); it is called only from Undo, once the claim
// state exists.
func newSharing(ctx context.Context, cfg Config, n *node.Node, claims func() []sharing.Claim, mps, shares sharing.Applier) sharing.Applier {
	c := sharing.Composite{MPS: mps, Shares: shares}
	if slicer := n.TimeSlicer(ctx, cfg.PluginDataDir()); slicer != nil {
		c.TimeSlicing = timeslicing.New(timeslicing.Options{Slicer: slicer, Claims: claims})
	}
	return c
}

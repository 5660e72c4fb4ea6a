package plugin

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockhost"
	"github.com/gpudra/gpudra/pkg/sharing"
	"github.com/gpudra/gpudra/pkg/sharing/timeslicing"
)

// mockTimeSliceFile is the mock time-slice state of a plugin without a mock
// host root, in its data directory.
const mockTimeSliceFile = "mock-timeslice.json"

// newSharing returns the claim state's sharing Applier: time-slicing
// through nvidia-smi on a real node, through a state file for mock
// backends (timeslicing.StateFilePath under the mock host root, which the
// end-to-end suite reads), and mps for MPS (nil: MPS is off). When
// nvidia-smi cannot be found, time-slicing is off and claims asking for it
// fail with an error that says so; the plugin still serves the others. cfg
// is the Config after Start has resolved the mock host paths.
func newSharing(ctx context.Context, cfg Config, store *checkpoint.Store, mps sharing.Applier) sharing.Applier {
	logger := klog.FromContext(ctx)
	var slicer timeslicing.TimeSlicer
	switch {
	case strings.HasPrefix(cfg.NVMLBackend, "mock:"):
		path := filepath.Join(cfg.PluginDataDir(), mockTimeSliceFile)
		if cfg.MockHostRoot != "" {
			path = timeslicing.StateFilePath(cfg.MockHostRoot)
		}
		slicer = timeslicing.NewStateFile(path)
		logger.Info("Time-slicing recorded in a mock state file", "path", path)
	default:
		smi, err := timeslicing.NewNvidiaSMI(cfg.DriverRoot)
		if err != nil {
			logger.Error(err, "Time-slicing is off")
		} else {
			slicer = smi
		}
	}
	c := sharing.Composite{MPS: mps}
	if slicer != nil {
		c.TimeSlicing = timeslicing.New(timeslicing.Options{Slicer: slicer, Records: store.List, DriverName: cfg.DriverName})
	}
	return c
}

// claimEdits returns the edits source of the claim state: edits, extended
// with the MIG devices of inv. Their capability minors come from the
// driver's mig-minors file; for a mock backend from the mock host's file,
// or, without a mock host, from the layout mockhost would write.
func claimEdits(cfg Config, inv *inventory.Inventory, edits *cdi.Edits) (cdi.DeviceEdits, error) {
	if len(inv.MIGDevices) == 0 {
		return edits, nil
	}
	migs := make([]cdi.MIGDevice, 0, len(inv.MIGDevices))
	for _, m := range inv.MIGDevices {
		migs = append(migs, cdi.MIGDevice{UUID: m.UUID, ParentUUID: m.ParentUUID, ParentMinor: m.ParentMinor,
			GPUInstanceID: m.GPUInstanceID, ComputeInstanceID: m.ComputeInstanceID})
	}
	var (
		out cdi.DeviceEdits
		err error
	)
	switch {
	case !strings.HasPrefix(cfg.NVMLBackend, "mock:"):
		out, err = cdi.WithMIG(edits, migs, cdi.MIGMinorsPath)
	case cfg.MockHostRoot != "":
		out, err = cdi.WithMIG(edits, migs, filepath.Join(cfg.MockHostRoot, mockhost.MIGMinorsFile))
	default:
		out, err = cdi.WithMIGCaps(edits, migs, mockhost.MIGCapMinors(inv))
	}
	if err != nil {
		return nil, fmt.Errorf("MIG device edits: %w", err)
	}
	return out, nil
}

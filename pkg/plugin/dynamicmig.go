package plugin

import (
	"context"
	"fmt"
	"slices"
	"sort"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/checkpoint"
	nodedevices "github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/migmanager"
	"github.com/gpudra/gpudra/pkg/node"
)

// DynamicMIGConfig configures MIG devices made on demand (KEP-4815
// partitionable devices).
type DynamicMIGConfig struct {
	// Enabled publishes every MIG-capable GPU that can be partitioned on
	// demand with its counter set, its partitions (one device per MIG
	// profile and placement) and, when it can leave MIG mode without a
	// reset, itself whole; prepare creates the allocated partition's MIG
	// device, unprepare destroys it.
	Enabled bool
}

// Event reasons of dynamic MIG.
const (
	// ReasonMIGModeResetRequired is the Warning event on the node for a
	// GPU whose MIG mode waits for a reset, and for a MIG mode switch of a
	// prepare that did not take effect.
	ReasonMIGModeResetRequired = "MIGModeResetRequired"
	// ReasonMIGDevicesNotOurs is the Normal event on the node for a GPU
	// left out of dynamic MIG because it holds MIG devices made outside
	// the driver.
	ReasonMIGDevicesNotOurs = "MIGDevicesMadeOutsideDriver"
)

// The taint "<driver>/mig-mode=reset-required:NoSchedule" is on the devices
// of a GPU whose MIG mode change waits for a GPU reset: whatever the GPU is
// published as, it is not what it will be after the reset.
const (
	TaintKeyNameMIGMode            = "mig-mode"
	TaintValueMIGModeResetRequired = "reset-required"
)

// dynamicMIG is the node's dynamic MIG: the manager and the GPUs it
// partitions, by UUID, and the GPUs whose mode waits for a reset.
type dynamicMIG struct {
	manager       *migmanager.Manager
	partitionable map[string]inventory.MIGLayout
	pending       []inventory.Device
}

// openDynamicMIG decides which GPUs are partitioned on demand and replaces
// n.Devices with the node's devices in that light. It must run before
// anything reads n.Devices for claims or slices. A GPU qualifies when NVML
// reports its MIG profiles, its MIG mode is not waiting for a reset, it is
// in MIG mode or can enter it without a reset (Hopper and later), and
// every GPU instance on it is one that a recorded claim names (any other
// was made outside the driver: the GPU is then published as it is, its
// MIG devices as static ones, and left alone). Nil when cfg leaves dynamic
// MIG off.
//
// With dynamic MIG off, a node whose recorded claims still hold MIG devices
// made on demand (dynamic MIG was on before this start) gets a manager
// without partitionable GPUs, so that those claims can still be
// unprepared and their devices destroyed; nothing new is partitioned.
func openDynamicMIG(ctx context.Context, cfg Config, n *node.Node, store *checkpoint.Store) (*dynamicMIG, error) {
	logger := klog.FromContext(ctx).WithName("dynamic-mig")
	if !cfg.DynamicMIG.Enabled {
		if store == nil {
			return nil, nil
		}
		records, _, err := store.List()
		if err != nil {
			return nil, fmt.Errorf("reading the claim checkpoint: %w", err)
		}
		held := 0
		for _, rec := range records {
			if slices.ContainsFunc(rec.Devices, func(d checkpoint.PreparedDevice) bool { return d.MIG != nil }) {
				held++
			}
		}
		if held == 0 {
			return nil, nil
		}
		logger.Info("Dynamic MIG is off, but prepared claims hold MIG devices made on demand: they are kept until their claims are unprepared, then destroyed", "claims", held)
		return &dynamicMIG{manager: migmanager.New(n.NVML, migmanager.Options{}), partitionable: map[string]inventory.MIGLayout{}}, nil
	}
	records, _, err := store.List()
	if err != nil {
		return nil, fmt.Errorf("dynamic MIG: reading the claim checkpoint: %w", err)
	}
	owned := map[string]bool{} // "<parent>/<profile>/<start>/<size>"
	for _, rec := range records {
		for _, d := range rec.Devices {
			if d.MIG != nil {
				owned[instanceKey(d.MIG.ParentUUID, d.MIG.GPUInstanceProfileID, inventory.MIGPlacement{Start: d.MIG.PlacementStart, Size: d.MIG.PlacementSize})] = true
			}
		}
	}
	layouts, errs := inventory.DiscoverMIGLayouts(n.NVML, n.Inventory)
	for _, err := range errs {
		logger.Error(err, "MIG profiles cannot be read; the GPU is published without partitions")
	}
	leave := map[string]bool{}
	for uuid, l := range layouts {
		leave[uuid] = l.ModeSwitchable
	}
	mgr := migmanager.New(n.NVML, migmanager.Options{LeaveMIGModeWhenEmpty: leave, OnModeError: func(ctx context.Context, err *migmanager.ModeError) {
		klog.FromContext(ctx).Error(err, "MIG mode switch did not take effect", "gpu", err.ParentUUID)
		if cfg.KubeClient != nil {
			if eerr := recordNodeEvent(ctx, cfg.KubeClient, cfg.NodeName, ReasonMIGModeResetRequired, err.Error()); eerr != nil {
				klog.FromContext(ctx).Error(eerr, "Recording the MIG mode event failed")
			}
		}
	}})
	dm := &dynamicMIG{manager: mgr, partitionable: map[string]inventory.MIGLayout{}}
	for _, d := range n.Inventory.Devices {
		l, ok := layouts[d.UUID]
		if !ok {
			continue
		}
		log := logger.WithValues("gpu", d.Index, "uuid", d.UUID)
		switch {
		case l.ModePending:
			dm.pending = append(dm.pending, d)
			msg := fmt.Sprintf("GPU %d (%s): its MIG mode change waits for a GPU reset, so it is not partitioned on demand and its devices are tainted %s/%s=%s: "+
				"reset it while idle (nvidia-smi -r -i %d) or reboot the node, then restart the plugin", d.Index, d.UUID, cfg.DriverName, TaintKeyNameMIGMode, TaintValueMIGModeResetRequired, d.Index)
			log.Info(msg)
			if cfg.KubeClient != nil {
				if err := recordNodeEvent(ctx, cfg.KubeClient, cfg.NodeName, ReasonMIGModeResetRequired, msg); err != nil {
					log.Error(err, "Recording the MIG mode event failed")
				}
			}
			continue
		case !d.MIGEnabled && !l.ModeSwitchable:
			log.Info("GPU is out of MIG mode and needs a reset to enter it, so it is published whole, without partitions: put it in MIG mode once (nvidia-smi -i <index> -mig 1, then a reset) to partition it on demand")
			continue
		}
		gis, err := mgr.GPUInstances(d.UUID)
		if err != nil {
			log.Error(err, "Listing the GPU's MIG devices failed; it is published as it is, without partitions")
			continue
		}
		var foreign []string
		for _, gi := range gis {
			if !owned[instanceKey(d.UUID, gi.ProfileID, gi.Placement)] {
				foreign = append(foreign, fmt.Sprintf("GPU instance %d (profile %d, memory slices %d-%d)", gi.ID, gi.ProfileID, gi.Placement.Start, gi.Placement.End()-1))
			}
		}
		if len(foreign) > 0 {
			msg := fmt.Sprintf("GPU %d (%s) holds MIG devices made outside the driver (%v): they are left alone and published as static MIG devices, and the GPU is not partitioned on demand; destroy them (nvidia-smi mig -dci; nvidia-smi mig -dgi) and restart the plugin to partition it on demand",
				d.Index, d.UUID, foreign)
			log.Info(msg)
			if cfg.KubeClient != nil {
				if err := recordNodeEvent(ctx, cfg.KubeClient, cfg.NodeName, ReasonMIGDevicesNotOurs, msg); err != nil {
					log.Error(err, "Recording the MIG event failed")
				}
			}
			continue
		}
		dm.partitionable[d.UUID] = l
	}
	n.Devices = nodedevices.FromInventoryWith(n.Inventory, nodedevices.Options{Partitionable: dm.partitionable})
	uuids := make([]string, 0, len(dm.partitionable))
	for u := range dm.partitionable {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	logger.Info("Dynamic MIG is on", "partitionableGPUs", uuids, "modeResetPending", len(dm.pending))
	return dm, nil
}

func instanceKey(parent string, profile int, p inventory.MIGPlacement) string {
	return fmt.Sprintf("%s/%d/%d/%d", parent, profile, p.Start, p.Size)
}

// pendingTaints are the taints of the devices of GPUs whose MIG mode waits
// for a reset, by device name.
func (dm *dynamicMIG) pendingTaints(driverName string, set *nodedevices.Set) map[string][]resourceapi.DeviceTaint {
	if dm == nil {
		return nil
	}
	out := map[string][]resourceapi.DeviceTaint{}
	for _, g := range dm.pending {
		for _, d := range set.OfGPU(g.UUID) {
			out[d.Name] = []resourceapi.DeviceTaint{{Key: driverName + "/" + TaintKeyNameMIGMode, Value: TaintValueMIGModeResetRequired, Effect: resourceapi.DeviceTaintEffectNoSchedule}}
		}
	}
	return out
}

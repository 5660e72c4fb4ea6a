package crash

import (
	"context"
	"errors"
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/migmanager"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// plugin is what the plugin's start-up builds from the (mock) machine: the
// node's devices, their container edits and, with dynamic MIG, the MIG
// manager. The child builds it at every start, the parent at every check,
// each time from a fresh mock machine, so that with dynamic MIG both see
// exactly the MIG state that the killed process left in its state file.
type plugin struct {
	lib   *server.Server
	inv   *inventory.Inventory
	set   *devices.Set
	edits claimstate.EditsSource
	// mig is nil without dynamic MIG.
	mig *migmanager.Manager
	// caps are the MIG capability minors of the node (dynamic MIG).
	caps map[string]int
	// shares is the fake shares applier over d.Shares (GPU shares); nil
	// without it.
	shares *fakeShares
}

// startPlugin builds the plugin over the directories d. With dynamicMIG
// every GPU of the machine is partitionable and the mock machine keeps its
// MIG state in d.MIGState.
func startPlugin(ctx context.Context, d dirs, dynamicMIG bool) (*plugin, error) {
	var opts []mockmachine.Option
	if dynamicMIG {
		if d.MIGState == "" {
			return nil, errors.New("dynamic MIG without a MIG state file")
		}
		opts = append(opts, mockmachine.WithMIGState(d.MIGState))
	}
	lib, err := mockmachine.New(machine, nodeName, opts...)
	if err != nil {
		return nil, err
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		return nil, err
	}
	base, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: d.DriverRoot, HookPath: hookPath}, inv.UUIDs())
	if err != nil {
		return nil, err
	}
	p := &plugin{lib: lib, inv: inv, set: devices.FromInventory(inv), edits: base}
	if d.Shares != "" {
		if p.shares, err = newFakeShares(d.Shares); err != nil {
			return nil, err
		}
	}
	if !dynamicMIG {
		return p, nil
	}
	layouts, errs := inventory.DiscoverMIGLayouts(lib, inv)
	if len(errs) > 0 {
		return nil, fmt.Errorf("MIG layouts: %w", errors.Join(errs...))
	}
	if len(layouts) != len(inv.Devices) {
		return nil, fmt.Errorf("MIG layouts of %d of the %d GPUs", len(layouts), len(inv.Devices))
	}
	p.set = devices.FromInventoryWith(inv, devices.Options{Partitionable: layouts})
	p.caps = mockmachine.MIGCapMinors(inv)
	if p.edits, err = cdi.WithDynamicMIGCaps(base, nil, p.caps); err != nil {
		return nil, err
	}
	p.mig = migmanager.New(lib, migmanager.Options{})
	return p, nil
}

// driverSpec is the driver-wide CDI spec of p, as the plugin's start-up
// builds it from the node's edits.
func (p *plugin) driverSpec() (*specs.Spec, error) {
	return cdi.DriverSpec(cdi.NewNaming(driverName), p.edits.Common())
}

// deviceSpec is the static device CDI spec of p, as the plugin's start-up
// builds it (claimstate.StaticDeviceSpec): every device of the node but
// the dynamic MIG devices. No device of the mock machines may be left out.
func (p *plugin) deviceSpec() (*specs.Spec, error) {
	spec, errs, err := claimstate.StaticDeviceSpec(cdi.NewNaming(driverName), p.set, p.edits)
	if err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("static device spec: %w", errors.Join(errs...))
	}
	if spec == nil {
		return nil, errors.New("static device spec: no device")
	}
	return spec, nil
}

// openState opens the claim state over d as the start-up of a plugin of
// format does (pkg/plugin's openClaimState for formatStatic): with
// formatStatic and formatClaimSpecs it writes the driver-wide spec
// (SpecDir.WriteDriverSpec) before anything can write a claim spec that
// references it, and builds the state with Options.UseDriverSpec; with
// formatStatic it writes the static device spec next
// (SpecDir.WriteDeviceSpec) and passes it (Options.DeviceSpec), so that
// exclusive claims without settings of their own get no claim spec. With
// formatLegacy it is a plugin from before the driver spec: no driver spec,
// self-contained claim specs. Whatever the format, a recorded claim keeps
// the format of its recorded CDI IDs.
func openState(ctx context.Context, d dirs, p *plugin, format specFormat) (*claimstate.State, *cdi.SpecDir, []checkpoint.LoadError, error) {
	naming := cdi.NewNaming(driverName)
	specDir, err := cdi.NewSpecDir(d.CDI, naming)
	if err != nil {
		return nil, nil, nil, err
	}
	if format != formatLegacy {
		// Before anything can write a claim spec that references it: the
		// start-up reconcile re-creates the missing specs of prepared
		// claims.
		spec, err := p.driverSpec()
		if err != nil {
			return nil, nil, nil, err
		}
		if _, err := specDir.WriteDriverSpec(spec); err != nil {
			return nil, nil, nil, err
		}
	}
	var deviceSpec *specs.Spec
	if format == formatStatic {
		if deviceSpec, err = p.deviceSpec(); err != nil {
			return nil, nil, nil, err
		}
		if _, err := specDir.WriteDeviceSpec(deviceSpec); err != nil {
			return nil, nil, nil, err
		}
	}
	store, err := checkpoint.NewStore(d.Checkpoint)
	if err != nil {
		return nil, nil, nil, err
	}
	var mig claimstate.MIGDevices
	if p.mig != nil {
		mig = p.mig
	}
	var applier sharing.Composite
	if p.shares != nil {
		applier.Shares = p.shares
	}
	st, loadErrs, err := claimstate.New(ctx, claimstate.Options{
		DriverName: driverName, PoolName: nodeName, Devices: p.set, Edits: p.edits,
		Specs: specDir, Naming: naming, UseDriverSpec: format != formatLegacy, DeviceSpec: deviceSpec,
		Checkpoints: store, BootID: bootID, Sharing: applier, MIG: mig,
	})
	if err == nil && p.shares != nil {
		// As the plugin does: the applier reads the recorded claims of
		// the state, which nothing asks it for before New returns.
		p.shares.use(st)
	}
	return st, specDir, loadErrs, err
}

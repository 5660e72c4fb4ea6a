package deviceplugin

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// unit is one device a resource advertises: a whole GPU (mig nil) or a MIG
// device. gpuPos is the position of the GPU (the MIG device's parent) in
// inventory.Devices, -1 for an unusable GPU.
type unit struct {
	dev      inventory.Device
	mig      *inventory.MIGDevice
	gpuPos   int
	unusable *inventory.UnusableDevice
	// migIndex is the MIG device's position among its parent's MIG devices
	// (NVIDIA's "<gpu>:<mig>" index).
	migIndex int
}

// resourceUnits is one resource to advertise and its devices.
type resourceUnits struct {
	name  string
	units []unit
}

// buildResources splits inv into resources by cfg.MIGStrategy (see the
// package documentation). The GPUs NVML cannot use are advertised under
// ResourceName. Resources come sorted by name, ResourceName first.
func buildResources(cfg *Config, inv *inventory.Inventory) ([]resourceUnits, error) {
	byName := map[string][]unit{}
	add := func(name string, u unit) { byName[name] = append(byName[name], u) }
	migsOf := map[int][]int{} // GPU index -> positions in inv.MIGDevices
	for k, m := range inv.MIGDevices {
		migsOf[m.ParentIndex] = append(migsOf[m.ParentIndex], k)
	}
	migUnit := func(pos, k, j int) unit {
		m := inv.MIGDevices[k]
		parent := inv.Devices[pos]
		return unit{dev: parent, mig: &m, gpuPos: pos, migIndex: j}
	}
	var migGPUs, wholeGPUs []string
	for pos, d := range inv.Devices {
		if !d.MIGEnabled || cfg.MIGStrategy == MIGStrategyNone {
			add(cfg.ResourceName, unit{dev: d, gpuPos: pos})
			wholeGPUs = append(wholeGPUs, fmt.Sprintf("%d (%s)", d.Index, d.UUID))
			continue
		}
		migGPUs = append(migGPUs, fmt.Sprintf("%d (%s)", d.Index, d.UUID))
		if len(migsOf[d.Index]) == 0 {
			return nil, fmt.Errorf("MIG strategy %s: GPU %d (%s) is in MIG mode but has no MIG devices, so it cannot be advertised: "+
				"create MIG devices on it (nvidia-smi mig -cgi ... -C, or the MIG manager), disable MIG mode on it, or use --mig-strategy=none to advertise it whole",
				cfg.MIGStrategy, d.Index, d.UUID)
		}
	}
	if cfg.MIGStrategy == MIGStrategySingle && len(migGPUs) > 0 {
		if len(wholeGPUs) > 0 {
			return nil, fmt.Errorf("MIG strategy single: all GPUs of the node must have the same MIG mode, but GPUs %s are in MIG mode and GPUs %s are not: "+
				"put every GPU in MIG mode with one profile, or use --mig-strategy=mixed (MIG devices as nvidia.com/mig-<profile>)",
				strings.Join(migGPUs, ", "), strings.Join(wholeGPUs, ", "))
		}
		var profile string
		for _, m := range inv.MIGDevices {
			if profile == "" {
				profile = m.Profile
			} else if m.Profile != profile {
				return nil, fmt.Errorf("MIG strategy single: all MIG devices must have one profile, but the node has %s and %s (MIG device %s of GPU %d): "+
					"repartition the GPUs with a single profile, or use --mig-strategy=mixed (one nvidia.com/mig-<profile> resource per profile)",
					profile, m.Profile, m.UUID, m.ParentIndex)
			}
		}
	}
	if cfg.MIGStrategy != MIGStrategyNone {
		for pos, d := range inv.Devices {
			if !d.MIGEnabled {
				continue
			}
			for j, k := range migsOf[d.Index] {
				name := cfg.ResourceName
				if cfg.MIGStrategy == MIGStrategyMixed {
					name = MIGResourceName(inv.MIGDevices[k].Profile)
				}
				add(name, migUnit(pos, k, j))
			}
		}
	}
	for i := range inv.Unusable {
		u := inv.Unusable[i]
		add(cfg.ResourceName, unit{dev: inventory.Device{Index: u.Index, UUID: u.UUID, Minor: u.Minor, PCIBusID: u.PCIBusID, ProductName: u.ProductName},
			gpuPos: -1, unusable: &u})
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int {
		if a == cfg.ResourceName {
			return -1
		}
		if b == cfg.ResourceName {
			return 1
		}
		return strings.Compare(a, b)
	})
	out := make([]resourceUnits, 0, len(names))
	for _, n := range names {
		out = append(out, resourceUnits{name: n, units: byName[n]})
	}
	return out, nil
}

package dpconfig

import (
	"fmt"

	"github.com/gpudra/gpudra/pkg/deviceplugin"
)

// DevicePluginConfig maps c onto base, the device plugin's configuration
// from its command line: what c sets replaces base's value (the file wins
// over flags; NVIDIA lets flags win, but here flags come from the chart's
// defaults, and the file is the per-node choice). It returns the settings
// of c that gpudra does not use (logged by the caller): failOnInitError,
// nvidiaDriverRoot and the other host flags (the chart sets them),
// restartOnDeviceUnhealthy, the gfd and imex sections and resources
// renaming, which NVIDIA's plugin ignores too. A sharing section with a
// device count or list fails: gpudra replicates every device of a resource.
func DevicePluginConfig(base deviceplugin.Config, c *Config) (deviceplugin.Config, []string, error) {
	out := base
	var ignored []string
	f := c.Flags
	if f.MigStrategy != nil {
		out.MIGStrategy = *f.MigStrategy
	}
	if p := f.Plugin; p != nil {
		if p.PassDeviceSpecs != nil {
			out.PassDeviceSpecs = *p.PassDeviceSpecs
		}
		if p.DeviceListStrategy != nil {
			out.DeviceListStrategies = append([]string(nil), (*p.DeviceListStrategy)...)
		}
		if p.DeviceIDStrategy != nil {
			out.DeviceIDStrategy = *p.DeviceIDStrategy
		}
		for name, set := range map[string]bool{
			"flags.plugin.cdiAnnotationPrefix": p.CDIAnnotationPrefix != nil,
			"flags.plugin.nvidiaCTKPath":       p.NvidiaCTKPath != nil,
			"flags.plugin.containerDriverRoot": p.ContainerDriverRoot != nil,
		} {
			if set {
				ignored = append(ignored, name)
			}
		}
	}
	for name, set := range map[string]bool{
		"flags.failOnInitError":          f.FailOnInitError != nil,
		"flags.restartOnDeviceUnhealthy": f.RestartOnDeviceUnhealthy != nil,
		"flags.nvidiaDriverRoot":         f.NvidiaDriverRoot != nil,
		"flags.nvidiaDevRoot":            f.NvidiaDevRoot != nil,
		"flags.gdsEnabled":               f.GDSEnabled != nil,
		"flags.mofedEnabled":             f.MOFEDEnabled != nil,
		"flags.useNodeFeatureAPI":        f.UseNodeFeatureAPI != nil,
		"flags.deviceDiscoveryStrategy":  f.DeviceDiscoveryStrategy != nil,
		"flags.gfd":                      f.GFD != nil,
		"resources":                      len(c.Resources.GPUs)+len(c.Resources.MIGs) > 0,
		"imex":                           len(c.Imex.ChannelIDs) > 0 || c.Imex.Required,
	} {
		if set {
			ignored = append(ignored, name)
		}
	}
	if rr := c.Replicated(); rr != nil {
		// The file's sharing replaces the --replicas shorthand.
		out.Replicas, out.RenameResource = 1, ""
		out.Sharing = deviceplugin.Sharing{Strategy: c.SharingStrategy()}
		if rr.FailRequestsGreaterThanOne != nil {
			out.Sharing.FailRequestsGreaterThanOne = *rr.FailRequestsGreaterThanOne
		}
		for i, r := range rr.Resources {
			if !r.Devices.All {
				return base, ignored, fmt.Errorf("sharing resources[%d] (%s): devices %v: gpudra shares all devices of a resource; remove devices or set it to \"all\"", i, r.Name, r.Devices)
			}
			out.Sharing.Resources = append(out.Sharing.Resources, deviceplugin.ReplicatedResource{Name: r.Name, Rename: r.Rename, Replicas: r.Replicas})
		}
	} else if c.Sharing.TimeSlicing != nil || c.Sharing.MPS != nil {
		out.Sharing = deviceplugin.Sharing{}
	}
	if err := out.Validate(); err != nil {
		return base, ignored, fmt.Errorf("the device plugin does not accept the config: %w", err)
	}
	return out, ignored, nil
}

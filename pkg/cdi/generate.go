package cdi

import (
	"fmt"
	"strconv"

	"tags.cncf.io/container-device-interface/pkg/parser"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// Host-wide spec naming: the kind the NVIDIA Container Toolkit's
// `nvidia-ctk cdi generate` uses, so that `--device nvidia.com/gpu=0` and
// the like work the same with a spec from `gpudra cdi generate`.
const (
	HostVendor = "nvidia.com"
	HostClass  = "gpu"
	HostKind   = HostVendor + "/" + HostClass
	// AllDevices is the name of the device that stands for every GPU.
	AllDevices = "all"
)

// HostSpecOptions configure HostSpec.
type HostSpecOptions struct {
	// Kind is the CDI kind of the spec; empty means HostKind.
	Kind string
	// Env is added to the driver-wide edits (e.g. VisibleDevicesVoid).
	Env []string
}

// HostSpec assembles a host-wide spec: the driver-wide edits at spec level
// and every GPU of inv three ways: by NVML index ("0"), by UUID
// ("GPU-..."), and all of them as AllDevices. It is deterministic for a given
// inventory and edits, and validated as the CDI library validates the specs
// it loads. HostSpec does not modify edits.
func HostSpec(inv *inventory.Inventory, edits *Edits, opts HostSpecOptions) (*specs.Spec, error) {
	kind := opts.Kind
	if kind == "" {
		kind = HostKind
	}
	if len(inv.Devices) == 0 {
		return nil, fmt.Errorf("CDI spec %s: NVML reports no GPUs, so there are no devices to put into it (is the driver loaded and are the GPUs visible to nvidia-smi?)", kind)
	}
	common := CloneEdits(edits.Common())
	common.Env = append(common.Env, opts.Env...)
	spec := &specs.Spec{Kind: kind, ContainerEdits: common}
	var all specs.ContainerEdits
	nodes, mounts := map[string]bool{}, map[string]bool{}
	for _, d := range inv.Devices {
		e, err := edits.Device(d.UUID)
		if err != nil {
			return nil, fmt.Errorf("CDI spec %s: GPU %d: %w", kind, d.Index, err)
		}
		spec.Devices = append(spec.Devices,
			specs.Device{Name: strconv.Itoa(d.Index), ContainerEdits: CloneEdits(e)},
			specs.Device{Name: d.UUID, ContainerEdits: CloneEdits(e)})
		// "all" gets each GPU's edits once; GPUs share no device node or
		// mount today, the de-duplication keeps it so if they ever do.
		for _, n := range e.DeviceNodes {
			if !nodes[n.Path] {
				nodes[n.Path] = true
				all.DeviceNodes = append(all.DeviceNodes, n)
			}
		}
		for _, m := range e.Mounts {
			if !mounts[m.ContainerPath] {
				mounts[m.ContainerPath] = true
				all.Mounts = append(all.Mounts, m)
			}
		}
		all.Hooks = append(all.Hooks, e.Hooks...)
		all.Env = append(all.Env, e.Env...)
	}
	spec.Devices = append(spec.Devices, specs.Device{Name: AllDevices, ContainerEdits: all})
	version, err := specs.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, fmt.Errorf("CDI spec %s: version: %w", kind, err)
	}
	spec.Version = version
	if err := Validate(spec); err != nil {
		return nil, fmt.Errorf("CDI spec %s: %w", kind, err)
	}
	return spec, nil
}

// HostDeviceID is the fully qualified CDI name of device (an index, a UUID
// or AllDevices) in the host-wide spec of kind HostKind.
func HostDeviceID(device string) string {
	return parser.QualifiedName(HostVendor, HostClass, device)
}

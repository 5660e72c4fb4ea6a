package cdi

import (
	"fmt"
	"slices"
	"strings"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	"tags.cncf.io/container-device-interface/specs-go"
)

// VisibleDevicesVoid is set in every container that gets a device of this
// driver (by the driver spec, or a self-contained claim spec) so that a legacy
// nvidia-container-runtime hook, if the node still has one, injects nothing
// on its own: the CDI edits are the only source of GPUs.
const VisibleDevicesVoid = "NVIDIA_VISIBLE_DEVICES=void"

// ClaimDevice is one prepared device of a claim.
type ClaimDevice struct {
	// Name is the device's name in the ResourceSlice, e.g. "gpu-0".
	Name string
	// Edits are the device's own container edits (see Edits.Device).
	Edits specs.ContainerEdits
	// Env is extra environment for containers that get this device.
	Env []string
}

// ClaimSpec assembles the self-contained transient spec of one claim, the
// format of plugins from before the driver-wide spec: the driver-wide edits
// at spec level (applied once, whichever of the claim's devices a container
// gets) and one CDI device per prepared device, each referenced by its
// Naming.DeviceID alone. The State writes it only for claims recorded in
// that format, so that their recorded CDI IDs stay complete. The spec is
// validated as the CDI library validates specs it loads; an error names the
// claim and the device.
func ClaimSpec(n Naming, claimUID string, common specs.ContainerEdits, devices []ClaimDevice) (*specs.Spec, error) {
	specEdits := CloneEdits(common)
	if !slices.Contains(specEdits.Env, VisibleDevicesVoid) {
		specEdits.Env = append(specEdits.Env, VisibleDevicesVoid)
	}
	return claimSpec(n, claimUID, specEdits, devices)
}

// ClaimSpecUsingDriverSpec assembles the transient spec of a claim whose
// devices are referenced by Naming.DeviceIDs, driver device first: it holds
// only what is the claim's own. claimEdits (the claim-wide sharing edits,
// e.g. an MPS daemon's pipe directory; empty for most claims) are at spec
// level, applied once per container; each device has its own edits (its
// device nodes, MIG capability nodes, sharing edits) and Env. The
// driver-wide edits and NVIDIA_VISIBLE_DEVICES=void come from the driver
// spec (DriverSpec), which must exist whenever this spec does.
func ClaimSpecUsingDriverSpec(n Naming, claimUID string, claimEdits specs.ContainerEdits, devices []ClaimDevice) (*specs.Spec, error) {
	return claimSpec(n, claimUID, CloneEdits(claimEdits), devices)
}

func claimSpec(n Naming, claimUID string, specEdits specs.ContainerEdits, devices []ClaimDevice) (*specs.Spec, error) {
	if len(devices) == 0 {
		return nil, fmt.Errorf("claim %s: no devices to put into a CDI spec", claimUID)
	}
	spec := &specs.Spec{
		Kind:           n.Kind(),
		ContainerEdits: specEdits,
		Devices:        make([]specs.Device, 0, len(devices)),
	}
	for _, d := range devices {
		edits := CloneEdits(d.Edits)
		edits.Env = append(edits.Env, d.Env...)
		spec.Devices = append(spec.Devices, specs.Device{
			Name:           n.DeviceName(claimUID, d.Name),
			ContainerEdits: edits,
		})
	}
	if err := finish(spec); err != nil {
		return nil, fmt.Errorf("claim %s: %w", claimUID, err)
	}
	return spec, nil
}

// DriverSpec assembles the driver-wide spec, kind Naming.DriverKind: the
// driver-wide edits (control device nodes, the running driver's libraries
// and binaries, hooks) at spec level, and one device, DriverDevice, whose
// only edit is NVIDIA_VISIBLE_DEVICES=void (the CDI library refuses a
// device without edits; this one is harmless however often a container
// gets it, as the runtime sets an environment variable once). A container
// with any device referenced by Naming.DeviceIDs thus gets the driver-wide
// edits once. It is deterministic for given edits and does not modify
// common.
func DriverSpec(n Naming, common specs.ContainerEdits) (*specs.Spec, error) {
	specEdits := CloneEdits(common)
	specEdits.Env = slices.DeleteFunc(specEdits.Env, func(e string) bool { return e == VisibleDevicesVoid })
	if len(specEdits.Env) == 0 {
		specEdits.Env = nil
	}
	spec := &specs.Spec{
		Kind:           n.DriverKind(),
		ContainerEdits: specEdits,
		Devices: []specs.Device{{
			Name:           DriverDevice,
			ContainerEdits: specs.ContainerEdits{Env: []string{VisibleDevicesVoid}},
		}},
	}
	if err := finish(spec); err != nil {
		return nil, fmt.Errorf("driver-wide CDI spec %s: %w", spec.Kind, err)
	}
	return spec, nil
}

// DeviceSpec assembles the static device spec, kind Naming.DeviceKind: one
// CDI device per device, by its name in the ResourceSlice, with its own
// edits and Env and no spec-level edits. It holds what every exclusive
// claim of a device without a config of its own gets (the device nodes of
// a GPU, or of a MIG device with its parent and capability nodes), so that
// such a claim needs no spec of its own: it is referenced by
// Naming.StaticDeviceIDs, after the driver-wide spec's device. It is
// deterministic for given devices (sorted by name) and never empty: with
// no devices it returns nil.
func DeviceSpec(n Naming, devices []ClaimDevice) (*specs.Spec, error) {
	if len(devices) == 0 {
		return nil, nil
	}
	sorted := slices.Clone(devices)
	slices.SortFunc(sorted, func(a, b ClaimDevice) int { return strings.Compare(a.Name, b.Name) })
	spec := &specs.Spec{Kind: n.DeviceKind(), Devices: make([]specs.Device, 0, len(sorted))}
	for _, d := range sorted {
		edits := CloneEdits(d.Edits)
		edits.Env = append(edits.Env, d.Env...)
		spec.Devices = append(spec.Devices, specs.Device{Name: d.Name, ContainerEdits: edits})
	}
	if err := finish(spec); err != nil {
		return nil, fmt.Errorf("static device CDI spec %s: %w", spec.Kind, err)
	}
	return spec, nil
}

// finish sets the spec's version to the lowest that its content needs and
// validates it.
func finish(spec *specs.Spec) error {
	version, err := specs.MinimumRequiredVersion(spec)
	if err != nil {
		return fmt.Errorf("CDI spec version: %w", err)
	}
	spec.Version = version
	return Validate(spec)
}

// Validate applies the checks the CDI library applies when it loads a spec:
// version, kind, device names, and every container edit.
func Validate(spec *specs.Spec) error {
	if err := specs.ValidateVersion(spec); err != nil {
		return fmt.Errorf("invalid CDI spec: %w", err)
	}
	vendor, class := parser.ParseQualifier(spec.Kind)
	if err := parser.ValidateVendorName(vendor); err != nil {
		return fmt.Errorf("invalid CDI spec kind %q: %w", spec.Kind, err)
	}
	if err := parser.ValidateClassName(class); err != nil {
		return fmt.Errorf("invalid CDI spec kind %q: %w", spec.Kind, err)
	}
	if err := (&cdiapi.ContainerEdits{ContainerEdits: &spec.ContainerEdits}).Validate(); err != nil {
		return fmt.Errorf("invalid CDI spec: driver-wide edits: %w", err)
	}
	seen := map[string]bool{}
	for i := range spec.Devices {
		d := &spec.Devices[i]
		if err := parser.ValidateDeviceName(d.Name); err != nil {
			return fmt.Errorf("invalid CDI spec: device %q: %w", d.Name, err)
		}
		if seen[d.Name] {
			return fmt.Errorf("invalid CDI spec: device %q appears twice", d.Name)
		}
		seen[d.Name] = true
	}
	for i := range spec.Devices {
		d := &spec.Devices[i]
		if isEmpty(d.ContainerEdits) {
			return fmt.Errorf("invalid CDI spec: device %q has no container edits", d.Name)
		}
		if err := (&cdiapi.ContainerEdits{ContainerEdits: &d.ContainerEdits}).Validate(); err != nil {
			return fmt.Errorf("invalid CDI spec: device %q: %w", d.Name, err)
		}
	}
	return nil
}

// isEmpty is the CDI library's test of a device without edits, which it
// refuses to load.
func isEmpty(e specs.ContainerEdits) bool {
	return len(e.Env) == 0 && len(e.DeviceNodes) == 0 && len(e.Hooks) == 0 && len(e.Mounts) == 0 &&
		len(e.AdditionalGIDs) == 0 && e.IntelRdt == nil && len(e.NetDevices) == 0
}

// CloneEdits copies the slices of e so that appending to the copy never
// writes into the shared cached edits.
func CloneEdits(e specs.ContainerEdits) specs.ContainerEdits {
	return specs.ContainerEdits{
		Env:            append([]string(nil), e.Env...),
		DeviceNodes:    append([]*specs.DeviceNode(nil), e.DeviceNodes...),
		NetDevices:     append([]*specs.LinuxNetDevice(nil), e.NetDevices...),
		Hooks:          append([]*specs.Hook(nil), e.Hooks...),
		Mounts:         append([]*specs.Mount(nil), e.Mounts...),
		IntelRdt:       e.IntelRdt,
		AdditionalGIDs: append([]uint32(nil), e.AdditionalGIDs...),
	}
}

package cdi

import (
	"fmt"
	"slices"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	"tags.cncf.io/container-device-interface/specs-go"
)

// VisibleDevicesVoid is set in every claim spec so that a legacy
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

// ClaimSpec assembles the transient spec of one claim: the driver-wide edits
// at spec level (applied once, whichever of the claim's devices a container
// gets) and one CDI device per prepared device. The spec is validated as the
// CDI library validates specs it loads; an error names the claim and the
// device.
func ClaimSpec(n Naming, claimUID string, common specs.ContainerEdits, devices []ClaimDevice) (*specs.Spec, error) {
	if len(devices) == 0 {
		return nil, fmt.Errorf("claim %s: no devices to put into a CDI spec", claimUID)
	}
	specEdits := CloneEdits(common)
	if !slices.Contains(specEdits.Env, VisibleDevicesVoid) {
		specEdits.Env = append(specEdits.Env, VisibleDevicesVoid)
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
	version, err := specs.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, fmt.Errorf("claim %s: CDI spec version: %w", claimUID, err)
	}
	spec.Version = version
	if err := Validate(spec); err != nil {
		return nil, fmt.Errorf("claim %s: %w", claimUID, err)
	}
	return spec, nil
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
		if err := (&cdiapi.ContainerEdits{ContainerEdits: &d.ContainerEdits}).Validate(); err != nil {
			return fmt.Errorf("invalid CDI spec: device %q: %w", d.Name, err)
		}
	}
	return nil
}

// cloneEdits copies the slices of e so that appending to the copy never
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

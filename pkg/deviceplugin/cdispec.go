package deviceplugin

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// CDISpecFileName is the file name of the plugin's spec in the CDI root.
func CDISpecFileName() string { return cdiapi.GenerateSpecName(CDIVendor, CDIClass) + ".json" }

// buildCDISpec assembles the spec: the driver-wide edits at spec level, and
// every GPU twice, by UUID and by index, plus "all".
func buildCDISpec(cfg Config, inv *inventory.Inventory, edits *cdi.Edits) (*specs.Spec, error) {
	common := cdi.CloneEdits(edits.Common())
	if !cfg.has(StrategyEnvvar) {
		// A legacy NVIDIA runtime hook must not add GPUs of its own (an
		// image's NVIDIA_VISIBLE_DEVICES=all) to those CDI names.
		common.Env = append(common.Env, cdi.VisibleDevicesVoid)
	}
	spec := &specs.Spec{Kind: CDIKind, ContainerEdits: common}
	var all specs.ContainerEdits
	for _, d := range inv.Devices {
		e, err := edits.Device(d.UUID)
		if err != nil {
			return nil, err
		}
		spec.Devices = append(spec.Devices,
			specs.Device{Name: d.UUID, ContainerEdits: cdi.CloneEdits(e)},
			specs.Device{Name: strconv.Itoa(d.Index), ContainerEdits: cdi.CloneEdits(e)})
		all.DeviceNodes = append(all.DeviceNodes, e.DeviceNodes...)
		all.Mounts = append(all.Mounts, e.Mounts...)
		all.Hooks = append(all.Hooks, e.Hooks...)
		all.Env = append(all.Env, e.Env...)
	}
	spec.Devices = append(spec.Devices, specs.Device{Name: "all", ContainerEdits: all})
	version, err := specs.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, fmt.Errorf("CDI spec version: %w", err)
	}
	spec.Version = version
	if err := cdi.Validate(spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// writeCDISpec writes the spec durably into cfg.CDIRoot and returns its path.
func writeCDISpec(cfg Config, inv *inventory.Inventory, edits *cdi.Edits) (string, error) {
	spec, err := buildCDISpec(cfg, inv, edits)
	if err != nil {
		return "", err
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return "", fmt.Errorf("encoding the CDI spec: %w", err)
	}
	if err := os.MkdirAll(cfg.CDIRoot, 0o755); err != nil {
		return "", fmt.Errorf("CDI root: %w", err)
	}
	path := filepath.Join(cfg.CDIRoot, CDISpecFileName())
	if err := durable.WriteFile(path, data, 0o644); err != nil {
		return "", fmt.Errorf("writing the CDI spec: %w", err)
	}
	return path, nil
}

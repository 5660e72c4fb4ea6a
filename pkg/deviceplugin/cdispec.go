package deviceplugin

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// CDISpecFileName is the file name of the plugin's spec in the CDI root.
func CDISpecFileName() string { return cdiapi.GenerateSpecName(CDIVendor, CDIClass) + ".json" }

// cdiDevice is a device of the spec beyond the whole GPUs: a MIG device,
// under each of its names (UUID, "<gpu>:<mig>").
type cdiDevice struct {
	names []string
	edits specs.ContainerEdits
}

// buildCDISpec assembles the spec (cdi.HostSpec of kind CDIKind): the
// driver-wide edits at spec level, and every GPU by index and by UUID, plus
// "all"; then the extra devices (MIG devices: their parent's edits and
// their capability device nodes, cdi.MIGDeviceEdits).
func buildCDISpec(cfg Config, inv *inventory.Inventory, edits *cdi.Edits, extra []cdiDevice) (*specs.Spec, error) {
	var env []string
	if !cfg.has(StrategyEnvvar) {
		// A legacy NVIDIA runtime hook must not add GPUs of its own (an
		// image's NVIDIA_VISIBLE_DEVICES=all) to those CDI names.
		env = append(env, cdi.VisibleDevicesVoid)
	}
	spec, err := cdi.HostSpec(inv, edits, cdi.HostSpecOptions{Kind: CDIKind, Env: env})
	if err != nil || len(extra) == 0 {
		return spec, err
	}
	for _, d := range extra {
		for _, n := range d.names {
			spec.Devices = append(spec.Devices, specs.Device{Name: n, ContainerEdits: cdi.CloneEdits(d.edits)})
		}
	}
	version, err := specs.MinimumRequiredVersion(spec)
	if err != nil {
		return nil, fmt.Errorf("CDI spec %s: version: %w", CDIKind, err)
	}
	spec.Version = version
	if err := cdi.Validate(spec); err != nil {
		return nil, fmt.Errorf("CDI spec %s: %w", CDIKind, err)
	}
	return spec, nil
}

// writeCDISpec writes the spec durably into cfg.CDIRoot and returns its path.
func writeCDISpec(cfg Config, inv *inventory.Inventory, edits *cdi.Edits, extra []cdiDevice) (string, error) {
	spec, err := buildCDISpec(cfg, inv, edits, extra)
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

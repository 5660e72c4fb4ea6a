package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/node"
)

// runCDIGenerate writes the host-wide spec of kind nvidia.com/gpu for the
// GPUs of this host, from the same driver discovery the plugins use. A GPU
// that NVML cannot use is left out and named on stderr with its error and
// fix; the command fails only when no GPU is usable.
func runCDIGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	var h hostFlags
	var output, format string
	fs, f := newFlagSet("cdi generate", stderr, &h, node.Locate|node.CDI)
	fs.StringVar(&output, "output", "", "write the spec to FILE (atomically and durably; e.g. /etc/cdi/nvidia.yaml); empty: standard output")
	fs.StringVar(&format, "format", "", "yaml or json; empty: from the extension of --output, yaml on standard output")
	if err := parse(f, fs, args); err != nil {
		return exitUsage, err
	}
	if err := h.validate(); err != nil {
		return exitUsage, err
	}
	format, err := specFormat(format, output)
	if err != nil {
		return exitUsage, err
	}
	ctx = logContext(ctx, "cdi-generate")
	logger := klog.FromContext(ctx)

	n, err := h.openNode(ctx, true)
	if err != nil {
		return exitFail, err
	}
	defer n.Close()
	inv, edits := n.Inventory, n.Edits
	for _, u := range inv.Unusable {
		fmt.Fprintf(stderr, "gpudra cdi generate: skipping %s: %v; fix: %s\n", u, u.Err, u.Fix())
	}
	if len(inv.Devices) == 0 && len(inv.Unusable) > 0 {
		return exitFail, fmt.Errorf("no GPU is usable (NVML cannot use any of the %d it enumerates, see above): no spec written", len(inv.Unusable))
	}
	spec, err := cdi.HostSpec(inv, edits, cdi.HostSpecOptions{})
	if err != nil {
		return exitFail, err
	}
	data, err := encodeSpec(spec, format)
	if err != nil {
		return exitFail, err
	}
	if output == "" {
		_, err := stdout.Write(data)
		return exitOK, err
	}
	if err := durable.WriteFile(output, data, 0o644); err != nil {
		return exitFail, fmt.Errorf("writing the CDI spec: %w (does the directory %s exist and is it writable?)", err, filepath.Dir(output))
	}
	logger.Info("Wrote CDI spec", "path", output, "kind", spec.Kind, "devices", len(spec.Devices), "driverVersion", inv.DriverVersion)
	first := inv.Devices[0]
	fmt.Fprintf(stdout, "wrote %s: kind %s, %d GPUs of driver %s as %s, %s ... and %s\n", output, spec.Kind, len(inv.Devices), inv.DriverVersion,
		cdi.HostDeviceID(strconv.Itoa(first.Index)), cdi.HostDeviceID(first.UUID), cdi.HostDeviceID(cdi.AllDevices))
	if len(inv.Unusable) > 0 {
		fmt.Fprintf(stdout, "skipped %d unusable GPU(s): %s (see the errors above)\n", len(inv.Unusable), unusableList(inv.Unusable))
	}
	return exitOK, nil
}

// unusableList names the GPUs: "GPU 5 (GPU-...), GPU 6".
func unusableList(us []inventory.UnusableDevice) string {
	names := make([]string, 0, len(us))
	for _, u := range us {
		names = append(names, u.String())
	}
	return strings.Join(names, ", ")
}

// specFormat picks the encoding: the flag, else the output's extension.
// Runtimes load only *.json and *.yaml spec files (either encoding parses
// in both), so another extension is refused.
func specFormat(format, output string) (string, error) {
	ext := strings.ToLower(filepath.Ext(output))
	if output != "" && ext != ".json" && ext != ".yaml" {
		return "", fmt.Errorf("%w: --output %s: container runtimes load only *.json and *.yaml CDI spec files", errUsage, output)
	}
	switch {
	case format == "" && ext == ".json":
		return "json", nil
	case format == "":
		return "yaml", nil
	case format != "yaml" && format != "json":
		return "", fmt.Errorf("%w: --format=%q: want yaml or json", errUsage, format)
	}
	return format, nil
}

func encodeSpec(spec *specs.Spec, format string) ([]byte, error) {
	if format == "json" {
		data, err := json.MarshalIndent(spec, "", "  ")
		return append(data, '\n'), err
	}
	return yaml.Marshal(spec)
}

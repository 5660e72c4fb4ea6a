package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/gpudra/gpudra/pkg/doctor"
)

// runDoctor checks the node and prints the report; the exit code is 1 when
// a check failed.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	var h hostFlags
	var cfg doctor.Config
	var dirs string
	var asJSON bool
	fs, f := newFlagSet("doctor", stderr, &h)
	addCDIDirsFlag(f, &dirs)
	f.String(&cfg.CDIRoot, "cdi-root", "CDI_ROOT", "/var/run/cdi", "the host directory where the plugin writes its CDI specs: the runtime must read it")
	f.String(&cfg.DriverName, "driver-name", "DRIVER_NAME", "gpu.nvidia.com", "DRA driver name: specs of kind k8s.<name>/* are the plugin's")
	f.String(&cfg.DevRoot, "dev-root", "NVIDIA_DEV_ROOT", "", "host directory under which dev/nvidia* are; empty: /")
	f.String(&cfg.ContainerdConfig, "containerd-config", "CONTAINERD_CONFIG", "/etc/containerd/config.toml", "host path of containerd's config")
	fs.BoolVar(&cfg.PreStart, "pre-start", false, "the doctor runs right before the plugin starts (the chart's init container): problems of the plugin's own CDI specs, which it rewrites at start, are warnings")
	f.Bind("pre-start", "DOCTOR_PRE_START")
	fs.BoolVar(&asJSON, "json", false, "print one JSON document instead of the table")
	if err := parse(f, fs, args); err != nil {
		return exitUsage, err
	}
	if h.mockHostRoot != "" && !strings.HasPrefix(h.nvmlBackend, "mock:") {
		return exitUsage, fmt.Errorf("%w: --mock-host-root needs a mock NVML backend (--nvml=mock:<machine>), not %q", errUsage, h.nvmlBackend)
	}
	cfg.HostRoot = h.hostRoot
	cfg.NVMLBackend = h.nvmlBackend
	cfg.DriverRoot = h.driverRoot
	cfg.MockHostRoot = h.mockHostRoot
	cfg.Seed = h.nodeName
	cfg.CDIDirs = splitList(dirs)

	report := doctor.Run(logContext(ctx, "doctor"), cfg)
	var err error
	if asJSON {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteTable(stdout)
	}
	if err != nil {
		return exitFail, fmt.Errorf("writing the report: %w", err)
	}
	if report.Failed() {
		return exitFail, nil
	}
	return exitOK, nil
}

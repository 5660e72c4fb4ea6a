package main

import (
	"context"
	"fmt"
	"io"

	"github.com/gpudra/gpudra/pkg/doctor"
	"github.com/gpudra/gpudra/pkg/node"
)

// runDoctor checks the node and prints the report; the exit code is 1 when
// a check failed.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	var h hostFlags
	var cfg doctor.Config
	var dirs string
	var asJSON bool
	fs, f := newFlagSet("doctor", stderr, &h, node.Locate|node.CDI)
	addCDIDirsFlag(f, &dirs)
	f.String(&cfg.DriverName, "driver-name", "DRIVER_NAME", "gpu.nvidia.com", "DRA driver name: specs of kind k8s.<name>/* are the plugin's")
	f.String(&cfg.ContainerdConfig, "containerd-config", "CONTAINERD_CONFIG", "/etc/containerd/config.toml", "host path of containerd's config")
	f.Bool(&cfg.PreStart, "pre-start", "DOCTOR_PRE_START", false, "the doctor runs right before the plugin starts (the chart's init container): problems of the plugin's own CDI specs, which it rewrites at start, are warnings")
	fs.BoolVar(&asJSON, "json", false, "print one JSON document instead of the table")
	if err := parse(f, fs, args); err != nil {
		return exitUsage, err
	}
	if err := h.validate(); err != nil {
		return exitUsage, err
	}
	cfg.HostRoot = h.hostRoot
	cfg.NVMLBackend = h.node.NVML
	cfg.DriverRoot = h.node.DriverRoot
	cfg.DevRoot = h.node.DevRoot
	cfg.MockHostRoot = h.node.MockHostRoot
	cfg.CDIRoot = h.node.CDIRoot
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

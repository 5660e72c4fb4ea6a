package timeslicing

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// nvidiaSMIDirs are the directories, relative to a driver root, where the
// driver installs nvidia-smi.
var nvidiaSMIDirs = []string{"usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin"}

// NvidiaSMI sets time slices with the driver's nvidia-smi:
//
//	nvidia-smi compute-policy -i <GPU-UUID> --set-timeslice=<0|1|2|3>
type NvidiaSMI struct {
	// Path is the nvidia-smi binary.
	Path string
	// Env is the environment of nvidia-smi; nil inherits the plugin's.
	Env []string
	// run executes the command; tests replace it.
	run func(ctx context.Context, path string, env []string, args ...string) ([]byte, error)
}

var _ TimeSlicer = (*NvidiaSMI)(nil)

// NewNvidiaSMI finds nvidia-smi under driverRoot (the driver root as this
// process sees it) and returns a TimeSlicer that runs it. When the driver
// root holds libnvidia-ml.so.1, nvidia-smi gets its directory in
// LD_LIBRARY_PATH, so that a driver root mounted into the plugin's
// container works without the libraries on the linker path.
func NewNvidiaSMI(driverRoot string) (*NvidiaSMI, error) {
	if driverRoot == "" {
		driverRoot = "/"
	}
	var path string
	for _, dir := range nvidiaSMIDirs {
		p := filepath.Join(driverRoot, dir, "nvidia-smi")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			path = p
			break
		}
	}
	if path == "" {
		return nil, fmt.Errorf("nvidia-smi not found under driver root %q (looked in %s): time-slicing needs it; "+
			"check --driver-root, or install the driver's utilities", driverRoot, strings.Join(nvidiaSMIDirs, ", "))
	}
	n := &NvidiaSMI{Path: path}
	if lib := inventory.FindNVMLLibrary(driverRoot); lib != "" {
		n.Env = append(os.Environ(), "LD_LIBRARY_PATH="+filepath.Dir(lib))
	}
	return n, nil
}

// SetTimeSlice runs nvidia-smi compute-policy for the GPU.
func (n *NvidiaSMI) SetTimeSlice(ctx context.Context, gpuUUID string, interval configapi.TimeSliceInterval) error {
	v, err := IntervalValue(interval)
	if err != nil {
		return err
	}
	run := n.run
	if run == nil {
		run = runCommand
	}
	args := []string{"compute-policy", "-i", gpuUUID, "--set-timeslice=" + strconv.Itoa(v)}
	out, err := run(ctx, n.Path, n.Env, args...)
	if err != nil {
		return fmt.Errorf("setting the time slice of GPU %s to %s: %s %s: %w: %s "+
			"(nvidia-smi needs root and a driver that supports compute-policy)",
			gpuUUID, interval, n.Path, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func runCommand(ctx context.Context, path string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.Bytes(), err
}

// Command gpu-mps-mock-daemon stands in for nvidia-cuda-mps-control in the
// MPS daemon pods of nodes with a mock NVML backend (clusters without GPUs).
// It does what the plugin and the e2e tests can observe of a real daemon:
//
//   - it creates the control pipe <CUDA_MPS_PIPE_DIRECTORY>/control (a FIFO);
//   - it writes the settings it was given (limits, multi-user mode) to
//     <CUDA_MPS_LOG_DIRECTORY>/limits.json, then <CUDA_MPS_LOG_DIRECTORY>/ready,
//     which the pod's readiness probe checks;
//   - on SIGTERM or SIGINT it removes the control pipe and the ready file and
//     exits 0.
//
// Stale files of an earlier run are replaced at start.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// Limits is the content of limits.json.
type Limits struct {
	VisibleDevices                  []string          `json:"visibleDevices"`
	DefaultActiveThreadPercentage   *int              `json:"defaultActiveThreadPercentage,omitempty"`
	DefaultPinnedDeviceMemoryLimits map[string]string `json:"defaultPinnedDeviceMemoryLimits,omitempty"`
	// MultiUser is true when the daemon was started in multi-user mode
	// (--multiuser, the real daemon's -M).
	MultiUser bool `json:"multiUser,omitempty"`
}

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := run(os.Args[1:], sigs); err != nil {
		fmt.Fprintf(os.Stderr, "gpu-mps-mock-daemon: %v\n", err)
		os.Exit(1)
	}
}

// run starts the mock daemon and stops it when stop delivers a signal.
func run(args []string, stop <-chan os.Signal) error {
	fs := flag.NewFlagSet("gpu-mps-mock-daemon", flag.ContinueOnError)
	percentage := fs.Int("active-thread-percentage", 0, "default active thread percentage, 1..100; 0: not set")
	multiUser := fs.Bool("multiuser", false, "multi-user mode, as nvidia-cuda-mps-control -M")
	limits := map[string]string{}
	fs.Func("pinned-device-mem-limit", "UUID=VALUE, e.g. GPU-1234=1024M (repeatable)", func(s string) error {
		uuid, value, ok := strings.Cut(s, "=")
		if !ok || uuid == "" || value == "" {
			return fmt.Errorf("%q: want UUID=VALUE such as GPU-1234=1024M", s)
		}
		limits[uuid] = value
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	pipeDir, logDir := os.Getenv("CUDA_MPS_PIPE_DIRECTORY"), os.Getenv("CUDA_MPS_LOG_DIRECTORY")
	if pipeDir == "" || logDir == "" {
		return errors.New("CUDA_MPS_PIPE_DIRECTORY and CUDA_MPS_LOG_DIRECTORY must be set")
	}
	l := Limits{DefaultPinnedDeviceMemoryLimits: limits, MultiUser: *multiUser}
	if v := os.Getenv("CUDA_VISIBLE_DEVICES"); v != "" {
		l.VisibleDevices = strings.Split(v, ",")
	}
	if *percentage != 0 {
		l.DefaultActiveThreadPercentage = percentage
	}

	control := filepath.Join(pipeDir, "control")
	ready := filepath.Join(logDir, "ready")
	if err := start(control, filepath.Join(logDir, "limits.json"), ready, l); err != nil {
		return err
	}
	fmt.Printf("mock MPS control daemon ready: devices %v\n", l.VisibleDevices)
	sig := <-stop
	fmt.Printf("mock MPS control daemon stopping on %v\n", sig)
	return errors.Join(removeIfExists(ready), removeIfExists(control))
}

func start(control, limitsFile, ready string, l Limits) error {
	if err := errors.Join(removeIfExists(ready), removeIfExists(control)); err != nil {
		return err
	}
	if err := syscall.Mkfifo(control, 0o666); err != nil {
		return fmt.Errorf("creating the control pipe %s: %w", control, err)
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(limitsFile, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", limitsFile, err)
	}
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", ready, err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// Package driverwatch notices when the NVIDIA driver of a node changes (an
// upgrade or downgrade while the plugin runs), so that the plugin can start
// over: the CDI edits it computed at start name the libraries of the old
// driver version, and the NVML it loaded belongs to the old driver.
//
// The plugins react by exiting with an error; the DaemonSet restarts them,
// and the restarted plugin discovers the new driver. Prepared claims survive
// that restart through their checkpoint.
package driverwatch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// DefaultProcRoot is where the kernel reports the loaded driver module.
const DefaultProcRoot = "/proc"

// Fingerprint identifies the installed driver: the loaded kernel module's
// version line (procRoot/driver/nvidia/version) and the file that
// libnvidia-ml.so.1 under driverRoot resolves to (its name carries the user
// space driver version). Either part is empty when absent.
func Fingerprint(driverRoot, procRoot string) string {
	var module string
	if data, err := os.ReadFile(filepath.Join(procRoot, "driver", "nvidia", "version")); err == nil {
		module, _, _ = strings.Cut(string(data), "\n")
	}
	var library string
	if p := inventory.FindNVMLLibrary(driverRoot); p != "" {
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			library = resolved
		}
	}
	return module + "|" + library
}

// Watch polls the fingerprint every interval and calls onChange once, with
// the fingerprints before and after, when it differs from the one at the
// start. It returns when ctx is done or after onChange.
func Watch(ctx context.Context, driverRoot, procRoot string, interval time.Duration, onChange func(before, after string)) {
	WatchNotify(ctx, driverRoot, procRoot, interval, onChange, nil)
}

// WatchNotify is Watch that also calls taken, when not nil, with every
// fingerprint it takes that matches the one at the start: first with that
// one, right after taking it and before the first interval begins (from
// then on a driver change is noticed), then after every poll that found no
// change. taken runs on WatchNotify's goroutine and delays the next poll
// while it runs.
func WatchNotify(ctx context.Context, driverRoot, procRoot string, interval time.Duration, onChange func(before, after string), taken func(fingerprint string)) {
	if taken == nil {
		taken = func(string) {}
	}
	before := Fingerprint(driverRoot, procRoot)
	taken(before)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		after := Fingerprint(driverRoot, procRoot)
		if after != before {
			onChange(before, after)
			return
		}
		taken(after)
	}
}

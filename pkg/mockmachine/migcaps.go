package mockmachine

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// MIGMinorsFile is where LayOutHost writes the mock mig-minors file, relative
// to the driver root: the mock counterpart of
// /proc/driver/nvidia-caps/mig-minors.
const MIGMinorsFile = "proc/driver/nvidia-caps/mig-minors"

// nvidiaCapsMajor is a typical dynamic major of the nvidia-caps driver.
const nvidiaCapsMajor = 508

// MIG capability IDs per GPU, as the NVIDIA driver numbers them: GPU
// instance IDs 0 to 14, compute instance IDs 0 to 7 in each.
const (
	capGPUInstances     = 15
	capComputeInstances = 8
)

// MIGCapMinors returns the capability minors that the NVIDIA driver lists
// in /proc/driver/nvidia-caps/mig-minors for inv: "config" 1, "monitor" 2,
// then for each MIG-capable GPU (by minor) every possible GPU instance
// (IDs 0 to 14) with every possible compute instance (IDs 0 to 7), 9
// minors per GPU instance (the instance's own access first), whether the
// instances exist or not: instances created later have their minors too.
func MIGCapMinors(inv *inventory.Inventory) map[string]int {
	caps := map[string]int{"config": 1, "monitor": 2}
	add := func(minor, gi, ci int) {
		base := 3 + minor*capGPUInstances*(1+capComputeInstances) + gi*(1+capComputeInstances)
		caps[fmt.Sprintf("gpu%d/gi%d/access", minor, gi)] = base
		caps[fmt.Sprintf("gpu%d/gi%d/ci%d/access", minor, gi, ci)] = base + 1 + ci
	}
	for _, d := range inv.Devices {
		if !d.MIGCapable {
			continue
		}
		for gi := 0; gi < capGPUInstances; gi++ {
			for ci := 0; ci < capComputeInstances; ci++ {
				add(d.Minor, gi, ci)
			}
		}
	}
	for _, m := range inv.MIGDevices {
		add(m.ParentMinor, m.GPUInstanceID, m.ComputeInstanceID)
	}
	return caps
}

// createMIGCaps writes the mig-minors file (MIGCapMinors) under the driver
// root and the capability device nodes under the device root. Without
// MIG-capable GPUs it does nothing. The file is replaced (atomically) when it
// does not match inv's GPUs.
func createMIGCaps(opts HostOptions, inv *inventory.Inventory) error {
	caps := MIGCapMinors(inv)
	if len(caps) == 2 {
		return nil
	}
	names := make([]string, 0, len(caps))
	for n := range caps {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %d\n", n, caps[n])
	}
	file := filepath.Join(opts.DriverRoot, MIGMinorsFile)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("mock host: %w", err)
	}
	if err := writeIfChanged(file, []byte(b.String()), 0o644); err != nil {
		return err
	}
	dir := filepath.Join(opts.DevRoot, "dev", "nvidia-caps")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mock host: %w", err)
	}
	for _, n := range names {
		minor := caps[n]
		if err := mknodIfMissing(filepath.Join(dir, fmt.Sprintf("nvidia-cap%d", minor)), unix.Mkdev(nvidiaCapsMajor, uint32(minor))); err != nil {
			return err
		}
	}
	return nil
}

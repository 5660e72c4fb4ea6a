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

// MIGCapMinors returns the capability minors of the MIG devices of inv, in
// the layout the NVIDIA driver uses: "config" 1, "monitor" 2, then for each
// GPU minor 15 GPU instances with 8 compute instances each, 9 minors per GPU
// instance (the instance's own access first).
func MIGCapMinors(inv *inventory.Inventory) map[string]int {
	caps := map[string]int{"config": 1, "monitor": 2}
	for _, m := range inv.MIGDevices {
		gi := 3 + m.ParentMinor*15*9 + m.GPUInstanceID*9
		caps[fmt.Sprintf("gpu%d/gi%d/access", m.ParentMinor, m.GPUInstanceID)] = gi
		caps[fmt.Sprintf("gpu%d/gi%d/ci%d/access", m.ParentMinor, m.GPUInstanceID, m.ComputeInstanceID)] = gi + 1 + m.ComputeInstanceID
	}
	return caps
}

// createMIGCaps writes the mig-minors file under the driver root and the
// capability device nodes under the device root. Without MIG devices it
// does nothing. The file is rewritten every time, so that it matches the
// current MIG devices.
func createMIGCaps(opts HostOptions, inv *inventory.Inventory) error {
	if len(inv.MIGDevices) == 0 {
		return nil
	}
	caps := MIGCapMinors(inv)
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
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("mock host: %w", err)
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

package mockmachine

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// LibDir is where the mock driver's libraries go, relative to the driver root.
const LibDir = "usr/lib/x86_64-linux-gnu"

// Device numbers of the NVIDIA kernel modules: nvidia uses a fixed major;
// nvidia-uvm gets a dynamic one, this is a typical value.
const (
	nvidiaMajor    = 195
	controlMinor   = 255
	nvidiaUVMMajor = 510
)

// libraries are the driver libraries a CUDA container needs, without the
// version suffix.
var libraries = []string{
	"libcuda.so",
	"libcudadebugger.so",
	"libnvidia-ml.so",
	"libnvidia-ptxjitcompiler.so",
	"libnvidia-nvvm.so",
	"libnvidia-opencl.so",
	"libnvidia-cfg.so",
	"libnvidia-allocator.so",
	"libnvidia-gpucomp.so",
}

// binaries are the driver's binaries that stay placeholder files; nvidia-smi
// is a script (NvidiaSMI).
var binaries = []string{
	"nvidia-debugdump",
	"nvidia-persistenced",
	"nvidia-cuda-mps-control",
	"nvidia-cuda-mps-server",
}

// HostOptions say where to lay out the mock host.
type HostOptions struct {
	// DriverRoot receives usr/lib/.../lib*.so.<version> and usr/bin/nvidia-*
	// (usr/bin/nvidia-smi is the script of NvidiaSMI).
	DriverRoot string
	// DevRoot receives dev/nvidia<minor>, dev/nvidiactl, dev/nvidia-uvm and
	// dev/nvidia-uvm-tools as character devices.
	DevRoot string
}

// LayOutHost lays out the files of inv's driver version and device nodes for
// inv's GPUs. It is idempotent: files that exist are kept, except
// usr/bin/nvidia-smi, which is replaced (atomically) when it does not list
// inv's devices, and the mig-minors file, which is rewritten. Device nodes
// need CAP_MKNOD; without it LayOutHost returns an error wrapping ErrNoMknod
// after creating every file.
func LayOutHost(opts HostOptions, inv *inventory.Inventory) error {
	libDir := filepath.Join(opts.DriverRoot, LibDir)
	binDir := filepath.Join(opts.DriverRoot, "usr/bin")
	for _, dir := range []string{libDir, binDir, filepath.Join(opts.DevRoot, "dev")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("mock host: %w", err)
		}
	}
	content := fmt.Appendf(nil, "mock NVIDIA driver %s file\n", inv.DriverVersion)
	for _, lib := range libraries {
		name := lib + "." + inv.DriverVersion
		if err := writeIfMissing(filepath.Join(libDir, name), content, 0o644); err != nil {
			return err
		}
		// The driver's installer creates the SONAME link; the CDI hook
		// creates it in the container, this is the host's.
		if err := symlinkIfMissing(name, filepath.Join(libDir, lib+".1")); err != nil {
			return err
		}
	}
	for _, bin := range binaries {
		if err := writeIfMissing(filepath.Join(binDir, bin), content, 0o755); err != nil {
			return err
		}
	}
	if err := writeIfChanged(filepath.Join(binDir, "nvidia-smi"), NvidiaSMI(inv), 0o755); err != nil {
		return err
	}
	nodes := map[string]uint64{
		"nvidiactl":        unix.Mkdev(nvidiaMajor, controlMinor),
		"nvidia-uvm":       unix.Mkdev(nvidiaUVMMajor, 0),
		"nvidia-uvm-tools": unix.Mkdev(nvidiaUVMMajor, 1),
	}
	for _, d := range inv.Devices {
		nodes[fmt.Sprintf("nvidia%d", d.Minor)] = unix.Mkdev(nvidiaMajor, uint32(d.Minor))
	}
	for name, dev := range nodes {
		if err := mknodIfMissing(filepath.Join(opts.DevRoot, "dev", name), dev); err != nil {
			return err
		}
	}
	return createMIGCaps(opts, inv)
}

// ErrNoMknod means device nodes could not be created (no CAP_MKNOD, or a
// nodev file system).
var ErrNoMknod = errors.New("cannot create device nodes")

func writeIfMissing(path string, data []byte, perm os.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("mock host: %w", err)
	}
	return nil
}

// writeIfChanged replaces the file at path atomically unless it already
// holds data with mode perm.
func writeIfChanged(path string, data []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if info, err := os.Lstat(path); err == nil && info.Mode() == perm {
			return nil
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("mock host: %w", err)
	}
	if err := durable.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("mock host: %w", err)
	}
	return nil
}

func symlinkIfMissing(target, path string) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	if err := os.Symlink(target, path); err != nil {
		return fmt.Errorf("mock host: %w", err)
	}
	return nil
}

func mknodIfMissing(path string, dev uint64) error {
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(dev)); err != nil {
		return fmt.Errorf("mock host: %w: mknod %s: %v", ErrNoMknod, path, err)
	}
	// mknod applies the umask; device nodes must be usable by every container user.
	if err := os.Chmod(path, 0o666); err != nil {
		return fmt.Errorf("mock host: %w", err)
	}
	return nil
}

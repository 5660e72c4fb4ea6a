package node

import (
	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/flagenv"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// Flags locate a node's NVIDIA driver, device nodes, CDI spec directory and
// CDI hook: the one flag group of every binary that opens a GPU node. Each
// flag has an environment twin with the same meaning everywhere:
//
//	--nvml                   NVML_BACKEND            BackendReal or mock:<machine>
//	--driver-root            NVIDIA_DRIVER_ROOT      where this process sees the driver installation
//	--host-driver-root       HOST_DRIVER_ROOT        the same directory as the host (and so the container runtime) sees it
//	--dev-root               NVIDIA_DEV_ROOT         where this process sees the root of the driver's device nodes (dev/nvidia*)
//	--mock-host-root         MOCK_HOST_ROOT          host directory of a mock machine's driver files and device nodes
//	--sysfs-root             SYSFS_ROOT              where this process sees the host's sysfs (the GPUs' PCIe roots)
//	--cdi-root               CDI_ROOT                host directory of the driver's CDI specs
//	--nvidia-cdi-hook-path   NVIDIA_CDI_HOOK_PATH    host path of nvidia-cdi-hook, named in the CDI specs
//	--install-cdi-hook-from  INSTALL_CDI_HOOK_FROM   a nvidia-cdi-hook binary to copy to the hook path at start
//
// A binary whose process sees the host's / elsewhere (the gpudra host
// tool's --host-root) reads the host paths (--mock-host-root, --cdi-root,
// and --dev-root when its driver root is the host's) under that root; Open
// does that translation, so the variables mean the same in every container
// of the chart.
type Flags struct {
	NVML            string
	DriverRoot      string
	HostDriverRoot  string
	DevRoot         string
	MockHostRoot    string
	SysfsRoot       string
	CDIRoot         string
	HookPath        string
	InstallHookFrom string
}

// Which flag groups a binary defines.
type FlagGroup uint

const (
	// Locate: --nvml, --driver-root, --host-driver-root, --dev-root,
	// --mock-host-root, --sysfs-root.
	Locate FlagGroup = 1 << iota
	// CDI: --cdi-root and --nvidia-cdi-hook-path.
	CDI
	// HookInstall: --install-cdi-hook-from.
	HookInstall
)

// DefaultCDIRoot is the default of --cdi-root: the container runtimes'
// directory for transient specs.
const DefaultCDIRoot = "/var/run/cdi"

// AddFlags defines the flags of groups on set, with one help text each.
func (f *Flags) AddFlags(set *flagenv.Set, groups FlagGroup) {
	if groups&Locate != 0 {
		set.String(&f.NVML, "nvml", "NVML_BACKEND", BackendReal, BackendHelp())
		set.String(&f.DriverRoot, "driver-root", "NVIDIA_DRIVER_ROOT", "/",
			"where this process sees the root of the NVIDIA driver installation: / for a host install, /run/nvidia/driver with the GPU Operator's driver container (the chart mounts it at /driver-root)")
		set.String(&f.HostDriverRoot, "host-driver-root", "HOST_DRIVER_ROOT", "",
			"the driver root as the host (and its container runtime) sees it, when this process sees it elsewhere; empty: same as --driver-root")
		set.String(&f.DevRoot, "dev-root", "NVIDIA_DEV_ROOT", "",
			"where this process sees the root under which the driver's device nodes (dev/nvidia*) are; empty: the driver root if it has dev/nvidiactl, else /")
		set.String(&f.MockHostRoot, "mock-host-root", "MOCK_HOST_ROOT", "",
			"with a mock NVML backend: host directory where the kubelet plugin lays out the mock driver's files and device nodes; it is then the driver root and device root of every binary")
		set.String(&f.SysfsRoot, "sysfs-root", "SYSFS_ROOT", resourceslice.DefaultSysfsRoot,
			"where this process sees the host's sysfs, from which the kubelet plugin reads the GPUs' PCIe roots (the chart mounts it at /host-sys); a GPU whose bus ID has no NVIDIA device there is published without pcieRoot")
	}
	if groups&CDI != 0 {
		set.String(&f.CDIRoot, "cdi-root", "CDI_ROOT", DefaultCDIRoot, "host directory of the driver's CDI specs; the container runtime must read it")
		set.String(&f.HookPath, "nvidia-cdi-hook-path", "NVIDIA_CDI_HOOK_PATH", cdi.DefaultHookPath, "host path of nvidia-cdi-hook, named in the CDI specs")
	}
	if groups&HookInstall != 0 {
		set.String(&f.InstallHookFrom, "install-cdi-hook-from", "INSTALL_CDI_HOOK_FROM", "",
			"copy this nvidia-cdi-hook binary to --nvidia-cdi-hook-path at start (from the image to the host)")
	}
}

// Validate reports flag combinations that cannot work, as usage errors: a
// mock host root without a mock backend. An unknown backend is Open's error.
func (f Flags) Validate() error {
	b, err := ParseBackend(f.NVML, "")
	if err == nil && f.MockHostRoot != "" && !b.Mock() {
		return errNeedsMock(b)
	}
	return nil
}

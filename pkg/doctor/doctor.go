// Package doctor checks whether a node is ready for the GPU plugins: the
// NVIDIA driver (NVML, libraries, device nodes), the CDI spec directories and
// the specs in them (stale specs of an older driver, zero-byte libraries,
// missing host paths, conflicts), and the container runtime's CDI support
// (containerd, CRI-O, Docker, k3s).
//
// Every host path (configs, /dev, spec directories, the paths specs name) is
// read under Config.HostRoot, so the checks run the same on the host ("/")
// and in a container that mounts the host's / elsewhere (the chart's init
// container uses /host), and tests run them against a fake host in a temp
// dir. Run only reads; it never changes the host.
package doctor

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/node"
)

// Status is the verdict of one check.
type Status string

// The statuses, from good to bad.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Result is the outcome of one check.
type Result struct {
	// Check names what was checked, e.g. "containerd/cdi".
	Check string `json:"check"`
	// Status is PASS, WARN or FAIL.
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do; empty on PASS.
	Fix string `json:"fix,omitempty"`
}

// Config says what to check and where.
type Config struct {
	// HostRoot is where this process sees the host's /; every host path is
	// read under it. Empty means "/".
	HostRoot string
	// NVMLBackend is the --nvml value (node.ParseBackend).
	NVMLBackend string
	// Seed makes mock UUIDs match the plugin's (the node name).
	Seed string
	// DriverRoot is where this process sees the driver installation (not
	// under HostRoot: the chart mounts it at /driver-root). Ignored with
	// MockHostRoot.
	DriverRoot string
	// DevRoot is where this process sees the root under which dev/nvidia*
	// are (the meaning of --dev-root in every binary); empty means the
	// driver root when it holds dev/nvidiactl (as for the CDI edits), else
	// the host's /, read under HostRoot. Ignored with MockHostRoot.
	DevRoot string
	// MockHostRoot is the host directory where the plugin lays out the mock
	// driver (with a mock backend). It is both driver root and device root,
	// read under HostRoot; it may not exist yet, as the plugin creates it
	// when it starts, so its absence is a warning only.
	MockHostRoot string
	// CDIDirs are the host's CDI spec directories, in the runtime's order
	// of precedence (later wins).
	CDIDirs []string
	// CDIRoot is the host directory where the plugin writes its specs; the
	// container runtime must read it.
	CDIRoot string
	// DriverName is the DRA driver name; specs of kind k8s.<DriverName>/*
	// are the plugin's.
	DriverName string
	// ContainerdConfig is the host path of containerd's config; empty
	// means /etc/containerd/config.toml.
	ContainerdConfig string
	// PreStart says that the doctor runs right before the plugin starts
	// (the chart's init container): problems of the plugin's own CDI specs,
	// which it rewrites when it starts, are then WARN instead of FAIL, so
	// that the doctor does not keep the plugin from repairing them.
	PreStart bool
	// VersionTimeout bounds each `<runtime> --version`; zero means 5s.
	VersionTimeout time.Duration
}

// Report is the outcome of a Run, in the order the checks ran.
type Report struct {
	Results []Result `json:"results"`
}

// Failed tells whether any check failed.
func (r *Report) Failed() bool {
	for _, res := range r.Results {
		if res.Status == Fail {
			return true
		}
	}
	return false
}

// Count returns how many results have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

func (r *Report) add(results ...Result) { r.Results = append(r.Results, results...) }

// env is one Run's view of the host.
type env struct {
	cfg  Config
	host hostFS
	// driver is the running driver's inventory, nil when NVML failed.
	driver *inventory.Inventory
	// mock tells whether the driver files are the plugin's mock host.
	mock bool
}

// Run runs every check and returns the report. It does not fail: a check
// that cannot run reports WARN or FAIL itself.
func Run(ctx context.Context, cfg Config) *Report {
	logger := klog.FromContext(ctx).WithName("doctor")
	ctx = klog.NewContext(ctx, logger)
	if cfg.HostRoot == "" {
		cfg.HostRoot = "/"
	}
	if cfg.ContainerdConfig == "" {
		cfg.ContainerdConfig = "/etc/containerd/config.toml"
	}
	if cfg.VersionTimeout == 0 {
		cfg.VersionTimeout = 5 * time.Second
	}
	if cfg.CDIRoot != "" && !containsPath(cfg.CDIDirs, cfg.CDIRoot) {
		cfg.CDIDirs = append(cfg.CDIDirs, cfg.CDIRoot)
	}
	e := &env{cfg: cfg, host: hostFS{root: filepath.Clean(cfg.HostRoot)}, mock: cfg.MockHostRoot != ""}
	r := &Report{}

	var res Result
	res, e.driver = checkNVML(ctx, cfg)
	r.add(res)
	r.add(checkDriverLibraries(e))
	r.add(checkDeviceNodes(e))
	r.add(checkCDIDirs(e)...)
	r.add(checkCDISpecs(e)...)
	r.add(checkRuntimes(ctx, e)...)

	for _, res := range r.Results {
		logger.V(2).Info("Check", "check", res.Check, "status", res.Status, "detail", res.Detail)
	}
	return r
}

// openNVML opens the node as the plugins do (node.Open: backend, NVML,
// discovery) and returns its inventory; NVML is shut down before it returns,
// as the checks only need the inventory. The mock host root is opened only
// once the plugin has laid it out (it holds the mock machine's faults,
// mockmachine.FaultsFile): the file checks look at it, and warn while it is
// not there yet.
func openNVML(ctx context.Context, cfg Config) (*inventory.Inventory, error) {
	f := node.Flags{NVML: cfg.NVMLBackend, DriverRoot: cfg.DriverRoot}
	if b, err := node.ParseBackend(cfg.NVMLBackend, ""); err == nil && b.Mock() && cfg.MockHostRoot != "" {
		if _, err := os.Stat(filepath.Join(cfg.HostRoot, cfg.MockHostRoot)); err == nil {
			f.MockHostRoot = cfg.MockHostRoot
		}
	}
	n, err := node.Open(ctx, f, node.Options{Mode: node.HostTool, Seed: cfg.Seed, HostRoot: cfg.HostRoot})
	if err != nil {
		return nil, err
	}
	defer n.Close()
	return n.Inventory, nil
}

func containsPath(list []string, p string) bool {
	for _, x := range list {
		if filepath.Clean(x) == filepath.Clean(p) {
			return true
		}
	}
	return false
}

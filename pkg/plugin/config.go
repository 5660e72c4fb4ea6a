package plugin

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// Config is everything the plugin needs; cmd/gpu-kubelet-plugin fills it
// from flags and environment variables.
type Config struct {
	NodeName   string
	DriverName string
	// Node locates the driver, its device nodes, the CDI spec directory and
	// the CDI hook (see node.Flags).
	Node node.Flags
	// Kubelet is where the kubelet finds the plugin.
	Kubelet KubeletConfig
	// KubeClient talks to the API server.
	KubeClient kubernetes.Interface
	// Metrics configures the metrics server.
	Metrics MetricsConfig
	// BootIDPath defaults to checkpoint's boot ID file.
	BootIDPath string
	// DriverWatchInterval is how often the plugin checks whether the driver
	// changed; it stops with an error when it did, so that it restarts with
	// edits of the new driver. Zero turns the check off.
	DriverWatchInterval time.Duration
	// Health configures GPU health monitoring (see health.go).
	Health HealthConfig
	// MPS configures MPS sharing (see mps.go); a zero value turns it off.
	MPS MPSConfig
	// StaleClaims configures the sweep of recorded claims that are gone
	// from the API server (see stale.go); a zero value turns it off.
	StaleClaims StaleClaimsConfig
	// DynamicMIG configures MIG devices made on demand (see
	// dynamicmig.go); a zero value turns it off.
	DynamicMIG DynamicMIGConfig
	// ConsumableCapacity shares whole GPUs between claims (see
	// shares.go); the zero value turns it off.
	ConsumableCapacity resourceslice.ConsumableCapacity
	// DeviceMetadata turns on the device metadata files (KEP-5304) that the
	// kubeletplugin helper writes and mounts into the containers through
	// CDI specs in Node.CDIRoot. Off by default: the helper removes them
	// only on the kubelet's unprepare, not when the stale sweep unprepares.
	DeviceMetadata bool
}

// StaleClaimsConfig configures the periodic sweep of stale claims: claims
// recorded on the node that the API server no longer has for this node
// (deleted, created again with another UID, deallocated), which would
// otherwise hold their GPUs for good. A prepare that needs a device of such
// a claim unprepares it whatever this says.
type StaleClaimsConfig struct {
	// GracePeriod is how long a claim stays prepared before the sweep
	// checks it; zero turns the sweep off.
	GracePeriod time.Duration
	// SweepInterval is how often the sweep runs; zero: the grace period,
	// at most a minute.
	SweepInterval time.Duration
}

// KubeletConfig is the plugin's side of the kubelet.
type KubeletConfig struct {
	// RegistrarDir is the kubelet's plugin registration directory.
	RegistrarDir string
	// PluginsDir is the parent of the plugin data directory
	// (<PluginsDir>/<DriverName>), which holds the DRA socket and the
	// claim checkpoint.
	PluginsDir string
	// PodUID, when set, enables seamless rolling updates of the DaemonSet.
	PodUID types.UID
}

// MetricsConfig configures the metrics server.
type MetricsConfig struct {
	// Address serves /metrics, /healthz and /readyz ("" = off).
	Address string
	// Profiling also serves Go's /debug/pprof/ on Address.
	Profiling bool
}

// HealthConfig configures GPU health monitoring through NVML events:
// unhealthy GPUs are reported to the kubelet and tainted in the
// ResourceSlices (see pkg/health).
type HealthConfig struct {
	// Enabled turns the monitor on; off, every device is reported healthy.
	Enabled bool
	// Monitor tunes the monitor (ignored XIDs, recovery period); the
	// node's backend completes it (node.Node.HealthOptions).
	Monitor health.Options
	// TaintEffect of unhealthy GPUs: "NoSchedule" (default) or "NoExecute".
	// Unmonitored GPUs are always tainted NoSchedule.
	TaintEffect string
	// ResendInterval is how often the health report is re-sent to the
	// kubelet; defaults to 15 s.
	ResendInterval time.Duration
}

// PluginDataDir is where the plugin keeps its socket and checkpoint.
func (c Config) PluginDataDir() string { return filepath.Join(c.Kubelet.PluginsDir, c.DriverName) }

func (c *Config) validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("the node name is required (--node-name or NODE_NAME)"))
	}
	if c.DriverName == "" {
		errs = append(errs, errors.New("the driver name is required (--driver-name or DRIVER_NAME)"))
	}
	if c.KubeClient == nil {
		errs = append(errs, errors.New("a Kubernetes client is required"))
	}
	if c.StaleClaims.GracePeriod < 0 {
		errs = append(errs, fmt.Errorf("--stale-claim-grace-period=%s: want a duration such as 5m, or 0 to turn the sweep of stale claims off", c.StaleClaims.GracePeriod))
	}
	for flag, dir := range map[string]string{"--cdi-root": c.Node.CDIRoot, "--kubelet-registrar-directory-path": c.Kubelet.RegistrarDir, "--kubelet-plugins-directory-path": c.Kubelet.PluginsDir} {
		if dir == "" {
			errs = append(errs, fmt.Errorf("%s must not be empty", flag))
		}
	}
	return errors.Join(errs...)
}

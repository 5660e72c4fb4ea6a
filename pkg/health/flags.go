package health

import (
	"fmt"
	"time"

	"github.com/gpudra/gpudra/pkg/flagenv"
)

// Flags are the health monitor's command-line flags, the same in both
// plugins. Define them with AddFlags, read them with Options after parsing.
type Flags struct {
	// Enabled is --health-monitor.
	Enabled        bool
	ignoredXIDs    string
	replace        bool
	recoveryPeriod string
}

// AddFlags defines --health-monitor, --health-ignored-xids,
// --health-replace-ignored-xids and --health-recovery-period on env's flag
// set, with their environment twins (HEALTH_MONITOR, HEALTH_IGNORED_XIDS,
// HEALTH_REPLACE_IGNORED_XIDS, HEALTH_RECOVERY_PERIOD).
func (f *Flags) AddFlags(env *flagenv.Set) {
	env.Bool(&f.Enabled, "health-monitor", "HEALTH_MONITOR", true, "watch the GPUs through NVML events (critical XIDs, double-bit ECC errors, GPUs fallen off the bus) and report unhealthy ones")
	env.String(&f.ignoredXIDs, "health-ignored-xids", "HEALTH_IGNORED_XIDS", "",
		fmt.Sprintf("comma-separated XIDs that do not make a GPU unhealthy, in addition to the application-caused defaults %v", DefaultIgnoredXIDs()))
	env.Bool(&f.replace, "health-replace-ignored-xids", "HEALTH_REPLACE_IGNORED_XIDS", false, "--health-ignored-xids replaces the default list instead of extending it (an empty list then ignores no XID)")
	env.String(&f.recoveryPeriod, "health-recovery-period", "HEALTH_RECOVERY_PERIOD", "0s",
		"a GPU with a critical XID or double-bit ECC error is healthy again after this long without errors; 0 means never (reset the GPU, then restart the plugin). Lost GPUs recover when NVML sees them again")
}

// Options returns the monitor options the flags ask for.
func (f *Flags) Options() (Options, error) {
	xids, err := ParseXIDs(f.ignoredXIDs)
	if err != nil {
		return Options{}, fmt.Errorf("--health-ignored-xids: %w", err)
	}
	d, err := time.ParseDuration(f.recoveryPeriod)
	if err != nil || d < 0 {
		return Options{}, fmt.Errorf("--health-recovery-period=%q: want a duration such as 10m, or 0 for never", f.recoveryPeriod)
	}
	return Options{AdditionalIgnoredXIDs: xids, ReplaceIgnoredXIDs: f.replace, RecoveryPeriod: d}, nil
}

package doctor

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/blang/semver/v4"
	"k8s.io/klog/v2"
)

// The oldest runtime versions that inject CDI devices.
var (
	minContainerd = semver.MustParse("1.7.0")
	minCRIO       = semver.MustParse("1.23.0")
	minDocker     = semver.MustParse("25.0.0")
	// someContainerd2 stands for "some containerd 2.x" when only the
	// config version tells.
	someContainerd2 = semver.MustParse("2.0.0")
	// Docker enables CDI without features.cdi from this version on.
	dockerCDIDefault = semver.MustParse("28.0.0")
)

// binDirs is the PATH searched for runtime binaries, under the host root.
var binDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

var versionRE = regexp.MustCompile(`v?([0-9]+\.[0-9]+(\.[0-9]+)?)`)

// runtimeVersion is a container runtime's version and where it came from.
type runtimeVersion struct {
	// v is nil when the version is unknown.
	v *semver.Version
	// label, when set, is shown instead of v (a version inferred as "2.x").
	label string
	// source says how it was found, or why it is unknown.
	source string
}

func (rv runtimeVersion) String() string {
	if rv.v == nil {
		return "unknown (" + rv.source + ")"
	}
	if rv.label != "" {
		return fmt.Sprintf("%s (%s)", rv.label, rv.source)
	}
	return fmt.Sprintf("%s (%s)", rv.v, rv.source)
}

// findBinary returns the host path of the first executable named name on
// the host's PATH, or "".
func (e *env) findBinary(name string) string {
	for _, dir := range binDirs {
		p := filepath.Join(dir, name)
		if info, err := e.host.stat(p); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// binaryVersion reads the version of the runtime binary at host path p:
// from the Go build information (no execution), else from `p --version`,
// bounded by the configured timeout. A binary that cannot run here (a
// dynamically linked host binary seen from a container) gives an unknown
// version.
func (e *env) binaryVersion(ctx context.Context, p string) runtimeVersion {
	local := e.host.path(p)
	if info, err := buildinfo.ReadFile(local); err == nil {
		if v, err := semver.ParseTolerant(info.Main.Version); err == nil && info.Main.Version != "(devel)" {
			return runtimeVersion{v: &v, source: p + " build info"}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.VersionTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, local, "--version").Output()
	if err != nil {
		klog.FromContext(ctx).V(3).Info("Runtime version unknown", "binary", p, "err", err)
		return runtimeVersion{source: fmt.Sprintf("`%s --version` failed: %v", p, err)}
	}
	v := parseVersion(string(out))
	if v == nil {
		return runtimeVersion{source: fmt.Sprintf("`%s --version` printed no version: %q", p, strings.TrimSpace(string(out)))}
	}
	return runtimeVersion{v: v, source: p + " --version"}
}

// parseVersion returns the first version number in s.
func parseVersion(s string) *semver.Version {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return nil
	}
	v, err := semver.ParseTolerant(m[1])
	if err != nil {
		return nil
	}
	return &v
}

// versionResult compares a runtime's version with the oldest that
// supports CDI.
func versionResult(runtime string, rv runtimeVersion, min semver.Version, upgrade string) Result {
	check := runtime + "/version"
	switch {
	case rv.v == nil:
		return Result{Check: check, Status: Warn, Detail: "version " + rv.String(),
			Fix: fmt.Sprintf("check by hand that %s is %d.%d or newer (the first with CDI support); run the doctor on the host for an exact answer", runtime, min.Major, min.Minor)}
	case rv.v.LT(min):
		return Result{Check: check, Status: Fail, Detail: fmt.Sprintf("version %s is older than %d.%d, the first with CDI support", rv, min.Major, min.Minor), Fix: upgrade}
	}
	return Result{Check: check, Status: Pass, Detail: fmt.Sprintf("version %s supports CDI (%d.%d+)", rv, min.Major, min.Minor)}
}

// nvidiaDefaultRuntime reports the nvidia runtime set as the default one.
func nvidiaDefaultRuntime(runtime, name, where, fix string) Result {
	check := runtime + "/default-runtime"
	if name == "" {
		name = "the built-in default"
	}
	if strings.Contains(name, "nvidia") {
		return Result{Check: check, Status: Warn,
			Detail: fmt.Sprintf("the default runtime is %q (%s): it injects GPUs into every container that asks by environment variable (NVIDIA_VISIBLE_DEVICES), bypassing the scheduler", name, where),
			Fix:    "with CDI the nvidia runtime is not needed as default: " + fix}
	}
	return Result{Check: check, Status: Pass, Detail: fmt.Sprintf("default runtime %s", name)}
}

// checkRuntimes checks every container runtime found on the host.
func checkRuntimes(ctx context.Context, e *env) []Result {
	var out []Result
	cri := false
	for _, check := range []func(context.Context, *env) ([]Result, bool){checkContainerd, checkK3s, checkCRIO} {
		res, found := check(ctx, e)
		out = append(out, res...)
		cri = cri || found
	}
	res, dockerFound := checkDocker(ctx, e, cri)
	out = append(out, res...)
	if !cri && !dockerFound {
		out = append(out, Result{Check: "container-runtime", Status: Warn,
			Detail: fmt.Sprintf("no containerd, CRI-O, Docker or k3s configuration or binary under host root %s", e.cfg.HostRoot),
			Fix:    "CDI support of the runtime was not checked: run the doctor on the node, or with --host-root at the node's / (the chart mounts it at /host); give a containerd config elsewhere with --containerd-config"})
	}
	return out
}

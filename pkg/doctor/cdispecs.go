package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	"tags.cncf.io/container-device-interface/specs-go"
)

// Vendors of the NVIDIA CDI kinds whose specs the doctor inspects, besides
// k8s.<driver name> and any other vendor under nvidia.com.
const (
	vendorToolkit      = "nvidia.com"
	vendorDRA          = "k8s.gpu.nvidia.com"
	vendorDevicePlugin = "k8s.device-plugin.nvidia.com"
)

// driverVersionRE matches an NVIDIA driver version ("550.54.15", "560.35");
// the three-digit major tells it from the versions of third-party
// libraries the specs also mount (libnvidia-egl-wayland.so.1.1.13).
var driverVersionRE = regexp.MustCompile(`^[1-9][0-9]{2}\.[0-9]+(\.[0-9]+)?$`)

// isNVIDIAVendor tells whether specs of vendor come from NVIDIA tooling or
// from this driver's plugins.
func (e *env) isNVIDIAVendor(vendor string) bool {
	switch {
	case vendor == vendorToolkit, vendor == vendorDRA, vendor == vendorDevicePlugin:
		return true
	case e.cfg.DriverName != "" && vendor == "k8s."+e.cfg.DriverName:
		return true
	}
	return strings.HasSuffix(vendor, "."+vendorToolkit)
}

// pluginOwner names the plugin that writes, and rewrites at start, the
// specs of vendor; "" for specs an operator or a tool wrote.
func (e *env) pluginOwner(vendor string) string {
	switch {
	case vendor == vendorDevicePlugin:
		return "gpu-device-plugin"
	case vendor == vendorDRA, e.cfg.DriverName != "" && vendor == "k8s."+e.cfg.DriverName:
		return "gpu-kubelet-plugin"
	}
	return ""
}

// checkCDIDirs checks that the spec directories exist. A missing directory
// is a warning: runtimes treat it as empty, and the plugin creates its own.
func checkCDIDirs(e *env) []Result {
	var out []Result
	for _, dir := range e.cfg.CDIDirs {
		check := "cdi/dir " + dir
		info, err := e.host.stat(dir)
		switch {
		case os.IsNotExist(err):
			fix := fmt.Sprintf("`mkdir -p %s` if you put specs there (e.g. `gpudra cdi generate --output %s/nvidia.yaml`); runtimes treat a missing directory as empty", dir, dir)
			if filepath.Clean(dir) == filepath.Clean(e.cfg.CDIRoot) {
				fix = "none needed: the plugin creates its CDI directory when it starts"
			}
			out = append(out, Result{Check: check, Status: Warn, Detail: "does not exist", Fix: fix})
		case err != nil:
			out = append(out, Result{Check: check, Status: Fail, Detail: err.Error(), Fix: "make the directory readable: the container runtime reads it as root"})
		case !info.IsDir():
			out = append(out, Result{Check: check, Status: Fail, Detail: "is not a directory", Fix: fmt.Sprintf("move the file %s away and create the directory", dir)})
		default:
			n := len(e.host.glob(filepath.Join(dir, "*.json"))) + len(e.host.glob(filepath.Join(dir, "*.yaml")))
			out = append(out, Result{Check: check, Status: Pass, Detail: fmt.Sprintf("%d spec files", n)})
		}
	}
	return out
}

// kindProblems collects what is wrong with the specs of one CDI kind.
type kindProblems struct {
	vendor  string
	files   []string
	devices int
	missing map[string]bool
	empty   map[string]bool
	// stale maps a driver version other than the running one to the host
	// paths that carry it.
	stale map[string][]string
}

// checkCDISpecs loads the spec directories with the CDI library, as the
// container runtime does, and reports what it rejects (invalid specs,
// conflicting devices) and, for every NVIDIA kind, host paths that do not
// exist, zero-byte files and libraries of a driver version other than the
// running one.
func checkCDISpecs(e *env) []Result {
	dirs := make([]string, 0, len(e.cfg.CDIDirs))
	for _, d := range e.cfg.CDIDirs {
		dirs = append(dirs, e.host.path(d))
	}
	cache, err := cdiapi.NewCache(cdiapi.WithSpecDirs(dirs...), cdiapi.WithAutoRefresh(false))
	if err != nil {
		return []Result{{Check: "cdi/specs", Status: Fail, Detail: err.Error(), Fix: "report this as a bug"}}
	}
	var out []Result
	out = append(out, e.cacheErrors(cache)...)

	kinds := map[string]*kindProblems{}
	for _, vendor := range cache.ListVendors() {
		if !e.isNVIDIAVendor(vendor) {
			continue
		}
		for _, spec := range cache.GetVendorSpecs(vendor) {
			k := kinds[spec.Kind]
			if k == nil {
				k = &kindProblems{vendor: vendor, missing: map[string]bool{}, empty: map[string]bool{}, stale: map[string][]string{}}
				kinds[spec.Kind] = k
			}
			k.files = append(k.files, e.host.hostPath(spec.GetPath()))
			k.devices += len(spec.Devices)
			e.inspectSpec(spec.Spec, k)
		}
	}
	if len(kinds) == 0 {
		return append(out, Result{Check: "cdi/specs", Status: Pass,
			Detail: fmt.Sprintf("no NVIDIA CDI specs in %s (the plugins write theirs when they run)", strings.Join(e.cfg.CDIDirs, ", "))})
	}
	names := make([]string, 0, len(kinds))
	for kind := range kinds {
		names = append(names, kind)
	}
	sort.Strings(names)
	for _, kind := range names {
		out = append(out, e.kindResult(kind, kinds[kind]))
	}
	return out
}

// cacheErrors reports the CDI library's errors per spec file: specs it
// could not load and devices that two specs of the same priority define
// (the runtime resolves neither).
func (e *env) cacheErrors(cache *cdiapi.Cache) []Result {
	errs := cache.GetErrors()
	paths := make([]string, 0, len(errs))
	for p := range errs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out []Result
	for _, p := range paths {
		var msgs []string
		for _, err := range errs[p] {
			msgs = append(msgs, err.Error())
		}
		hostPath := e.host.hostPath(p)
		res := Result{Check: "cdi/load " + hostPath, Status: Warn, Detail: strings.Join(msgs, "; "),
			Fix: fmt.Sprintf("fix or remove %s: the container runtime ignores it (or the conflicting devices) and logs the same error", hostPath)}
		if vendor := specFileVendor(p); e.isNVIDIAVendor(vendor) {
			res.Status = Fail
			if owner := e.pluginOwner(vendor); owner != "" {
				res.Fix = fmt.Sprintf("delete %s and restart the %s pod on this node: it rewrites its specs", hostPath, owner)
				if e.cfg.PreStart {
					res.Status = Warn
				}
			} else {
				res.Fix = fmt.Sprintf("GPUs of this spec cannot be injected: keep one spec per NVIDIA kind, e.g. `gpudra cdi generate --output %s` and delete the other", hostPath)
			}
		}
		out = append(out, res)
	}
	return out
}

// specFileVendor reads the kind's vendor of a spec file that the CDI
// library may have rejected; "" when even that fails.
func specFileVendor(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return ""
	}
	vendor, _ := parser.ParseQualifier(head.Kind)
	return vendor
}

// inspectSpec records the problems of the host paths that spec names.
func (e *env) inspectSpec(spec *specs.Spec, k *kindProblems) {
	edits := []specs.ContainerEdits{spec.ContainerEdits}
	for _, d := range spec.Devices {
		edits = append(edits, d.ContainerEdits)
	}
	seen := map[string]bool{}
	check := func(p string, file bool) {
		if p == "" || !filepath.IsAbs(p) || seen[p] {
			return
		}
		seen[p] = true
		info, err := e.host.stat(p)
		switch {
		case err != nil:
			k.missing[p] = true
		case file && info.Mode().IsRegular() && info.Size() == 0:
			k.empty[p] = true
		}
		if v := pathDriverVersion(p); v != "" && e.driver != nil && v != e.driver.DriverVersion {
			k.stale[v] = append(k.stale[v], p)
		}
	}
	for _, ed := range edits {
		for _, n := range ed.DeviceNodes {
			if n.HostPath != "" {
				check(n.HostPath, false)
			} else {
				check(n.Path, false)
			}
		}
		for _, m := range ed.Mounts {
			if m.Type == "" || m.Type == "bind" {
				check(m.HostPath, true)
			}
		}
		for _, h := range ed.Hooks {
			check(h.Path, false)
		}
	}
}

// pathDriverVersion returns the driver version that a path carries, in a
// library's suffix (libcuda.so.550.54.15) or as a directory
// (/lib/firmware/nvidia/550.54.15/gsp.bin); "" when it carries none.
func pathDriverVersion(p string) string {
	base := filepath.Base(p)
	if i := strings.Index(base, ".so."); i > 0 && strings.HasPrefix(base, "lib") {
		if v := base[i+len(".so."):]; driverVersionRE.MatchString(v) {
			return v
		}
	}
	for _, part := range strings.Split(filepath.Dir(p), "/") {
		if driverVersionRE.MatchString(part) {
			return part
		}
	}
	return ""
}

func (e *env) kindResult(kind string, k *kindProblems) Result {
	check := "cdi/spec " + kind
	sort.Strings(k.files)
	owner := e.pluginOwner(k.vendor)
	regenerate := func() string {
		if owner != "" {
			return fmt.Sprintf("restart the %s pod on this node: it rewrites them (%s)", owner, pathList(k.files, 3))
		}
		out := k.files[0]
		if len(k.files) > 1 || filepath.Dir(out) != "/etc/cdi" {
			out = "/etc/cdi/nvidia.yaml"
		}
		fix := fmt.Sprintf("regenerate with `gpudra cdi generate --output %s`", out)
		if len(k.files) > 1 || k.files[0] != out {
			fix += " and delete " + pathList(k.files, 3)
		}
		return fix
	}
	fail := func(detail, fix string) Result {
		res := Result{Check: check, Status: Fail, Detail: detail, Fix: fix}
		if owner != "" && e.cfg.PreStart {
			// The plugin about to start rewrites its specs; failing here
			// would keep it from doing so.
			res.Status = Warn
			res.Fix = "none needed if the plugin starts: it rewrites its specs at start; else " + fix
		}
		return res
	}
	var problems []string
	if len(k.stale) > 0 {
		var versions, paths []string
		for v, ps := range k.stale {
			versions = append(versions, v)
			paths = append(paths, ps...)
		}
		sort.Strings(versions)
		sort.Strings(paths)
		problems = append(problems, fmt.Sprintf("stale spec from driver %s, running %s (%s)", strings.Join(versions, ", "), e.driver.DriverVersion, pathList(paths, 3)))
	}
	if len(k.empty) > 0 {
		problems = append(problems, "zero-byte files: "+pathList(sortedKeys(k.empty), 3))
	}
	if len(k.missing) > 0 {
		problems = append(problems, "host paths that do not exist: "+pathList(sortedKeys(k.missing), 3))
	}
	if len(problems) > 0 {
		fix := regenerate()
		if len(k.empty) > 0 {
			fix = "reinstall the NVIDIA driver (its files were truncated), then " + fix
		}
		return fail(fmt.Sprintf("%s: %s", pathList(k.files, 3), strings.Join(problems, "; ")), fix)
	}
	detail := fmt.Sprintf("%d spec files, %d devices, every host path present", len(k.files), k.devices)
	if e.driver != nil {
		detail += ", driver " + e.driver.DriverVersion
	} else {
		detail += " (driver version not compared: NVML failed)"
	}
	return Result{Check: check, Status: Pass, Detail: detail}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

package doctor

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// containerdSettings are the CDI-related settings of a containerd config.
type containerdSettings struct {
	// schema is the config's `version`: 1 (or absent), 2 (containerd
	// 1.x/2.x), 3 or later (containerd 2.x only).
	schema int64
	// table is the CRI plugin's table that holds enable_cdi.
	table          string
	enableCDI      *bool
	specDirs       []string
	specDirsSet    bool
	defaultRuntime string
}

// criTable is the CRI plugin's table of each config schema.
func criTable(schema int64) string {
	switch {
	case schema >= 3:
		return "io.containerd.cri.v1.runtime"
	case schema == 2:
		return "io.containerd.grpc.v1.cri"
	}
	return "cri"
}

// readContainerdConfig parses a containerd config at host path p and the
// files its `imports` name (merged in order, as containerd does).
func (e *env) readContainerdConfig(p string) (containerdSettings, error) {
	data, err := e.host.readFile(p)
	if err != nil {
		return containerdSettings{}, err
	}
	doc, err := parseTOML(data)
	if err != nil {
		return containerdSettings{}, fmt.Errorf("parsing %s: %w", p, err)
	}
	imports, _ := doc.strings("imports")
	for _, pattern := range imports {
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(p), pattern)
		}
		for _, imp := range e.host.glob(pattern) {
			data, err := e.host.readFile(imp)
			if err != nil {
				return containerdSettings{}, fmt.Errorf("reading %s, imported by %s: %w", imp, p, err)
			}
			sub, err := parseTOML(data)
			if err != nil {
				return containerdSettings{}, fmt.Errorf("parsing %s, imported by %s: %w", imp, p, err)
			}
			delete(sub, "version")
			doc.merge(sub)
		}
	}
	s := containerdSettings{schema: 1}
	if v, ok := doc.get("version").(int64); ok {
		s.schema = v
	}
	s.table = criTable(s.schema)
	s.enableCDI = doc.boolean("plugins", s.table, "enable_cdi")
	s.specDirs, s.specDirsSet = doc.strings("plugins", s.table, "cdi_spec_dirs")
	s.defaultRuntime = doc.str("plugins", s.table, "containerd", "default_runtime_name")
	return s, nil
}

// containerdTarget is one containerd installation to check: the node's own
// or k3s's embedded one.
type containerdTarget struct {
	name    string // "containerd" or "k3s"
	config  string // host path of the config containerd reads
	editAt  string // host path where the operator puts the settings
	restart string // command that applies them
	version runtimeVersion
}

// checkContainerd checks /etc/containerd/config.toml (or the configured
// path) and the containerd binary; found is false when neither exists.
func checkContainerd(ctx context.Context, e *env) (results []Result, found bool) {
	bin := e.findBinary("containerd")
	configFound := e.host.exists(e.cfg.ContainerdConfig)
	if bin == "" && !configFound {
		return nil, false
	}
	t := containerdTarget{name: "containerd", config: e.cfg.ContainerdConfig, editAt: e.cfg.ContainerdConfig, restart: "systemctl restart containerd"}
	if bin != "" {
		t.version = e.binaryVersion(ctx, bin)
	} else {
		t.version = runtimeVersion{source: "no containerd binary on the host's PATH"}
	}
	return e.containerdResults(t, configFound), true
}

// containerdResults checks one containerd's CDI settings, default runtime
// and version. Without a config file containerd uses its defaults.
func (e *env) containerdResults(t containerdTarget, configFound bool) []Result {
	s := containerdSettings{schema: 1, table: "io.containerd.grpc.v1.cri"}
	where := "no config file, defaults"
	if configFound {
		var err error
		if s, err = e.readContainerdConfig(t.config); err != nil {
			return []Result{{Check: t.name + "/config", Status: Fail, Detail: err.Error(),
				Fix: fmt.Sprintf("fix the TOML syntax of %s (containerd refuses to start with it too)", t.editAt)}}
		}
		where = fmt.Sprintf("%s, config version %d", t.config, s.schema)
	}
	// The binary's version wins; else config version 3+ means 2.x.
	v := t.version
	if v.v == nil && s.schema >= 3 {
		v = runtimeVersion{v: &someContainerd2, label: "2.x", source: fmt.Sprintf("config version %d is containerd 2.x's", s.schema)}
	}
	table := s.table
	if v.v != nil && v.v.Major >= 2 && s.schema < 3 {
		table = "io.containerd.grpc.v1.cri" // 2.x migrates version 1/2 configs
	}
	snippet := fmt.Sprintf("[plugins.%q] enable_cdi = true, cdi_spec_dirs = [%s]", table, quoteList(e.cfg.CDIDirs))
	fix := fmt.Sprintf("set %s in %s, then `%s`", snippet, t.editAt, t.restart)

	check := t.name + "/cdi"
	var cdi Result
	switch {
	case s.enableCDI != nil && !*s.enableCDI:
		cdi = Result{Check: check, Status: Fail, Detail: fmt.Sprintf("enable_cdi = false (%s): CDI devices are not injected", where), Fix: fix}
	case v.v != nil && v.v.LT(minContainerd):
		cdi = Result{Check: check, Status: Fail, Detail: fmt.Sprintf("containerd %s has no CDI support", v), Fix: "upgrade containerd to 1.7 or newer (2.x has CDI on by default)"}
	case v.v != nil && v.v.Major == 1 && (s.enableCDI == nil || !*s.enableCDI):
		cdi = Result{Check: check, Status: Fail, Detail: fmt.Sprintf("containerd %s needs enable_cdi = true, which is not set (%s)", v, where), Fix: fix}
	case v.v != nil && v.v.Major >= 2:
		cdi = Result{Check: check, Status: Pass, Detail: fmt.Sprintf("containerd %s has CDI on by default (%s)", v, where)}
	case s.enableCDI != nil && *s.enableCDI:
		cdi = Result{Check: check, Status: Pass, Detail: fmt.Sprintf("enable_cdi = true (%s)", where)}
	default:
		cdi = Result{Check: check, Status: Warn, Detail: fmt.Sprintf("containerd version %s and enable_cdi not set (%s): 1.7 needs it, 2.x has CDI on by default", v, where), Fix: "on containerd 1.7: " + fix}
	}
	if cdi.Status == Pass && s.specDirsSet {
		cdi = e.specDirsResult(cdi, s.specDirs, "cdi_spec_dirs", fix)
	}
	out := []Result{cdi}
	defRuntime := s.defaultRuntime
	if defRuntime == "" {
		defRuntime = "runc"
	}
	out = append(out, nvidiaDefaultRuntime(t.name, defRuntime, where,
		fmt.Sprintf("set default_runtime_name = \"runc\" under [plugins.%q.containerd] in %s, then `%s` (give pods that need the nvidia runtime a RuntimeClass)", table, t.editAt, t.restart)))
	return append(out, versionResult(t.name, v, minContainerd, "upgrade containerd to 1.7 or newer (2.x has CDI on by default)"))
}

// specDirsResult checks a runtime's explicit list of CDI spec directories:
// it must hold the plugin's directory; other missing ones are a warning.
func (e *env) specDirsResult(ok Result, dirs []string, key, fix string) Result {
	var missing []string
	for _, d := range e.cfg.CDIDirs {
		if !containsPath(dirs, d) {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		ok.Detail += fmt.Sprintf("; %s = [%s]", key, quoteList(dirs))
		return ok
	}
	status := Warn
	if e.cfg.CDIRoot != "" && containsPath(missing, e.cfg.CDIRoot) {
		status = Fail
	}
	return Result{Check: ok.Check, Status: status,
		Detail: fmt.Sprintf("%s = [%s] lacks %s: specs there are not seen", key, quoteList(dirs), strings.Join(missing, ", ")), Fix: fix}
}

func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

package doctor

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"path/filepath"

	"github.com/blang/semver/v4"
)

// k3sContainerdDir holds the config that k3s renders for its embedded
// containerd at every start, from config.toml.tmpl (or config-v3.toml.tmpl
// for containerd 2.x) when the operator provides one.
const k3sContainerdDir = "/var/lib/rancher/k3s/agent/etc/containerd"

// checkK3s checks k3s's embedded containerd; found is false without k3s.
func checkK3s(_ context.Context, e *env) (results []Result, found bool) {
	config := filepath.Join(k3sContainerdDir, "config.toml")
	var templates []string
	for _, name := range []string{"config-v3.toml.tmpl", "config.toml.tmpl"} {
		if p := filepath.Join(k3sContainerdDir, name); e.host.exists(p) {
			templates = append(templates, p)
		}
	}
	bin := e.findBinary("k3s")
	configFound := e.host.exists(config)
	if bin == "" && !configFound && len(templates) == 0 {
		return nil, false
	}
	t := containerdTarget{name: "k3s", config: config, restart: "systemctl restart k3s (k3s-agent on agents)",
		editAt: filepath.Join(k3sContainerdDir, "config.toml.tmpl") + " (start it with {{ template \"base\" . }}; k3s overwrites config.toml)"}
	if len(templates) > 0 {
		t.editAt = templates[0]
	}
	t.version = runtimeVersion{source: "no k3s binary on the host's PATH"}
	if bin != "" {
		t.version = e.k3sContainerdVersion(bin)
	}
	if !configFound {
		return []Result{{Check: "k3s/cdi", Status: Warn,
			Detail: fmt.Sprintf("k3s has not rendered %s yet (it does at start)", config),
			Fix:    "start k3s, then run the doctor again"}}, true
	}
	return e.containerdResults(t, true), true
}

// k3sContainerdVersion reads the version of the containerd module built
// into the k3s binary at host path p (k3s --version does not print it).
func (e *env) k3sContainerdVersion(p string) runtimeVersion {
	info, err := buildinfo.ReadFile(e.host.path(p))
	if err != nil {
		return runtimeVersion{source: fmt.Sprintf("reading the build info of %s: %v", p, err)}
	}
	for _, dep := range info.Deps {
		if dep.Path != "github.com/containerd/containerd" && dep.Path != "github.com/containerd/containerd/v2" {
			continue
		}
		version := dep.Version
		if dep.Replace != nil && dep.Replace.Version != "" {
			version = dep.Replace.Version
		}
		if v, err := semver.ParseTolerant(version); err == nil {
			return runtimeVersion{v: &v, source: p + " build info"}
		}
	}
	return runtimeVersion{source: p + " build info names no containerd module"}
}

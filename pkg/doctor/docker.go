package doctor

import (
	"context"
	"encoding/json"
	"fmt"
)

const dockerConfig = "/etc/docker/daemon.json"

// dockerDaemonConfig is the part of daemon.json the doctor reads.
type dockerDaemonConfig struct {
	Features       map[string]bool `json:"features"`
	CDISpecDirs    []string        `json:"cdi-spec-dirs"`
	DefaultRuntime string          `json:"default-runtime"`
}

// checkDocker checks Docker's daemon.json and version; found is false
// without Docker. Docker 25 to 27 need "features": {"cdi": true}; 28 has
// it on by default. The kubelet uses Docker only through cri-dockerd, so
// when another CRI runtime is on the node and cri-dockerd is not, a Docker
// without CDI is a warning.
func checkDocker(ctx context.Context, e *env, otherCRI bool) (results []Result, found bool) {
	bin := e.findBinary("dockerd")
	configFound := e.host.exists(dockerConfig)
	if bin == "" && !configFound {
		return nil, false
	}
	var cfg dockerDaemonConfig
	where := "no " + dockerConfig
	if configFound {
		data, err := e.host.readFile(dockerConfig)
		if err == nil {
			err = json.Unmarshal(data, &cfg)
		}
		if err != nil {
			return []Result{{Check: "docker/config", Status: Fail, Detail: fmt.Sprintf("%s: %v", dockerConfig, err), Fix: fmt.Sprintf("fix the JSON of %s (dockerd refuses to start with it too)", dockerConfig)}}, true
		}
		where = dockerConfig
	}
	v := runtimeVersion{source: "no dockerd binary on the host's PATH"}
	if bin != "" {
		v = e.binaryVersion(ctx, bin)
	}
	fix := fmt.Sprintf(`set "features": {"cdi": true} (and "cdi-spec-dirs": [%s] if you changed them) in %s, then `+"`systemctl restart docker`", quoteList(e.cfg.CDIDirs), dockerConfig)
	const check = "docker/cdi"
	cdiFeature, set := cfg.Features["cdi"]
	var cdi Result
	switch {
	case set && !cdiFeature:
		cdi = Result{Check: check, Status: Fail, Detail: fmt.Sprintf(`"features": {"cdi": false} in %s: CDI devices are not injected`, where), Fix: fix}
	case v.v != nil && v.v.LT(minDocker):
		cdi = Result{Check: check, Status: Fail, Detail: fmt.Sprintf("Docker %s has no CDI support", v), Fix: "upgrade Docker to 25 or newer"}
	case set:
		cdi = Result{Check: check, Status: Pass, Detail: fmt.Sprintf(`"features": {"cdi": true} in %s`, where)}
	case v.v != nil && !v.v.LT(dockerCDIDefault):
		cdi = Result{Check: check, Status: Pass, Detail: fmt.Sprintf("Docker %s has CDI on by default", v)}
	default:
		cdi = Result{Check: check, Status: Fail, Detail: fmt.Sprintf(`features.cdi is not set (%s), Docker %s: Docker before 28 needs it`, where, v), Fix: fix}
	}
	if cdi.Status == Fail && otherCRI && e.findBinary("cri-dockerd") == "" {
		cdi.Status = Warn
		cdi.Detail += "; the kubelet uses another runtime (no cri-dockerd), so this only affects `docker run --device nvidia.com/gpu=...`"
	}
	if cdi.Status == Pass && cfg.CDISpecDirs != nil {
		cdi = e.specDirsResult(cdi, cfg.CDISpecDirs, "cdi-spec-dirs", fix)
	}
	defRuntime := cfg.DefaultRuntime
	if defRuntime == "" {
		defRuntime = "runc"
	}
	return []Result{
		cdi,
		nvidiaDefaultRuntime("docker", defRuntime, where, fmt.Sprintf(`remove "default-runtime": %q from %s, then `+"`systemctl restart docker`"+` (use --runtime=nvidia or --device nvidia.com/gpu=... per container)`, cfg.DefaultRuntime, dockerConfig)),
		versionResult("docker", v, minDocker, "upgrade Docker to 25 or newer"),
	}, true
}

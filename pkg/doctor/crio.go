package doctor

import (
	"context"
	"fmt"
	"strings"
)

const crioConfig = "/etc/crio/crio.conf"

// checkCRIO checks CRI-O's config (crio.conf and the crio.conf.d drop-ins,
// merged in name order as CRI-O does) and version; found is false without
// CRI-O. CRI-O 1.23 and later inject CDI devices without any setting.
func checkCRIO(ctx context.Context, e *env) (results []Result, found bool) {
	files := e.host.glob(crioConfig)
	files = append(files, e.host.glob("/etc/crio/crio.conf.d/*.conf")...)
	bin := e.findBinary("crio")
	if bin == "" && len(files) == 0 {
		return nil, false
	}
	doc := tomlDoc{}
	for _, f := range files {
		data, err := e.host.readFile(f)
		if err == nil {
			var sub tomlDoc
			if sub, err = parseTOML(data); err == nil {
				doc.merge(sub)
				continue
			}
		}
		return []Result{{Check: "cri-o/config", Status: Fail, Detail: fmt.Sprintf("%s: %v", f, err), Fix: fmt.Sprintf("fix the TOML syntax of %s (CRI-O refuses to start with it too)", f)}}, true
	}
	where := "no config file, defaults"
	if len(files) > 0 {
		where = strings.Join(files, ", ")
	}
	v := runtimeVersion{source: "no crio binary on the host's PATH"}
	if bin != "" {
		v = e.binaryVersion(ctx, bin)
	}
	dropIn := "/etc/crio/crio.conf.d/99-cdi.conf"
	fix := fmt.Sprintf("set [crio.runtime] cdi_spec_dirs = [%s] in %s, then `systemctl restart crio`", quoteList(e.cfg.CDIDirs), dropIn)
	var cdi Result
	switch {
	case v.v == nil:
		cdi = Result{Check: "cri-o/cdi", Status: Warn, Detail: fmt.Sprintf("CRI-O version %s: CDI needs 1.23+ (%s)", v, where), Fix: "check by hand that CRI-O is 1.23 or newer"}
	case v.v.LT(minCRIO):
		cdi = Result{Check: "cri-o/cdi", Status: Fail, Detail: fmt.Sprintf("CRI-O %s has no CDI support", v), Fix: "upgrade CRI-O to 1.23 or newer"}
	default:
		cdi = Result{Check: "cri-o/cdi", Status: Pass, Detail: fmt.Sprintf("CRI-O %s has CDI always on (%s)", v, where)}
	}
	if dirs, set := doc.strings("crio", "runtime", "cdi_spec_dirs"); set && cdi.Status != Fail {
		cdi = e.specDirsResult(cdi, dirs, "cdi_spec_dirs", fix)
	}
	defRuntime := doc.str("crio", "runtime", "default_runtime")
	if defRuntime == "" {
		defRuntime = "crun or runc (CRI-O's default)"
	}
	return []Result{
		cdi,
		nvidiaDefaultRuntime("cri-o", defRuntime, where, fmt.Sprintf("set [crio.runtime] default_runtime = \"crun\" (or \"runc\") in %s, then `systemctl restart crio`", dropIn)),
		versionResult("cri-o", v, minCRIO, "upgrade CRI-O to 1.23 or newer"),
	}, true
}

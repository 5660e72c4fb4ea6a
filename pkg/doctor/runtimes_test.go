package doctor

import (
	"testing"
)

const (
	containerd17   = "containerd containerd.io 1.7.20 8fc6bcff51318944179630522a095cc9dbf9f353"
	containerd16   = "containerd github.com/containerd/containerd v1.6.36 88c3d9bc5b5a193f40b7c14fa996d23532d6f956"
	containerd2    = "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376"
	containerdV2   = "version = 2\n"
	cdiOnV2        = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_cdi = true\n  cdi_spec_dirs = [\"/etc/cdi\", \"/var/run/cdi\"]\n"
	containerdPath = "/etc/containerd/config.toml"
)

func TestRuntimeChecks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		files  map[string]string // host path -> content
		bins   map[string]string // host path -> --version output
		check  string
		status Status
		detail string
		fix    string
		failed bool
	}{
		{
			name:   "no runtime config at all",
			check:  "container-runtime",
			status: Warn,
			detail: "no containerd, CRI-O, Docker or k3s",
			fix:    "--host-root",
		},
		{
			name:   "containerd 1.7 without enable_cdi",
			files:  map[string]string{containerdPath: containerdV2},
			bins:   map[string]string{"/usr/bin/containerd": containerd17},
			check:  "containerd/cdi",
			status: Fail,
			detail: "containerd 1.7.20 (/usr/bin/containerd --version) needs enable_cdi = true",
			fix:    `[plugins."io.containerd.grpc.v1.cri"] enable_cdi = true, cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"] in /etc/containerd/config.toml, then ` + "`systemctl restart containerd`",
			failed: true,
		},
		{
			name:   "containerd 1.7 without a config file",
			bins:   map[string]string{"/usr/local/bin/containerd": containerd17},
			check:  "containerd/cdi",
			status: Fail,
			detail: "no config file, defaults",
			fix:    "enable_cdi = true",
			failed: true,
		},
		{
			name:   "containerd 1.7 with enable_cdi",
			files:  map[string]string{containerdPath: cdiOnV2},
			bins:   map[string]string{"/usr/bin/containerd": containerd17},
			check:  "containerd/cdi",
			status: Pass,
			detail: "enable_cdi = true",
		},
		{
			name: "containerd 1.7 with enable_cdi in an imported file",
			files: map[string]string{
				containerdPath:                     "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
				"/etc/containerd/conf.d/cdi.toml":  "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_cdi = true\n",
				"/etc/containerd/conf.d/other.txt": "not toml {",
			},
			bins:   map[string]string{"/usr/bin/containerd": containerd17},
			check:  "containerd/cdi",
			status: Pass,
		},
		{
			name:   "containerd 1.7 version passes the minimum",
			files:  map[string]string{containerdPath: cdiOnV2},
			bins:   map[string]string{"/usr/bin/containerd": containerd17},
			check:  "containerd/version",
			status: Pass,
			detail: "1.7.20",
		},
		{
			name:   "containerd 1.6 is too old",
			files:  map[string]string{containerdPath: cdiOnV2},
			bins:   map[string]string{"/usr/bin/containerd": containerd16},
			check:  "containerd/version",
			status: Fail,
			detail: "older than 1.7",
			fix:    "upgrade containerd",
			failed: true,
		},
		{
			name:   "containerd 2.x by config version",
			files:  map[string]string{containerdPath: "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']\n"},
			check:  "containerd/cdi",
			status: Pass,
			detail: "containerd 2.x (config version 3",
		},
		{
			name:   "containerd 2.x binary with a version 2 config",
			files:  map[string]string{containerdPath: containerdV2},
			bins:   map[string]string{"/usr/bin/containerd": containerd2},
			check:  "containerd/cdi",
			status: Pass,
			detail: "containerd 2.1.4",
		},
		{
			name:   "containerd 2.x with CDI turned off",
			files:  map[string]string{containerdPath: "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  enable_cdi = false\n"},
			check:  "containerd/cdi",
			status: Fail,
			detail: "enable_cdi = false",
			fix:    `[plugins."io.containerd.cri.v1.runtime"] enable_cdi = true`,
			failed: true,
		},
		{
			name:   "containerd without the plugin's spec directory",
			files:  map[string]string{containerdPath: "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  cdi_spec_dirs = ['/etc/cdi']\n"},
			check:  "containerd/cdi",
			status: Fail,
			detail: "lacks /var/run/cdi",
			fix:    "cdi_spec_dirs",
			failed: true,
		},
		{
			name:   "containerd without /etc/cdi only warns",
			files:  map[string]string{containerdPath: "version = 3\n[plugins.'io.containerd.cri.v1.runtime']\n  cdi_spec_dirs = ['/var/run/cdi']\n"},
			check:  "containerd/cdi",
			status: Warn,
			detail: "lacks /etc/cdi",
		},
		{
			name:   "containerd version unknown and enable_cdi unset",
			files:  map[string]string{containerdPath: containerdV2},
			check:  "containerd/cdi",
			status: Warn,
			detail: "1.7 needs it",
			fix:    "on containerd 1.7",
		},
		{
			name:   "containerd with the nvidia runtime as default",
			files:  map[string]string{containerdPath: "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'nvidia'\n"},
			check:  "containerd/default-runtime",
			status: Warn,
			detail: "injects GPUs into every container",
			fix:    `default_runtime_name = "runc"`,
		},
		{
			name:   "containerd with runc as default",
			files:  map[string]string{containerdPath: "version = 3\n"},
			check:  "containerd/default-runtime",
			status: Pass,
			detail: "runc",
		},
		{
			name:   "unparsable containerd config",
			files:  map[string]string{containerdPath: "version = = 2\n"},
			check:  "containerd/config",
			status: Fail,
			fix:    "fix the TOML syntax",
			failed: true,
		},
		{
			name:   "docker without features.cdi",
			files:  map[string]string{"/etc/docker/daemon.json": `{"log-driver": "journald"}`},
			bins:   map[string]string{"/usr/bin/dockerd": "Docker version 25.0.3, build f417435"},
			check:  "docker/cdi",
			status: Fail,
			detail: "features.cdi is not set",
			fix:    `"features": {"cdi": true}`,
			failed: true,
		},
		{
			name:   "docker with features.cdi",
			files:  map[string]string{"/etc/docker/daemon.json": `{"features": {"cdi": true}}`},
			bins:   map[string]string{"/usr/bin/dockerd": "Docker version 25.0.3, build f417435"},
			check:  "docker/cdi",
			status: Pass,
		},
		{
			name:   "docker 28 has CDI by default",
			bins:   map[string]string{"/usr/bin/dockerd": "Docker version 28.3.1, build 38b7060"},
			check:  "docker/cdi",
			status: Pass,
			detail: "on by default",
		},
		{
			name:   "docker 24 is too old",
			files:  map[string]string{"/etc/docker/daemon.json": `{"features": {"cdi": true}}`},
			bins:   map[string]string{"/usr/bin/dockerd": "Docker version 24.0.7, build afdd53b"},
			check:  "docker/version",
			status: Fail,
			fix:    "upgrade Docker",
			failed: true,
		},
		{
			name: "docker without CDI next to the kubelet's containerd",
			files: map[string]string{
				"/etc/docker/daemon.json": `{}`,
				containerdPath:            "version = 3\n",
			},
			check:  "docker/cdi",
			status: Warn,
			detail: "the kubelet uses another runtime",
		},
		{
			name:   "docker with the nvidia runtime as default",
			files:  map[string]string{"/etc/docker/daemon.json": `{"default-runtime": "nvidia", "features": {"cdi": true}}`},
			check:  "docker/default-runtime",
			status: Warn,
			detail: `"nvidia"`,
			fix:    `remove "default-runtime": "nvidia"`,
		},
		{
			name:   "cri-o 1.30",
			files:  map[string]string{"/etc/crio/crio.conf": "[crio.runtime]\ndefault_runtime = \"crun\"\n"},
			bins:   map[string]string{"/usr/bin/crio": "crio version 1.30.4"},
			check:  "cri-o/cdi",
			status: Pass,
			detail: "always on",
		},
		{
			name:   "cri-o 1.22 is too old",
			bins:   map[string]string{"/usr/bin/crio": "crio version 1.22.5"},
			check:  "cri-o/version",
			status: Fail,
			fix:    "upgrade CRI-O",
			failed: true,
		},
		{
			name: "cri-o with the nvidia runtime as default in a drop-in",
			files: map[string]string{
				"/etc/crio/crio.conf":                  "[crio.runtime]\ndefault_runtime = \"crun\"\n",
				"/etc/crio/crio.conf.d/99-nvidia.conf": "[crio.runtime]\ndefault_runtime = \"nvidia\"\n",
			},
			bins:   map[string]string{"/usr/bin/crio": "crio version 1.30.4"},
			check:  "cri-o/default-runtime",
			status: Warn,
			detail: `"nvidia"`,
		},
		{
			name:   "cri-o without the plugin's spec directory",
			files:  map[string]string{"/etc/crio/crio.conf.d/10-cdi.conf": "[crio.runtime]\ncdi_spec_dirs = [\"/etc/cdi\"]\n"},
			bins:   map[string]string{"/usr/bin/crio": "crio version 1.30.4"},
			check:  "cri-o/cdi",
			status: Fail,
			detail: "lacks /var/run/cdi",
			failed: true,
		},
		{
			name:   "k3s with CDI enabled",
			files:  map[string]string{k3sContainerdDir + "/config.toml": cdiOnV2},
			check:  "k3s/cdi",
			status: Pass,
			detail: "enable_cdi = true",
		},
		{
			name:   "k3s without enable_cdi, edited through the template",
			files:  map[string]string{k3sContainerdDir + "/config.toml": containerdV2, k3sContainerdDir + "/config.toml.tmpl": "{{ template \"base\" . }}\n"},
			check:  "k3s/cdi",
			status: Warn,
			fix:    k3sContainerdDir + "/config.toml.tmpl",
		},
		{
			name:   "k3s not started yet",
			files:  map[string]string{k3sContainerdDir + "/config-v3.toml.tmpl": "{{ template \"base\" . }}\n"},
			check:  "k3s/cdi",
			status: Warn,
			detail: "has not rendered",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := emptyHost(t)
			for p, content := range tc.files {
				h.write(p, content)
			}
			for p, out := range tc.bins {
				h.binary(p, out)
			}
			cfg := h.config()
			cfg.NVMLBackend = "mock:dgxh100"
			r := h.run(cfg)
			expect(t, r, tc.check, tc.status, tc.detail, tc.fix)
			if got := r.Failed(); got != tc.failed && tc.failed {
				t.Errorf("Failed() = %v, want %v:\n%s", got, tc.failed, dump(r))
			}
			if tc.check != "container-runtime" && hasCheck(r, "container-runtime") {
				t.Errorf("a runtime was found, yet the report says none was:\n%s", dump(r))
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for out, want := range map[string]string{
		containerd17:                           "1.7.20",
		containerd2:                            "2.1.4",
		"Docker version 25.0.3, build f417435": "25.0.3",
		"crio version 1.30.4\nGitCommit: abc":  "1.30.4",
		"Version:        1.29.1":               "1.29.1",
	} {
		v := parseVersion(out)
		if v == nil || v.String() != want {
			t.Errorf("parseVersion(%q) = %v, want %s", out, v, want)
		}
	}
	if v := parseVersion("no version here"); v != nil {
		t.Errorf("parseVersion without a version = %v", v)
	}
}

package doctor

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

const oldDriver = "535.104.05"

// hostSpec is the spec `gpudra cdi generate` writes for the fake host.
func hostSpec(t *testing.T, h *fakeHost) specs.Spec {
	t.Helper()
	lib, err := mockmachine.New("dgxh100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	edits, err := cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: h.root, HostDriverRoot: "/"}, h.inv.UUIDs())
	if err != nil {
		t.Fatal(err)
	}
	spec, err := cdi.HostSpec(h.inv, edits, cdi.HostSpecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.writeMode(cdi.DefaultHookPath, "hook", 0o755)
	return *spec
}

// libSpec is a spec of kind whose one device mounts the given host files.
func libSpec(kind, device string, hostPaths ...string) specs.Spec {
	s := specs.Spec{Kind: kind, Devices: []specs.Device{{Name: device, ContainerEdits: specs.ContainerEdits{
		DeviceNodes: []*specs.DeviceNode{{Path: "/dev/nvidia0"}},
	}}}}
	for _, p := range hostPaths {
		s.ContainerEdits.Mounts = append(s.ContainerEdits.Mounts, &specs.Mount{HostPath: p, ContainerPath: p, Options: []string{"ro", "bind"}})
	}
	return s
}

func TestCDISpecChecks(t *testing.T) {
	const claimKind = "k8s.gpu.nvidia.com/claim"
	claimSpec := "/var/run/cdi/k8s.gpu.nvidia.com-claim_4f1a.json"
	runHostCases(t, []hostCase{
		{
			name:   "no specs yet",
			setup:  func(h *fakeHost, cfg *Config) { h.mkdir("/etc/cdi"); h.mkdir("/var/run/cdi") },
			check:  "cdi/specs",
			status: Pass,
			detail: "no NVIDIA CDI specs",
		},
		{
			name:   "spec directory missing",
			check:  "cdi/dir /etc/cdi",
			status: Warn,
			detail: "does not exist",
			fix:    "mkdir -p /etc/cdi",
		},
		{
			name:   "spec directory is a file",
			setup:  func(h *fakeHost, cfg *Config) { h.write("/etc/cdi", "") },
			check:  "cdi/dir /etc/cdi",
			status: Fail,
			detail: "not a directory",
			fix:    "move the file",
			failed: true,
		},
		{
			name:   "generated spec of the running driver",
			setup:  func(h *fakeHost, cfg *Config) { h.spec("/etc/cdi/nvidia.json", hostSpec(t, h)) },
			check:  "cdi/spec nvidia.com/gpu",
			status: Pass,
			detail: "every host path present, driver ",
		},
		{
			name: "stale spec from an older driver",
			setup: func(h *fakeHost, cfg *Config) {
				old := "/usr/lib/x86_64-linux-gnu/libcuda.so." + oldDriver
				h.write(old, "old driver") // left behind by the upgrade
				h.spec("/etc/cdi/nvidia.yaml", libSpec("nvidia.com/gpu", "0", old))
			},
			check:  "cdi/spec nvidia.com/gpu",
			status: Fail,
			detail: "stale spec from driver " + oldDriver + ", running ",
			fix:    "regenerate with `gpudra cdi generate --output /etc/cdi/nvidia.yaml`",
			failed: true,
		},
		{
			name: "stale firmware directory",
			setup: func(h *fakeHost, cfg *Config) {
				fw := "/lib/firmware/nvidia/" + oldDriver + "/gsp_ga10x.bin"
				h.write(fw, "fw")
				h.spec("/etc/cdi/nvidia.json", libSpec("nvidia.com/gpu", "0", fw))
			},
			check:  "cdi/spec nvidia.com/gpu",
			status: Fail,
			detail: "stale spec from driver " + oldDriver,
			fix:    "gpudra cdi generate --output /etc/cdi/nvidia.json",
			failed: true,
		},
		{
			name: "third-party library versions are not driver versions",
			setup: func(h *fakeHost, cfg *Config) {
				wl := "/usr/lib/x86_64-linux-gnu/libnvidia-egl-wayland.so.1.1.13"
				h.write(wl, "wayland")
				h.spec("/etc/cdi/nvidia.json", libSpec("nvidia.com/gpu", "0", wl, h.lib("libcuda")))
			},
			check:  "cdi/spec nvidia.com/gpu",
			status: Pass,
			detail: "every host path present",
		},
		{
			name: "zero-byte library in a spec",
			setup: func(h *fakeHost, cfg *Config) {
				if err := os.Truncate(h.path(h.lib("libnvidia-ml")), 0); err != nil {
					t.Fatal(err)
				}
				h.spec("/etc/cdi/nvidia.json", libSpec("nvidia.com/gpu", "0", h.lib("libnvidia-ml")))
			},
			check:  "cdi/spec nvidia.com/gpu",
			status: Fail,
			detail: "zero-byte files: /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.",
			fix:    "reinstall the NVIDIA driver",
			failed: true,
		},
		{
			name: "spec names a host path that does not exist",
			setup: func(h *fakeHost, cfg *Config) {
				h.spec("/etc/cdi/nvidia.json", libSpec("nvidia.com/gpu", "0", "/opt/gone/libfoo.so"))
			},
			check:  "cdi/spec nvidia.com/gpu",
			status: Fail,
			detail: "host paths that do not exist: /opt/gone/libfoo.so",
			fix:    "gpudra cdi generate",
			failed: true,
		},
		{
			name: "missing device node in a spec",
			setup: func(h *fakeHost, cfg *Config) {
				mustRemove(t, h.path("/dev/nvidia0"))
				h.spec("/etc/cdi/nvidia.json", libSpec("nvidia.com/gpu", "0"))
			},
			check:  "cdi/spec nvidia.com/gpu",
			status: Fail,
			detail: "/dev/nvidia0",
			failed: true,
		},
		{
			name: "stale claim spec is the plugin's to rewrite",
			setup: func(h *fakeHost, cfg *Config) {
				h.spec(claimSpec, libSpec(claimKind, "4f1a-gpu-0", "/usr/lib/x86_64-linux-gnu/libcuda.so."+oldDriver))
			},
			check:  "cdi/spec " + claimKind,
			status: Fail,
			detail: "stale spec from driver " + oldDriver,
			fix:    "restart the gpu-kubelet-plugin pod on this node: it rewrites them",
			failed: true,
		},
		{
			name: "stale claim spec before the plugin starts only warns",
			setup: func(h *fakeHost, cfg *Config) {
				cfg.PreStart = true
				h.spec(claimSpec, libSpec(claimKind, "4f1a-gpu-0", "/usr/lib/x86_64-linux-gnu/libcuda.so."+oldDriver))
			},
			check:  "cdi/spec " + claimKind,
			status: Warn,
			detail: "stale spec from driver " + oldDriver,
			fix:    "rewrites its specs at start",
		},
		{
			name: "stale device plugin spec",
			setup: func(h *fakeHost, cfg *Config) {
				h.spec("/var/run/cdi/k8s.device-plugin.nvidia.com-gpu.json", libSpec("k8s.device-plugin.nvidia.com/gpu", "0", "/usr/lib/x86_64-linux-gnu/libcuda.so."+oldDriver))
			},
			check:  "cdi/spec k8s.device-plugin.nvidia.com/gpu",
			status: Fail,
			fix:    "restart the gpu-device-plugin pod",
			failed: true,
		},
		{
			name: "specs of a custom driver name are the plugin's",
			setup: func(h *fakeHost, cfg *Config) {
				cfg.DriverName = "gpu.example.com"
				h.spec("/var/run/cdi/k8s.gpu.example.com-claim_1.json", libSpec("k8s.gpu.example.com/claim", "1-gpu-0", "/gone"))
			},
			check:  "cdi/spec k8s.gpu.example.com/claim",
			status: Fail,
			fix:    "restart the gpu-kubelet-plugin pod",
			failed: true,
		},
		{
			name: "other vendors' specs are not inspected",
			setup: func(h *fakeHost, cfg *Config) {
				h.spec("/etc/cdi/vendor.json", libSpec("vendor.example/fpga", "0", "/gone"))
			},
			check:  "cdi/specs",
			status: Pass,
			detail: "no NVIDIA CDI specs",
		},
		{
			name: "conflicting NVIDIA specs",
			setup: func(h *fakeHost, cfg *Config) {
				h.spec("/etc/cdi/nvidia.json", libSpec("nvidia.com/gpu", "0", h.lib("libcuda")))
				h.spec("/etc/cdi/nvidia-old.json", libSpec("nvidia.com/gpu", "0", h.lib("libcuda")))
			},
			check:  "cdi/load /etc/cdi/nvidia.json",
			status: Fail,
			detail: "conflicting device \"nvidia.com/gpu=0\"",
			fix:    "keep one spec per NVIDIA kind",
			failed: true,
		},
		{
			name: "invalid spec of another vendor only warns",
			setup: func(h *fakeHost, cfg *Config) {
				h.write("/etc/cdi/broken.yaml", "cdiVersion: 0.6.0\nkind: vendor.example/fpga\ndevices: [{name: \"bad name!\"}]\n")
			},
			check:  "cdi/load /etc/cdi/broken.yaml",
			status: Warn,
			fix:    "fix or remove /etc/cdi/broken.yaml",
		},
		{
			name: "spec directory behind a host symlink",
			setup: func(h *fakeHost, cfg *Config) {
				// The host's /var/run -> /run must resolve inside the host root.
				h.mkdir("/run/cdi")
				h.mkdir("/var")
				if err := os.Symlink("/run", h.path("/var/run")); err != nil {
					t.Fatal(err)
				}
				h.spec("/run/cdi/k8s.gpu.nvidia.com-claim_4f1a.json", libSpec(claimKind, "4f1a-gpu-0", h.lib("libcuda")))
			},
			check:  "cdi/spec " + claimKind,
			status: Pass,
			detail: "1 spec files",
		},
	})
}

func TestPathDriverVersion(t *testing.T) {
	for p, want := range map[string]string{
		"/usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15":                         "550.54.15",
		"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.560.35":                       "560.35",
		"/usr/lib/x86_64-linux-gnu/libnvidia-egl-wayland.so.1.1.13":              "",
		"/usr/lib/x86_64-linux-gnu/libcuda.so.1":                                 "",
		"/lib/firmware/nvidia/535.104.05/gsp_tu10x.bin":                          "535.104.05",
		"/usr/share/nvidia/nvoptix.bin":                                          "",
		"/usr/lib/x86_64-linux-gnu/nvidia/xorg/libglxserver_nvidia.so.550.54.15": "550.54.15",
	} {
		if got := pathDriverVersion(p); got != want {
			t.Errorf("pathDriverVersion(%s) = %q, want %q", p, got, want)
		}
	}
}

// TestReportJSONIsOneDocument checks the machine-readable form.
func TestReportJSONIsOneDocument(t *testing.T) {
	r := &Report{Results: []Result{{Check: "a", Status: Pass, Detail: "ok"}, {Check: "b", Status: Fail, Detail: "bad", Fix: "do x"}}}
	var b strings.Builder
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Results []Result
		Summary Summary
	}
	if err := json.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, b.String())
	}
	if len(doc.Results) != 2 || doc.Results[1].Fix != "do x" || doc.Summary != (Summary{Pass: 1, Fail: 1}) {
		t.Errorf("decoded %+v", doc)
	}
	b.Reset()
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.HasPrefix(lines[0], "CHECK") || !strings.Contains(lines[0], "STATUS") || !strings.Contains(lines[0], "DETAIL") || !strings.Contains(lines[0], "FIX") {
		t.Errorf("table header %q", lines[0])
	}
	if !strings.Contains(b.String(), "1 passed, 0 warnings, 1 failed") {
		t.Errorf("table lacks the summary:\n%s", b.String())
	}
}

package doctor

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2/ktesting"
	"sigs.k8s.io/yaml"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

// fakeHost is a host root in a temp dir: a mock dgxh100 whose driver files
// and device nodes are laid out at the root, as on a host with the driver
// installed in /.
type fakeHost struct {
	t    *testing.T
	root string
	inv  *inventory.Inventory
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	_, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	root := t.TempDir()
	mockmachinetest.Host(t, root, inv)
	return &fakeHost{t: t, root: root, inv: inv}
}

// emptyHost is a host root with nothing in it.
func emptyHost(t *testing.T) *fakeHost {
	t.Helper()
	_, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	return &fakeHost{t: t, root: t.TempDir(), inv: inv}
}

func (h *fakeHost) path(p string) string { return filepath.Join(h.root, p) }

// write creates host file p (and its directories).
func (h *fakeHost) write(p, content string) {
	h.t.Helper()
	h.writeMode(p, content, 0o644)
}

func (h *fakeHost) writeMode(p, content string, mode os.FileMode) {
	h.t.Helper()
	if err := os.MkdirAll(filepath.Dir(h.path(p)), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(h.path(p), []byte(content), mode); err != nil {
		h.t.Fatal(err)
	}
}

// binary installs an executable at host path p that prints versionOutput
// for --version, as the runtimes do.
func (h *fakeHost) binary(p, versionOutput string) {
	h.t.Helper()
	h.writeMode(p, "#!/bin/sh\necho '"+versionOutput+"'\n", 0o755)
}

func (h *fakeHost) mkdir(p string) {
	h.t.Helper()
	if err := os.MkdirAll(h.path(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
}

// spec writes a CDI spec to host path p, as YAML for a .yaml path.
func (h *fakeHost) spec(p string, spec specs.Spec) {
	h.t.Helper()
	if spec.Version == "" {
		spec.Version = "0.6.0"
	}
	marshal := json.Marshal
	if strings.HasSuffix(p, ".yaml") {
		marshal = yaml.Marshal
	}
	data, err := marshal(spec)
	if err != nil {
		h.t.Fatal(err)
	}
	h.write(p, string(data))
}

// config is the doctor's configuration for this host: real-driver mode
// with the driver installed at the root.
func (h *fakeHost) config() Config {
	return Config{
		HostRoot:    h.root,
		NVMLBackend: "mock:dgxh100",
		Seed:        "node-a",
		DriverRoot:  h.root,
		CDIDirs:     []string{"/etc/cdi", "/var/run/cdi"},
		CDIRoot:     "/var/run/cdi",
		DriverName:  "gpu.nvidia.com",
	}
}

func (h *fakeHost) run(cfg Config) *Report {
	h.t.Helper()
	_, ctx := ktesting.NewTestContext(h.t)
	return Run(ctx, cfg)
}

// lib is the host path of a mock driver library of the running version.
func (h *fakeHost) lib(name string) string {
	return "/usr/lib/x86_64-linux-gnu/" + name + ".so." + h.inv.DriverVersion
}

// result returns the result of check, failing the test when it is absent.
func result(t *testing.T, r *Report, check string) Result {
	t.Helper()
	for _, res := range r.Results {
		if res.Check == check {
			return res
		}
	}
	t.Fatalf("no result for %q in:\n%s", check, dump(r))
	return Result{}
}

func hasCheck(r *Report, check string) bool {
	for _, res := range r.Results {
		if res.Check == check {
			return true
		}
	}
	return false
}

func dump(r *Report) string {
	var b strings.Builder
	_ = r.WriteTable(&b)
	return b.String()
}

// expect checks one result's status and that its detail and fix contain
// the given fragments.
func expect(t *testing.T, r *Report, check string, status Status, detail, fix string) {
	t.Helper()
	res := result(t, r, check)
	if res.Status != status {
		t.Errorf("%s: status %s, want %s: %s / %s", check, res.Status, status, res.Detail, res.Fix)
	}
	if !strings.Contains(res.Detail, detail) {
		t.Errorf("%s: detail %q lacks %q", check, res.Detail, detail)
	}
	if !strings.Contains(res.Fix, fix) {
		t.Errorf("%s: fix %q lacks %q", check, res.Fix, fix)
	}
	if status != Pass && res.Fix == "" {
		t.Errorf("%s: %s without a fix", check, status)
	}
}

// hostCase is one doctor run on a fresh fake host, changed by setup, and
// the check it must report.
type hostCase struct {
	name   string
	setup  func(h *fakeHost, cfg *Config)
	check  string
	status Status
	detail string
	fix    string
	failed bool // Report.Failed()
}

func runHostCases(t *testing.T, cases []hostCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t)
			cfg := h.config()
			if tc.setup != nil {
				tc.setup(h, &cfg)
			}
			r := h.run(cfg)
			expect(t, r, tc.check, tc.status, tc.detail, tc.fix)
			if r.Failed() != tc.failed {
				t.Errorf("Failed() = %v, want %v:\n%s", r.Failed(), tc.failed, dump(r))
			}
		})
	}
}

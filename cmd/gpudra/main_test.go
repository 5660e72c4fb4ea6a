package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/doctor"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

const mockRoot = "/var/lib/gpudra/mock"

// node is a fake host root: a mock dgxh100 laid out by the plugin's mock
// host code under /var/lib/gpudra/mock, containerd 2.x, the hook installed.
type fakeNode struct {
	t    *testing.T
	root string
	uuid string // of GPU 1
}

func newNode(t *testing.T) *fakeNode {
	t.Helper()
	_, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	root := t.TempDir()
	mockmachinetest.Host(t, filepath.Join(root, mockRoot), inv)
	n := &fakeNode{t: t, root: root, uuid: inv.Devices[1].UUID}
	n.write("/etc/containerd/config.toml", "version = 3\n", 0o644)
	n.write(cdi.DefaultHookPath, "hook", 0o755)
	for _, d := range []string{"/etc/cdi", "/var/run/cdi"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func (n *fakeNode) write(p, content string, mode os.FileMode) {
	n.t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(n.root, p)), 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.root, p), []byte(content), mode); err != nil {
		n.t.Fatal(err)
	}
}

// gpudra runs the command with the node's flags appended.
func (n *fakeNode) gpudra(args ...string) (code int, stdout, stderr string) {
	n.t.Helper()
	if len(args) > 0 && args[0] != "version" {
		args = append(args, "--host-root="+n.root, "--nvml=mock:dgxh100", "--node-name=node-a", "--mock-host-root="+mockRoot)
	}
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestGenerateListDoctor is the operator's round trip on a healthy node:
// generate the host spec, see its devices in `cdi list`, and get a clean
// bill of health from the doctor.
func TestGenerateListDoctor(t *testing.T) {
	n := newNode(t)
	specPath := filepath.Join(n.root, "/etc/cdi/nvidia.yaml")
	code, out, errOut := n.gpudra("cdi", "generate", "--output", specPath)
	if code != 0 {
		t.Fatalf("cdi generate: exit %d\n%s%s", code, out, errOut)
	}
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "kind: nvidia.com/gpu") || !strings.Contains(string(data), "hostPath: "+mockRoot+"/") {
		t.Errorf("spec is not YAML of kind nvidia.com/gpu naming host paths under %s:\n%.600s", mockRoot, data)
	}

	code, out, errOut = n.gpudra("cdi", "list")
	if code != 0 {
		t.Fatalf("cdi list: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"nvidia.com/gpu=0 ", "nvidia.com/gpu=" + n.uuid, "nvidia.com/gpu=all", "/etc/cdi/nvidia.yaml"} {
		if !strings.Contains(out, want) {
			t.Errorf("cdi list lacks %q:\n%s", want, out)
		}
	}

	code, out, errOut = n.gpudra("doctor", "--json")
	if code != 0 {
		t.Fatalf("doctor on a healthy node: exit %d\n%s%s", code, out, errOut)
	}
	var doc struct {
		Results []doctor.Result
		Summary doctor.Summary
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("doctor --json is not one JSON document: %v\n%s", err, out)
	}
	statuses := map[string]doctor.Status{}
	for _, r := range doc.Results {
		statuses[r.Check] = r.Status
	}
	for check, want := range map[string]doctor.Status{
		"nvml": doctor.Pass, "driver/libraries": doctor.Pass, "driver/device-nodes": doctor.Pass,
		"cdi/spec nvidia.com/gpu": doctor.Pass, "containerd/cdi": doctor.Pass,
	} {
		if statuses[check] != want {
			t.Errorf("%s: %q, want %s\n%s", check, statuses[check], want, out)
		}
	}
	if doc.Summary.Fail != 0 {
		t.Errorf("summary %+v", doc.Summary)
	}
}

// TestDoctorFailsOnStaleSpec checks the exit code and the table on a node
// with a spec from an older driver.
func TestDoctorFailsOnStaleSpec(t *testing.T) {
	n := newNode(t)
	old := "/usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05"
	n.write(old, "old", 0o644)
	n.write("/etc/cdi/nvidia.yaml", `cdiVersion: 0.6.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes: [{path: /dev/nvidiactl, hostPath: `+mockRoot+`/dev/nvidiactl}]
containerEdits:
  mounts: [{hostPath: `+old+`, containerPath: `+old+`, options: [ro, bind]}]
`, 0o644)
	code, out, _ := n.gpudra("doctor")
	if code != 1 {
		t.Errorf("exit %d, want 1 on FAIL:\n%s", code, out)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "CHECK") {
		t.Errorf("no table header: %q", lines[0])
	}
	var row string
	for _, l := range lines {
		if strings.HasPrefix(l, "cdi/spec nvidia.com/gpu") {
			row = l
		}
	}
	for _, want := range []string{"FAIL", "stale spec from driver 535.104.05", "gpudra cdi generate --output /etc/cdi/nvidia.yaml"} {
		if !strings.Contains(row, want) {
			t.Errorf("row %q lacks %q", row, want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	n := newNode(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"cdi"},
		{"doctor", "--no-such-flag"},
		{"doctor", "extra"},
		{"cdi", "generate", "--format", "toml"},
		{"cdi", "generate", "--output", "/tmp/nvidia.txt"},
		{"cdi", "list", "--device", "not a device"},
	} {
		if code, out, errOut := n.gpudra(args...); code != 2 {
			t.Errorf("gpudra %q: exit %d, want 2\n%s%s", args, code, out, errOut)
		}
	}
}

func TestCDIListDeviceFilterAndConflicts(t *testing.T) {
	n := newNode(t)
	spec := "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ndevices:\n- name: \"0\"\n  containerEdits:\n    env: [A=1]\n"
	n.write("/etc/cdi/a.yaml", spec, 0o644)
	n.write("/etc/cdi/b.yaml", spec, 0o644)
	// Same device in the higher-priority directory: it wins, a.yaml's and
	// b.yaml's conflict is moot for the runtime but still reported.
	n.write("/var/run/cdi/c.yaml", strings.Replace(spec, `"0"`, `"1"`, 1), 0o644)

	code, out, errOut := n.gpudra("cdi", "list", "--device", "nvidia.com/gpu=1", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var l listing
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Devices) != 1 || l.Devices[0].Spec != "/var/run/cdi/c.yaml" {
		t.Errorf("devices %+v, want nvidia.com/gpu=1 from /var/run/cdi/c.yaml", l.Devices)
	}
	if errs := l.Errors["/etc/cdi/a.yaml"]; len(errs) == 0 || !strings.Contains(errs[0], "conflicting device") {
		t.Errorf("errors %v: want the conflict of a.yaml and b.yaml", l.Errors)
	}

	if code, out, _ := n.gpudra("cdi", "list", "--device", "nvidia.com/gpu=0"); code != 1 {
		t.Errorf("a conflicting device does not resolve: exit %d, want 1\n%s", code, out)
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &out); code != 0 || !strings.HasPrefix(out.String(), "gpudra dev\ngo") {
		t.Errorf("exit %d, output %q", code, out.String())
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// TestCDIGenerateSkipsUnusableGPUs: with GPU 5 lost (the mock faults file),
// `cdi generate` writes the spec of the 7 others, names GPU 5 on stderr with
// its error and fix, and exits 0; with every GPU lost it writes nothing and
// fails. The doctor names the GPU and the fix, not a driver install.
func TestCDIGenerateSkipsUnusableGPUs(t *testing.T) {
	n := newNode(t)
	faults := filepath.Join(mockRoot, mockmachine.FaultsFile)
	n.write(faults, "5 memory GPU_IS_LOST\n", 0o644)
	specPath := filepath.Join(n.root, "/etc/cdi/nvidia.yaml")
	code, out, errOut := n.gpudra("cdi", "generate", "--output", specPath)
	if code != 0 {
		t.Fatalf("cdi generate with one GPU lost: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"skipping GPU 5 (GPU-", "reading memory info", "GPU_IS_LOST", "nvidia-smi -r -i 5"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if !strings.Contains(out, "7 GPUs") || !strings.Contains(out, "skipped 1 unusable GPU(s): GPU 5") {
		t.Errorf("stdout does not tell what was written and skipped:\n%s", out)
	}
	data, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec specs.Spec
	if err := yaml.Unmarshal(data, &spec); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, d := range spec.Devices {
		names[d.Name] = true
	}
	if len(spec.Devices) != 15 || names["5"] || !names["4"] || !names["6"] || !names["all"] {
		t.Errorf("spec devices %v: want 0-4, 6, 7 by index and UUID, and all", names)
	}

	code, out, _ = n.gpudra("doctor")
	var row string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "nvml") {
			row = l
		}
	}
	for _, want := range []string{"WARN", "7 GPUs usable", "GPU 5 (GPU-", "GPU_IS_LOST", "nvidia-smi -r -i 5", "drain the node"} {
		if !strings.Contains(row, want) {
			t.Errorf("doctor nvml row %q lacks %q", row, want)
		}
	}
	if strings.Contains(row, "install") {
		t.Errorf("doctor advises a driver install for a lost GPU: %q", row)
	}

	n.write(faults, "0 all\n1 all\n2 all\n3 all\n4 all\n5 all\n6 all\n7 all\n", 0o644)
	if err := os.Remove(specPath); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = n.gpudra("cdi", "generate", "--output", specPath)
	if code != 1 || !strings.Contains(errOut, "no GPU is usable") || !strings.Contains(errOut, "skipping GPU 7") {
		t.Errorf("cdi generate without a usable GPU: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(specPath); !os.IsNotExist(err) {
		t.Errorf("a spec was written without a usable GPU: %v", err)
	}
}

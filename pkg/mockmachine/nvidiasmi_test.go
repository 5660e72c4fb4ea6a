package mockmachine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// shells are the shells the mock nvidia-smi is run with: the system's sh and,
// where installed, busybox's (the demo cluster's containers have only that).
func shells(t *testing.T) [][]string {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skipf("no /bin/sh to run the mock nvidia-smi: %v", err)
	}
	out := [][]string{{"/bin/sh"}}
	if bb, err := exec.LookPath("busybox"); err == nil {
		out = append(out, []string{bb, "sh"})
	}
	return out
}

// layOut lays out the mock host of inv under root; the scripts are written
// before the device nodes, so a missing CAP_MKNOD does not matter here.
func layOut(t *testing.T, root string, inv *inventory.Inventory) string {
	t.Helper()
	if err := LayOutHost(HostOptions{DriverRoot: root, DevRoot: root}, inv); err != nil && !errors.Is(err, ErrNoMknod) {
		t.Fatal(err)
	}
	return filepath.Join(root, "usr/bin/nvidia-smi")
}

// fakeDev makes a directory whose dev/ holds empty files named like the
// given device nodes (relative to dev/), as a container's /dev would.
func fakeDev(t *testing.T, nodes ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, n := range append(nodes, "nvidiactl") {
		p := filepath.Join(root, "dev", n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

type smiResult struct {
	stdout, stderr string
	code           int
}

func runSMI(t *testing.T, shell []string, script, devRoot string, args ...string) smiResult {
	t.Helper()
	cmd := exec.Command(shell[0], append(append(shell[1:], script), args...)...)
	cmd.Env = append(os.Environ(), DevRootEnv+"="+devRoot)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %v: %v", cmd.Args, err)
	}
	return smiResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}

func deviceByMinor(t *testing.T, inv *inventory.Inventory, minor int) inventory.Device {
	t.Helper()
	for _, d := range inv.Devices {
		if d.Minor == minor {
			return d
		}
	}
	t.Fatalf("no GPU with minor %d", minor)
	return inventory.Device{}
}

func TestNvidiaSMIShowsTheVisibleGPUs(t *testing.T) {
	inv := discoverMock(t, "dgxh100", "node-a")
	script := layOut(t, t.TempDir(), inv)
	if info, err := os.Stat(script); err != nil || info.Mode().Perm() != 0o755 {
		t.Fatalf("nvidia-smi: %v, %v; want an executable file", info, err)
	}
	g3, g5 := deviceByMinor(t, inv, 3), deviceByMinor(t, inv, 5)
	dev := fakeDev(t, "nvidia5", "nvidia3") // 2 of the 8 GPUs
	for _, sh := range shells(t) {
		t.Run(filepath.Base(sh[0]), func(t *testing.T) {
			r := runSMI(t, sh, script, dev, "-L")
			want := fmt.Sprintf("GPU 0: NVIDIA H100 80GB HBM3 (UUID: %s)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: %s)\n", g3.UUID, g5.UUID)
			if r.code != 0 || r.stdout != want || r.stderr != "" {
				t.Errorf("nvidia-smi -L: exit %d, stdout:\n%s\nstderr: %s\nwant stdout:\n%s", r.code, r.stdout, r.stderr, want)
			}

			fields := "--query-gpu=name,uuid,memory.total,pci.bus_id,driver_version,index,compute_cap"
			r = runSMI(t, sh, script, dev, fields, "--format=csv,noheader")
			want = fmt.Sprintf("NVIDIA H100 80GB HBM3, %s, 81920 MiB, 00000000:48:00.0, 550.54.15, 0, 9.0\n"+
				"NVIDIA H100 80GB HBM3, %s, 81920 MiB, 00000000:68:00.0, 550.54.15, 1, 9.0\n", g3.UUID, g5.UUID)
			if r.code != 0 || r.stdout != want {
				t.Errorf("nvidia-smi %s --format=csv,noheader: exit %d, stdout:\n%s\nstderr: %s\nwant:\n%s", fields, r.code, r.stdout, r.stderr, want)
			}

			r = runSMI(t, sh, script, dev, "--query-gpu=gpu_name,memory.total,count,mig.mode.current", "--format=csv,nounits")
			want = "name, memory.total [MiB], count, mig.mode.current\n" +
				"NVIDIA H100 80GB HBM3, 81920, 2, Disabled\nNVIDIA H100 80GB HBM3, 81920, 2, Disabled\n"
			if r.code != 0 || r.stdout != want {
				t.Errorf("nvidia-smi --format=csv,nounits: exit %d, stdout:\n%s\nstderr: %s\nwant:\n%s", r.code, r.stdout, r.stderr, want)
			}

			r = runSMI(t, sh, script, dev, "--query-gpu=name,temperature.bogus", "--format=csv")
			if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, `Field "temperature.bogus" is not a valid field to query.`) {
				t.Errorf("unknown field: exit %d, stdout %q, stderr %q; want exit 2 and nvidia-smi's message", r.code, r.stdout, r.stderr)
			}
			if r = runSMI(t, sh, script, dev, "--bogus"); r.code != 2 || !strings.Contains(r.stderr, "nvidia-smi -h") {
				t.Errorf("unknown option: exit %d, stderr %q; want exit 2 and a pointer to -h", r.code, r.stderr)
			}

			r = runSMI(t, sh, script, dev)
			if r.code != 0 || !strings.Contains(r.stdout, "Driver Version: 550.54.15") || !strings.Contains(r.stdout, "CUDA Version: 12.4") ||
				strings.Count(r.stdout, "NVIDIA H100 80GB HBM3") != 2 {
				t.Errorf("nvidia-smi: exit %d, want a table of 2 GPUs with the driver version:\n%s%s", r.code, r.stdout, r.stderr)
			}
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				if line != "" && len(line) != 91 {
					t.Errorf("table line of %d characters, want 91: %q", len(line), line)
				}
			}

			if r = runSMI(t, sh, script, fakeDev(t)); r.code != 6 || r.stdout != "No devices were found\n" {
				t.Errorf("no GPU visible: exit %d, stdout %q; want exit 6, No devices were found", r.code, r.stdout)
			}
		})
	}
}

func TestNvidiaSMIListsVisibleMIGDevicesUnderTheirGPU(t *testing.T) {
	inv := discoverMock(t, "dgxh100-mig", "node-a")
	script := layOut(t, t.TempDir(), inv)
	caps := MIGCapMinors(inv)
	// GPU 0's second 1g.10gb (GPU instance 1) and GPU 2 (not in MIG mode).
	var mig inventory.MIGDevice
	for _, m := range inv.MIGDevices {
		if m.ParentMinor == 0 && m.GPUInstanceID == 1 {
			mig = m
		}
	}
	gi, ci := caps["gpu0/gi1/access"], caps["gpu0/gi1/ci0/access"]
	dev := fakeDev(t, "nvidia0", "nvidia2", fmt.Sprintf("nvidia-caps/nvidia-cap%d", gi), fmt.Sprintf("nvidia-caps/nvidia-cap%d", ci))
	want := fmt.Sprintf("GPU 0: NVIDIA H100 80GB HBM3 (UUID: %s)\n  MIG 1g.10gb     Device  0: (UUID: %s)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: %s)\n",
		deviceByMinor(t, inv, 0).UUID, mig.UUID, deviceByMinor(t, inv, 2).UUID)
	for _, sh := range shells(t) {
		if r := runSMI(t, sh, script, dev, "-L"); r.code != 0 || r.stdout != want {
			t.Errorf("%v: nvidia-smi -L: exit %d, stdout:\n%s\nstderr: %s\nwant:\n%s", sh, r.code, r.stdout, r.stderr, want)
		}
	}
}

func TestLayOutHostRewritesAStaleNvidiaSMI(t *testing.T) {
	root := t.TempDir()
	script := filepath.Join(root, "usr/bin/nvidia-smi")
	// An older layout's placeholder file.
	if err := os.MkdirAll(filepath.Dir(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("mock NVIDIA driver 550.54.15 file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h100 := discoverMock(t, "dgxh100", "node-a")
	layOut(t, root, h100)
	first, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, NvidiaSMI(h100)) {
		t.Fatal("the placeholder nvidia-smi was not replaced by the script")
	}
	before, _ := os.Stat(script)
	layOut(t, root, h100)
	if after, _ := os.Stat(script); !os.SameFile(before, after) {
		t.Error("the same inventory rewrote nvidia-smi")
	}

	b200 := discoverMock(t, "dgxb200", "node-a")
	layOut(t, root, b200)
	second, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(second, NvidiaSMI(b200)) || bytes.Contains(second, []byte(h100.Devices[0].UUID)) {
		t.Error("another inventory did not rewrite nvidia-smi")
	}
	if info, err := os.Stat(script); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("rewritten nvidia-smi: %v, %v; want mode 0755", info, err)
	}
	entries, err := os.ReadDir(filepath.Dir(script))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	// The other binaries stay the placeholders they were.
	if data, err := os.ReadFile(filepath.Join(root, "usr/bin/nvidia-debugdump")); err != nil || !strings.Contains(string(data), "550.54.15") {
		t.Errorf("nvidia-debugdump: %q, %v; want the first layout's placeholder", data, err)
	}
}

package mockmachine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestApplyFaults(t *testing.T) {
	s, err := New("dgxh100", "n")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	n, err := ApplyFaults(s, strings.NewReader(`
# GPU 5 fell off the bus
5 memory
3 all ERROR_UNKNOWN
1 uuid reset_required
9 memory
2 bogus
4 memory NOPE
x memory
6
`))
	if n != 3 {
		t.Errorf("applied %d faults, want 3", n)
	}
	for _, want := range []string{`line 6 "9 memory": mock faults: no GPU 9`, `line 7 "2 bogus": mock faults: unknown call "bogus"`,
		`line 8 "4 memory NOPE": unknown NVML error "NOPE"`, `line 9 "x memory"`, `line 10 "6"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %s", err, want)
		}
	}
	dev := func(i int) nvml.Device {
		h, ret := s.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			t.Fatalf("handle of GPU %d: %v", i, ret)
		}
		return h
	}
	if _, ret := dev(5).GetMemoryInfo(); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("GPU 5 memory: %v, want the default GPU_IS_LOST", ret)
	}
	if _, ret := dev(5).GetUUID(); ret != nvml.SUCCESS {
		t.Errorf("GPU 5 UUID: %v: only the named call fails", ret)
	}
	if _, ret := dev(3).GetName(); ret != nvml.ERROR_UNKNOWN {
		t.Errorf("GPU 3 name: %v, want UNKNOWN for all calls", ret)
	}
	if _, ret := dev(1).GetUUID(); ret != nvml.ERROR_RESET_REQUIRED {
		t.Errorf("GPU 1 UUID: %v", ret)
	}
	if _, ret := dev(4).GetMemoryInfo(); ret != nvml.SUCCESS {
		t.Errorf("GPU 4, whose line failed, is broken: %v", ret)
	}

	if err := FailDevice(s, 0, "handle", nvml.ERROR_GPU_IS_LOST); err != nil {
		t.Fatal(err)
	}
	if _, ret := s.DeviceGetHandleByIndex(0); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("handle of GPU 0: %v", ret)
	}
	dev(1) // the others still have theirs
	if err := FailDevice(s, 0, "memory", nvml.SUCCESS); err == nil {
		t.Error("FailDevice accepted SUCCESS as a fault")
	}
}

func TestApplyFaultsFile(t *testing.T) {
	s, err := New("dgxh100", "n")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	dir := t.TempDir()
	if n, err := ApplyFaultsFile(s, filepath.Join(dir, FaultsFile)); n != 0 || err != nil {
		t.Errorf("missing file: %d, %v", n, err)
	}
	path := filepath.Join(dir, FaultsFile)
	if err := os.WriteFile(path, []byte("5 pci\n7 nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := ApplyFaultsFile(s, path)
	if n != 1 || err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "nonsense") {
		t.Errorf("file with a bad line: %d, %v", n, err)
	}
	h, _ := s.DeviceGetHandleByIndex(5)
	if _, ret := h.GetPciInfo(); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("GPU 5 PCI info: %v", ret)
	}
}

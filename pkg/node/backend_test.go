package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// openLib is the backend parser and Open of the real start-up path.
func openLib(value, driverRoot, seed string) (nvml.Interface, error) {
	b, err := ParseBackend(value, seed)
	if err != nil {
		return nil, err
	}
	return b.Open(driverRoot)
}

func TestOpenMock(t *testing.T) {
	lib, err := openLib("mock:dgxb200", "", "node-1")
	if err != nil {
		t.Fatalf("Open(mock:dgxb200): %v", err)
	}
	defer lib.Shutdown()
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices) != 8 || inv.Devices[0].Architecture != "Blackwell" {
		t.Errorf("unexpected inventory %+v", inv)
	}
	direct, err := mockmachine.New("dgxb200", "node-1")
	if err != nil {
		t.Fatal(err)
	}
	directInv, err := inventory.Discover(direct)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Devices[0].UUID != directInv.Devices[0].UUID {
		t.Error("the backend and mockmachine.New disagree on UUIDs for the same seed")
	}
}

func TestMockBackendHasEvents(t *testing.T) {
	b, err := ParseBackend("mock:dgxh100", "n")
	if err != nil {
		t.Fatal(err)
	}
	if !b.Mock() || b.String() != "mock:dgxh100" {
		t.Errorf("backend %q, Mock() = %v", b, b.Mock())
	}
	lib, err := b.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	if b.HealthProbe() == nil {
		t.Fatal("an opened mock backend gives no health probe")
	}
	if _, ret := lib.EventSetCreate(); ret != nvml.SUCCESS {
		t.Errorf("EventSetCreate on an opened mock machine: %s", nvml.ErrorString(ret))
	}
	if b.PCIeRoot("/sys") != nil {
		t.Error("a mock backend resolves PCIe roots of invented bus IDs")
	}
	real, err := ParseBackend("", "n")
	if err != nil || real.Mock() || real.String() != BackendReal || real.PCIeRoot("/sys") == nil {
		t.Errorf("empty --nvml: %v, %v", real, err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("unknown backend", func(t *testing.T) {
		_, err := openLib("cuda", "", "")
		if err == nil {
			t.Fatal("no error")
		}
		for _, want := range []string{`"cuda"`, `"real"`, "mock:dgxh100"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
		if errors.Is(err, inventory.ErrNVMLUnavailable) {
			t.Errorf("a usage error must not read as NVML being unavailable: %v", err)
		}
	})

	t.Run("unknown mock machine", func(t *testing.T) {
		lib, err := openLib("mock:dgx1", "", "")
		if err == nil {
			t.Fatal("no error")
		}
		for _, want := range []string{`"dgx1"`, "dgxa100", "dgxh100", "dgxh200", "dgxb200"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
		if lib != nil {
			t.Errorf("Open returned a non-nil nvml.Interface (%T) with its error", lib)
		}
	})
}

// TestOpenRealWithoutDriver needs a machine without the NVIDIA driver, like
// CI; it skips where NVML can be loaded.
func TestOpenRealWithoutDriver(t *testing.T) {
	empty := t.TempDir()
	broken := t.TempDir()
	// A file that is not a shared library, where Open looks first.
	if err := os.MkdirAll(filepath.Join(broken, "usr/lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "usr/lib64/libnvidia-ml.so.1"), []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, root := range map[string]string{"empty driver root": empty, "broken library": broken, "no driver root": ""} {
		t.Run(name, func(t *testing.T) {
			for _, backend := range []string{BackendReal, ""} {
				lib, err := openLib(backend, root, "")
				if err == nil {
					lib.Shutdown()
					if root == broken {
						t.Fatalf("Open(%q, %q) loaded a file that is not a library", backend, root)
					}
					t.Skip("NVML is available on this machine")
				}
				if !errors.Is(err, inventory.ErrNVMLUnavailable) {
					t.Errorf("Open(%q, %q): error %v does not wrap ErrNVMLUnavailable", backend, root, err)
				}
				if !strings.Contains(err.Error(), "mock:") {
					t.Errorf("error %q does not point at the mock backends", err)
				}
			}
		})
	}
}

package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

var (
	busIDPattern = regexp.MustCompile(`^0000:[0-9a-f]{2}:00\.0$`)
	uuidPattern  = regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	cudaPattern  = regexp.MustCompile(`^[1-9][0-9]*\.[0-9]+$`)
)

const gib = 1 << 30

// What the go-nvml mock machines report. The A100 mock's product name
// really starts with "Mock".
var mockExpectations = map[string]struct {
	product, arch, cc, driver, cuda string
	memory                          uint64
}{
	"dgxa100": {"Mock NVIDIA A100-SXM4-40GB", "Ampere", "8.0", "550.54.15", "12.4", 40 * gib},
	"dgxh100": {"NVIDIA H100 80GB HBM3", "Hopper", "9.0", "550.54.15", "12.4", 80 * gib},
	"dgxh200": {"NVIDIA H200 141GB HBM3e", "Hopper", "9.0", "550.54.15", "12.4", 141 * gib},
	"dgxb200": {"NVIDIA B200 180GB HBM3e", "Blackwell", "10.0", "560.28.03", "12.6", 180 * gib},
}

func discoverMock(t *testing.T, machine, seed string) *Inventory {
	t.Helper()
	lib, err := NewMock(machine, seed)
	if err != nil {
		t.Fatalf("NewMock(%q, %q): %v", machine, seed, err)
	}
	t.Cleanup(func() { lib.Shutdown() })
	inv, err := Discover(lib)
	if err != nil {
		t.Fatalf("Discover(%q): %v", machine, err)
	}
	return inv
}

func TestMockMachines(t *testing.T) {
	got := strings.Join(MockMachines(), ",")
	if got != "dgxa100,dgxb200,dgxh100,dgxh200" {
		t.Errorf("MockMachines() = %s", got)
	}
}

func TestDiscoverMockMachines(t *testing.T) {
	for _, machine := range MockMachines() {
		t.Run(machine, func(t *testing.T) {
			want, ok := mockExpectations[machine]
			if !ok {
				t.Fatalf("no expectations for %q", machine)
			}
			inv := discoverMock(t, machine, "node-1")
			if inv.DriverVersion != want.driver {
				t.Errorf("DriverVersion %q, want %q", inv.DriverVersion, want.driver)
			}
			if inv.CUDADriverVersion != want.cuda || !cudaPattern.MatchString(inv.CUDADriverVersion) {
				t.Errorf("CUDADriverVersion %q, want %q", inv.CUDADriverVersion, want.cuda)
			}
			if len(inv.Devices) != 8 {
				t.Fatalf("%d devices, want 8", len(inv.Devices))
			}
			uuids := map[string]bool{}
			buses := map[string]bool{}
			for i, d := range inv.Devices {
				if d.Index != i {
					t.Errorf("device %d has Index %d: devices must be in NVML index order", i, d.Index)
				}
				if d.Minor != i {
					t.Errorf("device %d: Minor %d", i, d.Minor)
				}
				if !uuidPattern.MatchString(d.UUID) {
					t.Errorf("device %d: UUID %q is not GPU-<uuid>", i, d.UUID)
				}
				if uuids[d.UUID] {
					t.Errorf("duplicate UUID %q", d.UUID)
				}
				uuids[d.UUID] = true
				if !busIDPattern.MatchString(d.PCIBusID) {
					t.Errorf("device %d: bus ID %q not normalized to 0000:xx:00.0", i, d.PCIBusID)
				}
				if buses[d.PCIBusID] {
					t.Errorf("duplicate bus ID %q", d.PCIBusID)
				}
				buses[d.PCIBusID] = true
				if d.ProductName != want.product {
					t.Errorf("device %d: ProductName %q, want %q", i, d.ProductName, want.product)
				}
				if d.Brand != "Nvidia" {
					t.Errorf("device %d: Brand %q, want Nvidia", i, d.Brand)
				}
				if d.Architecture != want.arch {
					t.Errorf("device %d: Architecture %q, want %q", i, d.Architecture, want.arch)
				}
				if d.CUDAComputeCapability != want.cc {
					t.Errorf("device %d: CUDAComputeCapability %q, want %q", i, d.CUDAComputeCapability, want.cc)
				}
				if d.MemoryBytes != want.memory {
					t.Errorf("device %d: MemoryBytes %d (%.1f GiB), want %d", i, d.MemoryBytes, float64(d.MemoryBytes)/gib, want.memory)
				}
				if !d.MIGCapable {
					t.Errorf("device %d: the DGX mock GPUs are MIG capable", i)
				}
				if got, ok := inv.DeviceByUUID(d.UUID); !ok || got != d {
					t.Errorf("DeviceByUUID(%q) = %+v, %v", d.UUID, got, ok)
				}
			}
			if _, ok := inv.DeviceByUUID("GPU-does-not-exist"); ok {
				t.Error("DeviceByUUID found an unknown UUID")
			}
		})
	}
}

func TestMockUUIDsAreDeterministic(t *testing.T) {
	uuids := func(machine, seed string) []string {
		var out []string
		for _, d := range discoverMock(t, machine, seed).Devices {
			out = append(out, d.UUID)
		}
		return out
	}
	seen := map[string]string{}
	for _, machine := range MockMachines() {
		a := uuids(machine, "node-1")
		b := uuids(machine, "node-1")
		c := uuids(machine, "node-2")
		if strings.Join(a, ",") != strings.Join(b, ",") {
			t.Errorf("%s: same seed, different UUIDs:\n%v\n%v", machine, a, b)
		}
		for i := range a {
			if a[i] == c[i] {
				t.Errorf("%s: GPU %d has UUID %s with two different seeds", machine, i, a[i])
			}
		}
		// Two machines never share UUIDs either.
		for _, u := range append(a, c...) {
			if other, dup := seen[u]; dup && other != machine {
				t.Errorf("UUID %s on both %s and %s", u, other, machine)
			}
			seen[u] = machine
		}
	}
}

func TestNormalizeBusID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:3B:00.0": "0000:3b:00.0",
		"00000001:AF:00.1": "0001:af:00.1",
		"0000:3b:00.0":     "0000:3b:00.0",
		"":                 "",
	} {
		var raw [32]int8
		copy(raw[:], toInt8(in))
		if got := normalizeBusID(raw); got != want {
			t.Errorf("normalizeBusID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCUDADriverVersionFormat(t *testing.T) {
	lib, err := NewMock("dgxh100", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	for v, want := range map[int]string{12040: "12.4", 12060: "12.6", 11080: "11.8", 13000: "13.0", 12090: "12.9"} {
		lib.SystemGetCudaDriverVersionFunc = func() (int, nvml.Return) { return v, nvml.SUCCESS }
		inv, err := Discover(lib)
		if err != nil {
			t.Fatal(err)
		}
		if inv.CUDADriverVersion != want {
			t.Errorf("CUDA %d: %q, want %q", v, inv.CUDADriverVersion, want)
		}
	}
}

func TestDiscoverReportsNVMLErrors(t *testing.T) {
	lib, err := NewMock("dgxa100", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
	if _, err := Discover(lib); err == nil || !strings.Contains(err.Error(), "counting GPUs") {
		t.Errorf("Discover with a failing DeviceGetCount: %v", err)
	}
}

func TestOpenMock(t *testing.T) {
	lib, err := Open("mock:dgxb200", "", "node-1")
	if err != nil {
		t.Fatalf("Open(mock:dgxb200): %v", err)
	}
	defer lib.Shutdown()
	inv, err := Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Devices) != 8 || inv.Devices[0].Architecture != "Blackwell" {
		t.Errorf("unexpected inventory %+v", inv)
	}
	direct := discoverMock(t, "dgxb200", "node-1")
	if inv.Devices[0].UUID != direct.Devices[0].UUID {
		t.Error("Open and NewMock disagree on UUIDs for the same seed")
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("unknown backend", func(t *testing.T) {
		_, err := Open("cuda", "", "")
		if err == nil {
			t.Fatal("no error")
		}
		for _, want := range []string{`"cuda"`, `"real"`, "mock:dgxh100"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
		if errors.Is(err, ErrNVMLUnavailable) {
			t.Errorf("a usage error must not read as NVML being unavailable: %v", err)
		}
	})

	t.Run("unknown mock machine", func(t *testing.T) {
		lib, err := Open("mock:dgx1", "", "")
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

	t.Run("NewMock unknown machine", func(t *testing.T) {
		if _, err := NewMock("nope", ""); err == nil || !strings.Contains(err.Error(), `"nope"`) {
			t.Errorf("NewMock(nope): %v", err)
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
				lib, err := Open(backend, root, "")
				if err == nil {
					lib.Shutdown()
					if root == broken {
						t.Fatalf("Open(%q, %q) loaded a file that is not a library", backend, root)
					}
					t.Skip("NVML is available on this machine")
				}
				if !errors.Is(err, ErrNVMLUnavailable) {
					t.Errorf("Open(%q, %q): error %v does not wrap ErrNVMLUnavailable", backend, root, err)
				}
				if !strings.Contains(err.Error(), "mock:") {
					t.Errorf("error %q does not point at the mock backends", err)
				}
			}
		})
	}
}

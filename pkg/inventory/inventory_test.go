package inventory_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
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
	"dgxa100":      {"Mock NVIDIA A100-SXM4-40GB", "Ampere", "8.0", "550.54.15", "12.4", 40 * gib},
	"dgxa100-80gb": {"NVIDIA A100-SXM4-80GB", "Ampere", "8.0", "550.54.15", "12.4", 80 * gib},
	"dgxh100":      {"NVIDIA H100 80GB HBM3", "Hopper", "9.0", "550.54.15", "12.4", 80 * gib},
	"dgxh200":      {"NVIDIA H200 141GB HBM3e", "Hopper", "9.0", "550.54.15", "12.4", 141 * gib},
	"dgxb200":      {"NVIDIA B200 180GB HBM3e", "Blackwell", "10.0", "560.28.03", "12.6", 180 * gib},
}

// discoverMock discovers the GPUs of a mock machine.
func discoverMock(t *testing.T, machine, seed string) *inventory.Inventory {
	t.Helper()
	_, inv := mockmachinetest.Machine(t, machine, seed)
	return inv
}

func TestDiscoverMockMachines(t *testing.T) {
	for _, machine := range mockmachine.Names() {
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

func TestCUDADriverVersionFormat(t *testing.T) {
	lib, err := mockmachine.New("dgxh100", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	for v, want := range map[int]string{12040: "12.4", 12060: "12.6", 11080: "11.8", 13000: "13.0", 12090: "12.9"} {
		lib.SystemGetCudaDriverVersionFunc = func() (int, nvml.Return) { return v, nvml.SUCCESS }
		inv, err := inventory.Discover(lib)
		if err != nil {
			t.Fatal(err)
		}
		if inv.CUDADriverVersion != want {
			t.Errorf("CUDA %d: %q, want %q", v, inv.CUDADriverVersion, want)
		}
	}
}

func TestDiscoverReportsNVMLErrors(t *testing.T) {
	lib, err := mockmachine.New("dgxa100", "s")
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Shutdown()
	lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
	if _, err := inventory.Discover(lib); err == nil || !strings.Contains(err.Error(), "counting GPUs") {
		t.Errorf("Discover with a failing DeviceGetCount: %v", err)
	}
}

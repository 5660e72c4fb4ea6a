package resourceslice

import (
	"context"
	"fmt"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apiserver/pkg/cel/environment"
	dracel "k8s.io/dynamic-resource-allocation/cel"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// driverName is the domain of the unqualified attributes, as the scheduler
// sees them.
const driverName = "gpu.nvidia.com"

// celDevice is one published device together with where it came from.
type celDevice struct {
	machine string
	gpu     inventory.Device
	device  resourceapi.Device
}

// mixedDevices publishes the GPUs of every mock machine, as if each were a
// node of one heterogeneous cluster.
func mixedDevices(t *testing.T) []celDevice {
	t.Helper()
	var out []celDevice
	for _, machine := range mockmachine.Names() {
		inv := mockInventory(t, machine, "node-"+machine)
		for i, d := range Devices(inv, devices.FromInventory(inv), Options{PCIeRoot: fakePCIeRoot}) {
			out = append(out, celDevice{machine: machine, gpu: inv.Devices[i], device: d})
		}
	}
	if len(out) != 40 {
		t.Fatalf("got %d devices from %v, want 40", len(out), mockmachine.Names())
	}
	return out
}

// TestCELSelectors evaluates the selectors users write in DeviceClasses and
// ResourceClaims with the Kubernetes CEL library, against the published
// devices. It is the end-to-end check of the attribute types: a string
// published where a version is expected, or an invalid semver, makes these
// expressions fail at scheduling time.
func TestCELSelectors(t *testing.T) {
	devs := mixedDevices(t)
	onMachines := func(machines ...string) func(celDevice) bool {
		return func(d celDevice) bool {
			for _, m := range machines {
				if d.machine == m {
					return true
				}
			}
			return false
		}
	}
	all := func(celDevice) bool { return true }

	for _, tc := range []struct {
		expr string
		want func(celDevice) bool
	}{
		{`device.attributes["gpu.nvidia.com"].type == "gpu"`, all},
		{`device.driver == "gpu.nvidia.com"`, all},
		{`device.attributes["gpu.nvidia.com"].productName.startsWith("NVIDIA H100")`, onMachines("dgxh100")},
		{`device.attributes["gpu.nvidia.com"].productName.contains("A100")`, onMachines("dgxa100", "dgxa100-80gb")},
		{`device.attributes["gpu.nvidia.com"].architecture == "Hopper"`, onMachines("dgxh100", "dgxh200")},
		{`device.attributes["gpu.nvidia.com"].architecture == "Blackwell"`, onMachines("dgxb200")},
		{`device.attributes["gpu.nvidia.com"].brand == "Nvidia"`, all},
		{`device.attributes["gpu.nvidia.com"].migCapable`, all},

		// Memory: the A100-SXM4-40GB has exactly 40Gi, so ">= 40Gi"
		// includes it and "> 40Gi" does not.
		{`device.capacity["gpu.nvidia.com"].memory.compareTo(quantity("80Gi")) >= 0`, onMachines("dgxa100-80gb", "dgxh100", "dgxh200", "dgxb200")},
		{`device.capacity["gpu.nvidia.com"].memory.compareTo(quantity("40Gi")) > 0`, onMachines("dgxa100-80gb", "dgxh100", "dgxh200", "dgxb200")},
		{`device.capacity["gpu.nvidia.com"].memory.compareTo(quantity("40Gi")) >= 0`, all},
		{`device.capacity["gpu.nvidia.com"].memory.isGreaterThan(quantity("100Gi"))`, onMachines("dgxh200", "dgxb200")},
		{`device.capacity["gpu.nvidia.com"].memory.isLessThan(quantity("50G"))`, onMachines("dgxa100")},

		// Versions are semver values, comparable as such.
		{`device.attributes["gpu.nvidia.com"].cudaComputeCapability.isGreaterThan(semver("8.0.0"))`, onMachines("dgxh100", "dgxh200", "dgxb200")},
		{`device.attributes["gpu.nvidia.com"].cudaComputeCapability.compareTo(semver("9.0.0")) >= 0`, onMachines("dgxh100", "dgxh200", "dgxb200")},
		{`device.attributes["gpu.nvidia.com"].cudaComputeCapability.compareTo(semver("9.0.0")) == 0`, onMachines("dgxh100", "dgxh200")},
		{`device.attributes["gpu.nvidia.com"].cudaComputeCapability.isLessThan(semver("9.0.0"))`, onMachines("dgxa100", "dgxa100-80gb")},
		// 10.0 > 9.0 numerically: a string comparison would get this wrong.
		{`device.attributes["gpu.nvidia.com"].cudaComputeCapability.isGreaterThan(semver("9.10.0"))`, onMachines("dgxb200")},
		// The B200 mock's driver is "560.28.03", published as 560.28.3.
		{`device.attributes["gpu.nvidia.com"].driverVersion.compareTo(semver("560.0.0")) >= 0`, onMachines("dgxb200")},
		{`device.attributes["gpu.nvidia.com"].driverVersion.isGreaterThan(semver("560.28.2")) && device.attributes["gpu.nvidia.com"].driverVersion.isLessThan(semver("560.28.4"))`, onMachines("dgxb200")},
		{`device.attributes["gpu.nvidia.com"].driverVersion.isLessThan(semver("550.100.0"))`, onMachines("dgxa100", "dgxa100-80gb", "dgxh100", "dgxh200")},
		{`device.attributes["gpu.nvidia.com"].cudaDriverVersion.isGreaterThan(semver("12.4.0"))`, onMachines("dgxb200")},
		{`device.attributes["gpu.nvidia.com"].cudaDriverVersion.compareTo(semver("12.4.0")) == 0`, onMachines("dgxa100", "dgxa100-80gb", "dgxh100", "dgxh200")},

		// Ints and the standard PCI attributes. Bus IDs repeat across mock
		// machines (one per node), so this selects one GPU per node.
		{`device.attributes["gpu.nvidia.com"].index < 4`, func(d celDevice) bool { return d.gpu.Index < 4 }},
		{`device.attributes["gpu.nvidia.com"].minor == 5`, func(d celDevice) bool { return d.gpu.Minor == 5 }},
		{`device.attributes["resource.kubernetes.io"].pciBusID == "0000:38:00.0"`, func(d celDevice) bool { return d.gpu.Index == 2 }},
		{`device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:80"`, func(d celDevice) bool { return d.gpu.PCIBusID >= "0000:80" }},
		{`"pcieRoot" in device.attributes["resource.kubernetes.io"]`, all},
		// Unqualified names live in the driver's domain only.
		{`"pciBusID" in device.attributes["gpu.nvidia.com"]`, func(celDevice) bool { return false }},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			got := selectDevices(t, tc.expr, devs)
			matched := 0
			for i, d := range devs {
				if want := tc.want(d); got[i] != want {
					t.Errorf("%s %s (%s): matched=%v, want %v", d.machine, d.device.Name, d.gpu.ProductName, got[i], want)
				}
				if got[i] {
					matched++
				}
			}
			t.Logf("matched %d of %d devices", matched, len(devs))
		})
	}
}

// TestCELSelectExactlyOne picks single GPUs by their unique attributes.
func TestCELSelectExactlyOne(t *testing.T) {
	devs := mixedDevices(t)[:8] // the GPUs of one node
	for i, d := range devs {
		for _, expr := range []string{
			fmt.Sprintf(`device.attributes["resource.kubernetes.io"].pciBusID == %q`, d.gpu.PCIBusID),
			fmt.Sprintf(`device.attributes["gpu.nvidia.com"].uuid == %q`, d.gpu.UUID),
		} {
			got := selectDevices(t, expr, devs)
			for j := range devs {
				if got[j] != (i == j) {
					t.Errorf("%s: device %d matched=%v", expr, j, got[j])
				}
			}
		}
	}
}

// selectDevices compiles expr the way the API server validates a new
// expression, and as the scheduler runs a stored one, and returns for every
// device whether it matches. Both must agree.
func selectDevices(t *testing.T, expr string, devs []celDevice) []bool {
	t.Helper()
	compiler := dracel.GetCompiler(dracel.Features{})
	var results [][]bool
	for _, envType := range []environment.Type{environment.NewExpressions, environment.StoredExpressions} {
		compiled := compiler.CompileCELExpression(expr, dracel.Options{EnvType: &envType})
		if compiled.Error != nil {
			t.Fatalf("%s: compile: %v", envType, compiled.Error)
		}
		if compiled.MaxCost > resourceapi.CELSelectorExpressionMaxCost {
			t.Fatalf("%s: estimated cost %d over the limit %d", envType, compiled.MaxCost, resourceapi.CELSelectorExpressionMaxCost)
		}
		matches := make([]bool, len(devs))
		for i, d := range devs {
			ok, _, err := compiled.DeviceMatches(context.Background(), dracel.Device{
				Driver:     driverName,
				Attributes: d.device.Attributes,
				Capacity:   d.device.Capacity,
			})
			if err != nil {
				t.Fatalf("%s: %s: evaluating on %s/%s: %v", envType, expr, d.machine, d.device.Name, err)
			}
			matches[i] = ok
		}
		results = append(results, matches)
	}
	if fmt.Sprint(results[0]) != fmt.Sprint(results[1]) {
		t.Fatalf("new and stored environments disagree: %v vs %v", results[0], results[1])
	}
	return results[0]
}

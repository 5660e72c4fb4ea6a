package gfdlabels_test

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gpudra/gpudra/pkg/gfdlabels"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

func allMachines() []string {
	return slices.Concat(mockmachine.Names(), mockmachine.MIGNames(), mockmachine.MIGOnNames())
}

func compute(t *testing.T, inv *inventory.Inventory, s gfdlabels.Settings) map[string]string {
	t.Helper()
	l, err := gfdlabels.Compute(inv, s)
	if err != nil {
		t.Fatalf("Compute(%+v): %v", s, err)
	}
	for k, v := range l {
		if errs := validation.IsQualifiedName(k); len(errs) != 0 || !strings.HasPrefix(k, gfdlabels.Prefix) {
			t.Errorf("label key %q: %v", k, errs)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) != 0 {
			t.Errorf("label %s=%q: %v", k, v, errs)
		}
	}
	return l
}

func want(t *testing.T, l map[string]string, kv ...string) {
	t.Helper()
	for i := 0; i < len(kv); i += 2 {
		if got, ok := l[kv[i]]; !ok || got != kv[i+1] {
			t.Errorf("%s = %q (set %v), want %q", kv[i], got, ok, kv[i+1])
		}
	}
}

// Every mock machine, every MIG strategy: the labels common to all, with
// GFD's value formats.
func TestComputeEveryMachine(t *testing.T) {
	for _, machine := range allMachines() {
		_, inv := mockmachinetest.Machine(t, machine, "node-a")
		for _, strategy := range []string{"", gfdlabels.MIGStrategyNone, gfdlabels.MIGStrategySingle, gfdlabels.MIGStrategyMixed} {
			t.Run(machine+"/"+strategy, func(t *testing.T) {
				l := compute(t, inv, gfdlabels.Settings{MIGStrategy: strategy})
				d := inv.Devices[0]
				major, minor, _ := strings.Cut(d.CUDAComputeCapability, ".")
				v := strings.Split(inv.DriverVersion, ".")
				c := strings.Split(inv.CUDADriverVersion, ".")
				want(t, l,
					"nvidia.com/gpu.present", "true",
					"nvidia.com/gpu.family", strings.ReplaceAll(strings.ToLower(d.Architecture), " ", "-"),
					"nvidia.com/gpu.compute.major", major,
					"nvidia.com/gpu.compute.minor", minor,
					"nvidia.com/cuda.driver-version.major", v[0],
					"nvidia.com/cuda.driver-version.minor", v[1],
					"nvidia.com/cuda.driver-version.revision", v[2],
					"nvidia.com/cuda.driver-version.full", inv.DriverVersion,
					"nvidia.com/cuda.driver.major", v[0],
					"nvidia.com/cuda.driver.minor", v[1],
					"nvidia.com/cuda.driver.rev", v[2],
					"nvidia.com/cuda.runtime-version.major", c[0],
					"nvidia.com/cuda.runtime-version.minor", c[1],
					"nvidia.com/cuda.runtime-version.full", inv.CUDADriverVersion,
					"nvidia.com/cuda.runtime.major", c[0],
					"nvidia.com/cuda.runtime.minor", c[1],
					"nvidia.com/mig.capable", strconv.FormatBool(d.MIGCapable),
					"nvidia.com/mps.capable", "false",
				)
				anyMIG := slices.ContainsFunc(inv.Devices, func(d inventory.Device) bool { return d.MIGEnabled })
				if _, ok := l["nvidia.com/mig.strategy"]; ok != (strategy == "single" || strategy == "mixed") {
					t.Errorf("mig.strategy set %v", ok)
				}
				if strategy == "" || strategy == "none" || !anyMIG {
					want(t, l,
						"nvidia.com/gpu.product", strings.ReplaceAll(d.ProductName, " ", "-"),
						"nvidia.com/gpu.count", strconv.Itoa(len(inv.Devices)),
						"nvidia.com/gpu.memory", strconv.FormatUint(d.MemoryBytes>>20, 10),
						"nvidia.com/gpu.sharing-strategy", "none")
				}
				hasMixed := slices.ContainsFunc(slices.Collect(maps.Keys(l)), func(k string) bool { return strings.HasPrefix(k, "nvidia.com/mig-") })
				if hasMixed != (strategy == "mixed" && len(inv.MIGDevices) > 0) {
					t.Errorf("mixed MIG labels present: %v", hasMixed)
				}
			})
		}
	}
}

func TestComputeH100Values(t *testing.T) {
	_, inv := mockmachinetest.Machine(t, "dgxh100", "node-a")
	l := compute(t, inv, gfdlabels.Settings{Machine: "DGX H100 (rev 2)", GPUMode: "compute"})
	want(t, l,
		"nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3",
		"nvidia.com/gpu.count", "8",
		"nvidia.com/gpu.replicas", "1",
		"nvidia.com/gpu.family", "hopper",
		"nvidia.com/gpu.compute.major", "9",
		"nvidia.com/gpu.compute.minor", "0",
		"nvidia.com/gpu.machine", "DGX-H100-rev-2",
		"nvidia.com/gpu.mode", "compute",
		"nvidia.com/mig.capable", "true",
	)
	if _, ok := l["nvidia.com/mig.strategy"]; ok {
		t.Error("mig.strategy set with strategy none")
	}

	// Time-slicing: -SHARED unless renamed.
	l = compute(t, inv, gfdlabels.Settings{Replicas: 4})
	want(t, l, "nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3-SHARED", "nvidia.com/gpu.replicas", "4",
		"nvidia.com/gpu.sharing-strategy", "time-slicing", "nvidia.com/mps.capable", "false")
	l = compute(t, inv, gfdlabels.Settings{Replicas: 4, Renamed: true, SharingStrategy: gfdlabels.SharingMPS})
	want(t, l, "nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.replicas", "4",
		"nvidia.com/gpu.sharing-strategy", "mps", "nvidia.com/mps.capable", "true")
}

func TestComputeMIG(t *testing.T) {
	_, inv := mockmachinetest.Machine(t, "dgxh100-mig", "node-a")
	if len(inv.MIGDevices) == 0 {
		t.Fatal("dgxh100-mig has no MIG devices")
	}
	counts := map[string]int{}
	for _, m := range inv.MIGDevices {
		counts[m.Profile]++
	}
	l := compute(t, inv, gfdlabels.Settings{MIGStrategy: "mixed", Replicas: 2})
	want(t, l, "nvidia.com/mig.strategy", "mixed", "nvidia.com/gpu.count", "8",
		"nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3-SHARED", "nvidia.com/gpu.replicas", "2")
	for profile, n := range counts {
		r := "nvidia.com/mig-" + profile
		m := inv.MIGDevices[slices.IndexFunc(inv.MIGDevices, func(m inventory.MIGDevice) bool { return m.Profile == profile })]
		want(t, l,
			r+".count", strconv.Itoa(n),
			r+".product", "NVIDIA-H100-80GB-HBM3-MIG-"+profile,
			r+".replicas", "1",
			r+".sharing-strategy", "none",
			r+".memory", strconv.FormatUint(m.MemoryBytes>>20, 10),
			r+".multiprocessors", fmt.Sprint(m.Multiprocessors),
			r+".engines.copy", fmt.Sprint(m.CopyEngines),
			r+".engines.decoder", fmt.Sprint(m.Decoders),
			r+".engines.encoder", fmt.Sprint(m.Encoders),
			r+".engines.jpeg", fmt.Sprint(m.JPEGs),
			r+".engines.ofa", fmt.Sprint(m.OFAs),
		)
		if _, ok := l[r+".slices.gi"]; !ok {
			t.Errorf("%s.slices.gi missing", r)
		}
	}

	// Single: GPUs in and out of MIG mode is GFD's invalid layout.
	l = compute(t, inv, gfdlabels.Settings{MIGStrategy: "single"})
	want(t, l, "nvidia.com/mig.strategy", "single", "nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3-MIG-INVALID",
		"nvidia.com/gpu.count", "0", "nvidia.com/gpu.replicas", "0", "nvidia.com/gpu.memory", "0")

	// Single, every GPU in MIG mode with one profile: the MIG devices are
	// the node's nvidia.com/gpu.
	one := &inventory.Inventory{DriverVersion: inv.DriverVersion, CUDADriverVersion: inv.CUDADriverVersion}
	p := inv.MIGDevices[0].Profile
	for _, d := range inv.Devices {
		n := len(one.MIGDevices)
		for _, m := range inv.MIGDevices {
			if m.Profile == p && m.ParentUUID == d.UUID {
				one.MIGDevices = append(one.MIGDevices, m)
			}
		}
		if len(one.MIGDevices) > n {
			one.Devices = append(one.Devices, d)
		}
	}
	l = compute(t, one, gfdlabels.Settings{MIGStrategy: "single"})
	want(t, l, "nvidia.com/gpu.product", "NVIDIA-H100-80GB-HBM3-MIG-"+p,
		"nvidia.com/gpu.count", strconv.Itoa(len(one.MIGDevices)), "nvidia.com/gpu.family", "hopper",
		"nvidia.com/gpu.memory", strconv.FormatUint(one.MIGDevices[0].MemoryBytes>>20, 10))
}

func TestComputeMIGOnEmpty(t *testing.T) {
	name := mockmachine.MIGOnNames()[0]
	_, inv := mockmachinetest.Machine(t, name, "node-a")
	l := compute(t, inv, gfdlabels.Settings{MIGStrategy: "single"})
	if !strings.HasSuffix(l["nvidia.com/gpu.product"], "-MIG-INVALID") {
		t.Errorf("%s single: product %q, want -MIG-INVALID", name, l["nvidia.com/gpu.product"])
	}
	l = compute(t, inv, gfdlabels.Settings{MIGStrategy: "mixed"})
	want(t, l, "nvidia.com/gpu.replicas", "0", "nvidia.com/gpu.sharing-strategy", "none")
}

func TestComputeErrorsAndEmpty(t *testing.T) {
	if l, err := gfdlabels.Compute(&inventory.Inventory{}, gfdlabels.Settings{}); err != nil || len(l) != 0 {
		t.Errorf("no GPUs: %v, %v; want no labels", l, err)
	}
	_, inv := mockmachinetest.Machine(t, "dgxa100", "node-a")
	for _, s := range []gfdlabels.Settings{{MIGStrategy: "bogus"}, {Replicas: 2, SharingStrategy: "bogus"}} {
		if _, err := gfdlabels.Compute(inv, s); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	bad := *inv
	bad.DriverVersion = "550"
	if _, err := gfdlabels.Compute(&bad, gfdlabels.Settings{}); err == nil {
		t.Error("driver version 550: no error")
	}
}

func TestFamily(t *testing.T) {
	for cc, f := range map[[2]int]string{{7, 0}: "volta", {7, 5}: "turing", {8, 0}: "ampere", {8, 9}: "ada-lovelace", {9, 0}: "hopper", {10, 0}: "blackwell", {4, 0}: "undefined"} {
		if got := gfdlabels.Family(cc[0], cc[1]); got != f {
			t.Errorf("Family(%v) = %q, want %q", cc, got, f)
		}
	}
}

package mps

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/sharing"
)

func TestInvalidMPSConfigsFailPrepareWithoutSideEffects(t *testing.T) {
	inv := machine(t)
	g0, g1 := inv.Devices[0], inv.Devices[1]
	withCfg := func(m *configapi.MpsConfig) sharing.Claim {
		return claimOf(gpuDevice(g0, mpsSharing(m)), gpuDevice(g1, mpsSharing(m.DeepCopy())))
	}
	limits := func(kv ...string) map[string]resource.Quantity {
		out := map[string]resource.Quantity{}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = resource.MustParse(kv[i+1])
		}
		return out
	}
	mig := func(name, uuid string) sharing.Device {
		cfg := &configapi.MigDeviceConfig{Sharing: &configapi.MigDeviceSharing{Strategy: configapi.MpsStrategy}}
		cfg.Normalize()
		return sharing.Device{Name: name, Type: devices.KindMIG, UUID: uuid, ParentUUID: g0.UUID, Requests: []string{"mig"}, Config: cfg}
	}

	tests := []struct {
		name  string
		claim sharing.Claim
		want  []string
	}{
		{"negative percentage", withCfg(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(-5)}),
			[]string{"sharing.mpsConfig.defaultActiveThreadPercentage -5 is out of range", "from 1 to 100"}},
		{"percentage above 100", withCfg(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(101)}),
			[]string{"defaultActiveThreadPercentage 101", "from 1 to 100"}},
		{"limit for a device not in the claim", withCfg(&configapi.MpsConfig{DefaultPerDevicePinnedMemoryLimit: limits(inv.Devices[2].UUID, "1Gi")}),
			[]string{`defaultPerDevicePinnedMemoryLimit["` + inv.Devices[2].UUID + `"]`, "is not an MPS device of the claim",
				`"0" or "` + g0.UUID + `" (device gpu-0)`, `"1" or "` + g1.UUID + `" (device gpu-1)`}},
		{"index past the claim's devices", withCfg(&configapi.MpsConfig{DefaultPerDevicePinnedMemoryLimit: limits("2", "1Gi")}),
			[]string{`defaultPerDevicePinnedMemoryLimit["2"]`, "is not an MPS device of the claim"}},
		{"index with a leading zero", withCfg(&configapi.MpsConfig{DefaultPerDevicePinnedMemoryLimit: limits("01", "1Gi")}),
			[]string{`defaultPerDevicePinnedMemoryLimit["01"]`, "is not an MPS device"}},
		{"one device under two keys", withCfg(&configapi.MpsConfig{DefaultPerDevicePinnedMemoryLimit: limits("0", "1Gi", g0.UUID, "2Gi")}),
			[]string{"already has a limit", "give each device one limit"}},
		{"limit below 1Mi", withCfg(&configapi.MpsConfig{DefaultPinnedDeviceMemoryLimit: quantity("512Ki")}),
			[]string{"sharing.mpsConfig.defaultPinnedDeviceMemoryLimit", "too small", "at least 1Mi"}},
		{"negative per-device limit", withCfg(&configapi.MpsConfig{DefaultPerDevicePinnedMemoryLimit: limits("1", "-1Gi")}),
			[]string{`defaultPerDevicePinnedMemoryLimit["1"]`, "too small"}},
		{"different configs in one claim", claimOf(
			gpuDevice(g0, mpsSharing(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(50)})),
			gpuDevice(g1, mpsSharing(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(60)}))),
			[]string{"devices gpu-0 and gpu-1 have different sharing.mpsConfig", "same mpsConfig"}},
		{"two MIG devices", claimOf(mig("gpu-0-mig-0", "MIG-1111-2222"), mig("gpu-0-mig-1", "MIG-3333-4444")),
			[]string{"including MIG devices [gpu-0-mig-0 gpu-0-mig-1]", "exactly one MIG device"}},
		{"MIG device with a GPU", claimOf(gpuDevice(g1, mpsSharing(nil)), mig("gpu-0-mig-0", "MIG-1111-2222")),
			[]string{"including MIG devices [gpu-0-mig-0]", "either full GPUs or exactly one MIG device"}},
		{"admin access", func() sharing.Claim {
			d := gpuDevice(g0, mpsSharing(nil))
			d.AdminAccess = true
			return claimOf(d)
		}(), []string{"device gpu-0 has admin access", "drop adminAccess"}},
		{"malformed UUID", func() sharing.Claim {
			d := gpuDevice(g0, mpsSharing(nil))
			d.UUID = "GPU-x; rm -rf /"
			return claimOf(d)
		}(), []string{"not a GPU or MIG UUID"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, true)
			_, err := f.mgr.Apply(f.ctx, tc.claim)
			if err == nil {
				t.Fatal("Apply accepted an invalid MPS config")
			}
			for _, want := range append([]string{tc.claim.Ref()}, tc.want...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if n := creates(f.client); n != 0 {
				t.Errorf("%d pods created for an invalid config", n)
			}
			if entries, _ := os.ReadDir(f.opts.BaseDir); len(entries) != 0 {
				t.Errorf("directories created for an invalid config: %v", entries)
			}
		})
	}
}

func TestResolveValidConfigs(t *testing.T) {
	inv := machine(t)
	g0, g1 := inv.Devices[0], inv.Devices[1]
	tests := []struct {
		name  string
		claim sharing.Claim
		want  *daemonConfig
	}{
		{"no mpsConfig: MPS defaults", claimOf(gpuDevice(g0, mpsSharing(nil))),
			&daemonConfig{UUIDs: []string{g0.UUID}, Names: []string{"gpu-0"}}},
		{"per-device limit by UUID overrides the default, rounded down to MiB", func() sharing.Claim {
			m := &configapi.MpsConfig{
				DefaultPinnedDeviceMemoryLimit:    quantity("1.5Gi"),
				DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{g1.UUID: resource.MustParse("3000000000")},
			}
			return claimOf(gpuDevice(g0, mpsSharing(m)), gpuDevice(g1, mpsSharing(m.DeepCopy())))
		}(), &daemonConfig{UUIDs: []string{g0.UUID, g1.UUID}, Names: []string{"gpu-0", "gpu-1"},
			PinnedLimits: []pinnedLimit{{UUID: g0.UUID, MiB: 1536}, {UUID: g1.UUID, MiB: 2861}}}},
		{"a device listed once per request counts once; non-MPS devices are left out", func() sharing.Claim {
			d := gpuDevice(g0, mpsSharing(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(25)}))
			again := d
			again.Requests = []string{"other"}
			return claimOf(d, gpuDevice(g1, nil), again)
		}(), &daemonConfig{UUIDs: []string{g0.UUID}, Names: []string{"gpu-0"}, ActiveThreadPercentage: ptr(25)}},
		{"one MIG device", func() sharing.Claim {
			cfg := &configapi.MigDeviceConfig{Sharing: &configapi.MigDeviceSharing{Strategy: configapi.MpsStrategy,
				MpsConfig: &configapi.MpsConfig{DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"0": resource.MustParse("1Gi")}}}}
			return claimOf(sharing.Device{Name: "gpu-0-mig-0", Type: devices.KindMIG, UUID: "MIG-aaaa-bbbb", ParentUUID: g0.UUID, Config: cfg})
		}(), &daemonConfig{UUIDs: []string{"MIG-aaaa-bbbb"}, Names: []string{"gpu-0-mig-0"},
			PinnedLimits: []pinnedLimit{{UUID: "MIG-aaaa-bbbb", MiB: 1024}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolve(tc.claim)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("resolve = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHashCoversDevicesAndLimitsOnly(t *testing.T) {
	a := &daemonConfig{UUIDs: []string{"GPU-a"}, Names: []string{"gpu-0"}, ActiveThreadPercentage: ptr(50)}
	b := &daemonConfig{UUIDs: []string{"GPU-a"}, Names: []string{"gpu-0"}, ActiveThreadPercentage: ptr(50)}
	if a.hash() != b.hash() {
		t.Error("equal configs hash differently")
	}
	b.ActiveThreadPercentage = ptr(51)
	if a.hash() == b.hash() {
		t.Error("another percentage hashes the same")
	}
	b.ActiveThreadPercentage = ptr(50)
	b.PinnedLimits = []pinnedLimit{{UUID: "GPU-a", MiB: 1}}
	if a.hash() == b.hash() {
		t.Error("another limit hashes the same")
	}
	b.PinnedLimits = nil
	b.UUIDs = []string{"GPU-b"}
	if a.hash() == b.hash() {
		t.Error("another device hashes the same")
	}
}

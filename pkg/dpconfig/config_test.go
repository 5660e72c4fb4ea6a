package dpconfig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpudra/gpudra/pkg/deviceplugin"
	"github.com/gpudra/gpudra/pkg/dpconfig"
)

func parseFile(t *testing.T, name string) *dpconfig.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	c, err := dpconfig.Parse(name, data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

func TestParseFixtures(t *testing.T) {
	c := parseFile(t, "flags.yaml")
	if c.MIGStrategy() != "none" || !*c.Flags.FailOnInitError || (*c.Flags.Plugin.DeviceListStrategy)[0] != "envvar" || *c.Flags.GFD.SleepInterval != "60s" {
		t.Errorf("flags.yaml: %+v", c.Flags)
	}
	if c.SharingStrategy() != "none" {
		t.Errorf("flags.yaml: sharing %s", c.SharingStrategy())
	}

	c = parseFile(t, "time-slicing.yaml")
	ts := c.Sharing.TimeSlicing
	if c.SharingStrategy() != "time-slicing" || ts.Resources[0].Replicas != 10 || !ts.Resources[0].Devices.All || *ts.FailRequestsGreaterThanOne {
		t.Errorf("time-slicing.yaml: %+v", ts)
	}

	c = parseFile(t, "mps.yaml")
	if c.SharingStrategy() != "mps" || !*c.Sharing.MPS.FailRequestsGreaterThanOne {
		t.Errorf("mps.yaml: MPS's failRequestsGreaterThanOne must default to true: %+v", c.Sharing.MPS)
	}

	c = parseFile(t, "mig-mixed.yaml")
	got := []string{}
	for _, r := range c.Sharing.TimeSlicing.Resources {
		got = append(got, r.Name+"->"+r.Rename)
	}
	want := "nvidia.com/gpu->nvidia.com/gpu.shared nvidia.com/mig-1g.5gb->nvidia.com/mig-1g.5gb.shared nvidia.com/mig-2g.10gb->nvidia.com/mig-2g.10gb.ts"
	if strings.Join(got, " ") != want {
		t.Errorf("mig-mixed.yaml: %v, want %s", got, want)
	}

	c = parseFile(t, "devices.yaml")
	if l := c.Sharing.TimeSlicing.Resources[0].Devices.List; len(l) != 5 || l[0] != "0" {
		t.Errorf("devices.yaml: %v", l)
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ data, want string }{
		"unknown field":        {"version: v1\nflags:\n  migStrategy: none\n  migStrategyy: mixed\n", `unknown field "migStrategyy"`},
		"unknown nested field": {"version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: gpu\n      replica: 2\n", `unknown field "replica"`},
		"version":              {"version: v2\n", `version "v2"`},
		"mig strategy":         {"flags:\n  migStrategy: all\n", `flags.migStrategy "all"`},
		"list strategy":        {"flags:\n  plugin:\n    deviceListStrategy: [envvar, cdi]\n", `deviceListStrategy "cdi"`},
		"id strategy":          {"flags:\n  plugin:\n    deviceIDStrategy: serial\n", `deviceIDStrategy "serial"`},
		"one replica":          {"sharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 1\n", "must be >= 2"},
		"no resources":         {"sharing:\n  timeSlicing:\n    resources: []\n", "no resources specified"},
		"both strategies":      {"sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 2}\n  mps:\n    resources:\n    - {name: gpu, replicas: 2}\n", "use one sharing strategy"},
		"mps mig":              {"sharing:\n  mps:\n    resources:\n    - {name: mig-1g.10gb, replicas: 2}\n", "MPS sharing of MIG devices"},
		"mps devices":          {"sharing:\n  mps:\n    resources:\n    - {name: gpu, replicas: 2, devices: [0]}\n", "MPS shares all devices"},
		"bad devices":          {"sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 2, devices: some}\n", `only string allowed is "all"`},
		"bad device ref":       {"sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 2, devices: [GPU-1]}\n", "want a GPU index"},
		"other resource":       {"sharing:\n  timeSlicing:\n    resources:\n    - {name: example.com/foo, replicas: 2}\n", "can be shared"},
		"twice":                {"sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 2}\n    - {name: nvidia.com/gpu, replicas: 3}\n", "listed twice"},
		"bad rename":           {"sharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, rename: 'a b', replicas: 2}\n", "not a valid resource name"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := dpconfig.Parse("cm[x]", []byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "cm[x]") {
				t.Errorf("error %v, want one naming cm[x] and containing %q", err, tc.want)
			}
		})
	}
}

func TestSelect(t *testing.T) {
	data := map[string]string{"default": "version: v1\n", "a100-ts": "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - {name: gpu, replicas: 4}\n"}
	for _, tc := range []struct{ label, def, want, err string }{
		{label: "a100-ts", def: "default", want: "a100-ts"},
		{def: "default", want: "default"},
		{label: "missing", def: "default", err: `node label nvidia.com/device-plugin.config names config "missing"`},
		{def: "nope", err: `default config names config "nope"`},
		{err: "no config selected"},
	} {
		got, err := dpconfig.Select(data, tc.label, tc.def)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Select(%q, %q) = %q, %v; want %q, %q", tc.label, tc.def, got, err, tc.want, tc.err)
		}
	}
	if got, err := dpconfig.Select(map[string]string{"only": ""}, "", ""); got != "only" || err != nil {
		t.Errorf("one config: %q, %v", got, err)
	}
	name, c, err := dpconfig.SelectAndParse("cm", data, "a100-ts", "default")
	if err != nil || name != "a100-ts" || c.Sharing.TimeSlicing.Resources[0].Replicas != 4 {
		t.Errorf("SelectAndParse: %q %+v %v", name, c, err)
	}
}

func TestDevicePluginConfig(t *testing.T) {
	base := deviceplugin.Config{Replicas: 3, RenameResource: "nvidia.com/gpu.x"}
	out, ignored, err := dpconfig.DevicePluginConfig(base, parseFile(t, "flags.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if out.DeviceListStrategies[0] != "envvar" || out.DeviceIDStrategy != "uuid" || out.MIGStrategy != "none" || out.Replicas != 3 {
		t.Errorf("flags.yaml: %+v", out)
	}
	if strings.Join(ignored, ",") == "" {
		t.Error("flags.yaml: failOnInitError, nvidiaDriverRoot and gfd not reported as ignored")
	}
	out, _, err = dpconfig.DevicePluginConfig(base, parseFile(t, "mig-mixed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Replicas != 1 || out.RenameResource != "" || out.MIGStrategy != "mixed" || out.Sharing.Strategy != "time-slicing" || len(out.Sharing.Resources) != 3 ||
		out.Sharing.Resources[2] != (deviceplugin.ReplicatedResource{Name: "nvidia.com/mig-2g.10gb", Rename: "nvidia.com/mig-2g.10gb.ts", Replicas: 4}) {
		t.Errorf("mig-mixed.yaml: %+v", out)
	}
	out, _, err = dpconfig.DevicePluginConfig(deviceplugin.Config{}, parseFile(t, "mps.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if out.Sharing.Strategy != "mps" || !out.Sharing.FailRequestsGreaterThanOne || out.Sharing.Resources[0].Replicas != 10 {
		t.Errorf("mps.yaml: %+v", out.Sharing)
	}
	if _, _, err := dpconfig.DevicePluginConfig(deviceplugin.Config{}, parseFile(t, "devices.yaml")); err == nil || !strings.Contains(err.Error(), "shares all devices") {
		t.Errorf("devices.yaml: %v", err)
	}
}

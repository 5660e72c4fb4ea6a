package node

import (
	"flag"
	"strings"
	"testing"

	"github.com/gpudra/gpudra/pkg/flagenv"
)

// The flag group is the same everywhere: the names and variables the chart
// and the README use, by group.
func TestAddFlagsByGroup(t *testing.T) {
	want := map[FlagGroup]map[string]string{
		Locate: {"nvml": "NVML_BACKEND", "driver-root": "NVIDIA_DRIVER_ROOT", "host-driver-root": "HOST_DRIVER_ROOT",
			"dev-root": "NVIDIA_DEV_ROOT", "mock-host-root": "MOCK_HOST_ROOT", "sysfs-root": "SYSFS_ROOT"},
		CDI:         {"cdi-root": "CDI_ROOT", "nvidia-cdi-hook-path": "NVIDIA_CDI_HOOK_PATH"},
		HookInstall: {"install-cdi-hook-from": "INSTALL_CDI_HOOK_FROM"},
	}
	for _, groups := range []FlagGroup{Locate, Locate | CDI, Locate | CDI | HookInstall} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		var f Flags
		f.AddFlags(flagenv.New(fs), groups)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		expected := 0
		for g, flags := range want {
			for name, env := range flags {
				fl := fs.Lookup(name)
				if groups&g == 0 {
					if fl != nil {
						t.Errorf("groups %b define --%s", groups, name)
					}
					continue
				}
				expected++
				if fl == nil || !strings.Contains(fl.Usage, "$"+env) {
					t.Errorf("groups %b: --%s missing or without $%s: %+v", groups, name, env, fl)
				}
			}
		}
		if n != expected {
			t.Errorf("groups %b define %d flags, want %d", groups, n, expected)
		}
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("NVML_BACKEND", "mock:dgxh200")
	t.Setenv("MOCK_HOST_ROOT", "/var/lib/gpudra/mock")
	t.Setenv("SYSFS_ROOT", "/host-sys")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var f Flags
	set := flagenv.New(fs)
	f.AddFlags(set, Locate|CDI)
	if err := set.Parse([]string{"--cdi-root=/etc/cdi"}); err != nil {
		t.Fatal(err)
	}
	want := Flags{NVML: "mock:dgxh200", DriverRoot: "/", MockHostRoot: "/var/lib/gpudra/mock", SysfsRoot: "/host-sys", CDIRoot: "/etc/cdi", HookPath: "/usr/bin/nvidia-cdi-hook"}
	if f != want {
		t.Errorf("flags = %+v, want %+v", f, want)
	}
}

package doctor

import (
	"fmt"
	"os"
	"testing"

	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
)

func TestDriverChecks(t *testing.T) {
	runHostCases(t, []hostCase{
		{
			name:   "healthy driver",
			check:  "nvml",
			status: Pass,
			detail: "8 GPUs",
		},
		{
			name:   "unknown NVML backend",
			setup:  func(h *fakeHost, cfg *Config) { cfg.NVMLBackend = "mock:nosuchmachine" },
			check:  "nvml",
			status: Fail,
			detail: "nosuchmachine",
			fix:    "mock:",
			failed: true,
		},
		{
			name:   "libraries of the running driver",
			check:  "driver/libraries",
			status: Pass,
			detail: "libraries of driver",
		},
		{
			name: "zero-byte driver library",
			setup: func(h *fakeHost, cfg *Config) {
				if err := os.Truncate(h.path(h.lib("libcuda")), 0); err != nil {
					t.Fatal(err)
				}
			},
			check:  "driver/libraries",
			status: Fail,
			detail: "zero-byte driver libraries",
			fix:    "reinstall the NVIDIA driver",
			failed: true,
		},
		{
			name:   "user-space libraries of another version",
			setup:  func(h *fakeHost, cfg *Config) { mustRemove(t, h.path(h.lib("libcuda"))) },
			check:  "driver/libraries",
			status: Fail,
			detail: "lacks libraries of the running driver",
			fix:    "finish the driver upgrade",
			failed: true,
		},
		{
			name:   "driver root without NVML",
			setup:  func(h *fakeHost, cfg *Config) { cfg.DriverRoot = t.TempDir() },
			check:  "driver/libraries",
			status: Fail,
			detail: "has no libnvidia-ml.so.1",
			fix:    "--driver-root",
			failed: true,
		},
		{
			name:   "device nodes present",
			check:  "driver/device-nodes",
			status: Pass,
			detail: "10 device nodes present under /dev",
		},
		{
			name:   "missing GPU device node",
			setup:  func(h *fakeHost, cfg *Config) { mustRemove(t, h.path("/dev/nvidia3")) },
			check:  "driver/device-nodes",
			status: Fail,
			detail: "missing: /dev/nvidia3",
			fix:    "nvidia-modprobe",
			failed: true,
		},
		{
			name: "device node that is a plain file",
			setup: func(h *fakeHost, cfg *Config) {
				mustRemove(t, h.path("/dev/nvidiactl"))
				h.write("/dev/nvidiactl", "")
			},
			check:  "driver/device-nodes",
			status: Fail,
			detail: "not character devices: /dev/nvidiactl",
			fix:    "remove these files",
			failed: true,
		},
	})
}

// TestDeviceNodesUnderTheDriverRoot: without --dev-root, a driver root that
// holds dev/nvidiactl (a driver container's root, the e2e suite's fake
// driver root) is where the device nodes are, as for the CDI edits that
// name them; the host's /dev is not looked at.
func TestDeviceNodesUnderTheDriverRoot(t *testing.T) {
	h := newFakeHost(t)
	cfg := h.config()
	cfg.DriverRoot = t.TempDir()
	mockmachinetest.Host(t, cfg.DriverRoot, h.inv)
	mustRemove(t, h.path("/dev/nvidia3"))
	r := h.run(cfg)
	expect(t, r, "driver/device-nodes", Pass, "10 device nodes present under "+cfg.DriverRoot+"/dev", "")

	mustRemove(t, cfg.DriverRoot+"/dev/nvidia5")
	r = h.run(cfg)
	expect(t, r, "driver/device-nodes", Fail, "missing: "+cfg.DriverRoot+"/dev/nvidia5", "nvidia-modprobe")
}

// TestMockHostNotCreatedYetOnlyWarns covers the chart's init container on
// a node's first start in mock mode: the plugin has not laid out the mock
// driver yet, which must not fail the pod.
func TestMockHostNotCreatedYetOnlyWarns(t *testing.T) {
	h := emptyHost(t)
	h.mkdir("/etc/cdi")
	h.write("/etc/containerd/config.toml", "version = 3\n")
	cfg := h.config()
	cfg.DriverRoot = "/nonexistent"
	cfg.MockHostRoot = "/var/lib/gpudra/mock"
	cfg.PreStart = true
	r := h.run(cfg)
	expect(t, r, "driver/libraries", Warn, "/var/lib/gpudra/mock", "the plugin lays out")
	expect(t, r, "driver/device-nodes", Warn, "/var/lib/gpudra/mock/dev/nvidiactl", "the plugin lays out")
	expect(t, r, "cdi/dir /var/run/cdi", Warn, "does not exist", "the plugin creates")
	if r.Failed() {
		t.Errorf("mock host not laid out yet must not fail:\n%s", dump(r))
	}

	// Once the plugin laid it out, the same checks pass.
	mockmachinetest.Host(t, h.path(cfg.MockHostRoot), h.inv)
	r = h.run(cfg)
	expect(t, r, "driver/libraries", Pass, fmt.Sprintf("of driver %s", h.inv.DriverVersion), "")
	expect(t, r, "driver/device-nodes", Pass, "/var/lib/gpudra/mock/dev", "")
}

func mustRemove(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

package doctor

import (
	"strings"
	"testing"

	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// TestNVMLNamesUnusableGPUs: a GPU that NVML cannot use (the mock faults
// file in the driver root) is named with its error, and the fix is a reset
// or a drain, never a driver install: WARN while other GPUs are usable,
// FAIL when none is.
func TestNVMLNamesUnusableGPUs(t *testing.T) {
	faults := func(lines string) func(h *fakeHost, cfg *Config) {
		return func(h *fakeHost, cfg *Config) { h.write("/"+mockmachine.FaultsFile, lines) }
	}
	runHostCases(t, []hostCase{
		{
			name:   "one GPU lost",
			setup:  faults("5 memory GPU_IS_LOST\n"),
			check:  "nvml",
			status: Warn,
			detail: "7 GPUs usable; 1 unusable: GPU 5 (GPU-",
			fix:    "reset the GPU with `nvidia-smi -r -i 5`",
		},
		{
			name:   "two GPUs broken",
			setup:  faults("2 all UNKNOWN\n5 memory\n"),
			check:  "nvml",
			status: Warn,
			detail: "6 GPUs usable; 2 unusable: GPU 2: reading UUID: ERROR_UNKNOWN; GPU 5 (",
			fix:    "reset the GPUs with `nvidia-smi -r -i 2`, `nvidia-smi -r -i 5`",
		},
		{
			name:   "every GPU lost",
			setup:  faults("0 all\n1 all\n2 all\n3 all\n4 all\n5 all\n6 all\n7 all\n"),
			check:  "nvml",
			status: Fail,
			detail: "0 GPUs usable; 8 unusable",
			fix:    "or drain the node",
			failed: true,
		},
		{
			// Before the plugin starts: it must run to taint them.
			name: "every GPU lost, pre-start",
			setup: func(h *fakeHost, cfg *Config) {
				faults("0 all\n1 all\n2 all\n3 all\n4 all\n5 all\n6 all\n7 all\n")(h, cfg)
				cfg.PreStart = true
			},
			check:  "nvml",
			status: Warn,
			detail: "0 GPUs usable; 8 unusable",
			fix:    "or drain the node",
		},
	})
	h := newFakeHost(t)
	faults("5 memory\n")(h, nil)
	r := h.run(h.config())
	for _, res := range r.Results {
		if res.Check == "nvml" && strings.Contains(res.Fix, "install") {
			t.Errorf("the fix of a lost GPU is a driver install: %q", res.Fix)
		}
	}
}

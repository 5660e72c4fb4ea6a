package mps

import (
	"slices"
	"strings"
	"testing"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

// mpsConfig.multiUser starts the daemon with -M (the mock daemon with
// --multiuser), and changes its hash only when set.
func TestMultiUserDaemon(t *testing.T) {
	inv := machine(t)
	g0, g1 := inv.Devices[0], inv.Devices[1]
	multi := &configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(30), MultiUser: true}
	cfg, err := resolve(claimOf(gpuDevice(g0, mpsSharing(multi)), gpuDevice(g1, mpsSharing(multi.DeepCopy()))))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.MultiUser {
		t.Fatalf("resolved %+v: MultiUser not set", cfg)
	}
	single, err := resolve(claimOf(gpuDevice(g0, mpsSharing(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(30)})),
		gpuDevice(g1, mpsSharing(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(30)}))))
	if err != nil {
		t.Fatal(err)
	}
	if single.MultiUser || single.hash() == cfg.hash() {
		t.Errorf("single-user daemon: MultiUser %v, hash %s (multi-user %s)", single.MultiUser, single.hash(), cfg.hash())
	}
	// The hash of a single-user daemon is the one it had before the field
	// existed: a running daemon is kept across the upgrade.
	old := &daemonConfig{UUIDs: single.UUIDs, ActiveThreadPercentage: single.ActiveThreadPercentage}
	if single.hash() != old.hash() {
		t.Errorf("single-user hash %s changed from %s", single.hash(), old.hash())
	}

	script := controlScript(cfg)
	if !strings.Contains(script, "nvidia-cuda-mps-control -f -M &") {
		t.Errorf("script does not start a multi-user daemon:\n%s", script)
	}
	if s := controlScript(single); !strings.Contains(s, "nvidia-cuda-mps-control -f &") || strings.Contains(s, " -M") {
		t.Errorf("single-user script:\n%s", s)
	}
	if got := mockCommand(cfg); !slices.Contains(got, "--multiuser") {
		t.Errorf("mock command %q lacks --multiuser", got)
	}
	if got := mockCommand(single); slices.Contains(got, "--multiuser") {
		t.Errorf("single-user mock command %q", got)
	}

	// One claim, one daemon: devices that disagree on multiUser are refused.
	_, err = resolve(claimOf(gpuDevice(g0, mpsSharing(multi)), gpuDevice(g1, mpsSharing(&configapi.MpsConfig{DefaultActiveThreadPercentage: ptr(30)}))))
	if err == nil || !strings.Contains(err.Error(), "different sharing.mpsConfig") {
		t.Errorf("mixed multiUser: %v", err)
	}
}

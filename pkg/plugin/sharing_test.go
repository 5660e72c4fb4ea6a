package plugin

import (
	"testing"

	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/sharing"
)

func TestNewSharingPicksTheTimeSlicer(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	claims := func() []sharing.Claim { return nil }
	open := func(f node.Flags) *node.Node {
		n, err := node.Open(ctx, f, node.Options{Mode: node.HostTool})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		return n
	}
	cfg := Config{DriverName: "gpu.nvidia.com", Kubelet: KubeletConfig{PluginsDir: t.TempDir()}}
	mock := newSharing(ctx, cfg, open(node.Flags{NVML: "mock:dgxh100", MockHostRoot: t.TempDir()}), claims, nil, nil).(sharing.Composite)
	if mock.TimeSlicing == nil || mock.MPS != nil {
		t.Errorf("mock backend: %+v, want time-slicing and no MPS", mock)
	}
	// A real node whose driver root has no nvidia-smi: time-slicing is off.
	real := &node.Node{Backend: mustBackend(t, "real"), Roots: node.Roots{DriverRoot: t.TempDir()}}
	if c := newSharing(ctx, cfg, real, claims, nil, nil).(sharing.Composite); c.TimeSlicing != nil {
		t.Errorf("time-slicing on without nvidia-smi")
	}
}

func mustBackend(t *testing.T, value string) node.Backend {
	t.Helper()
	b, err := node.ParseBackend(value, "")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

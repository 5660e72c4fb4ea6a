package mocknvmltest

import (
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// checkTopology compares the topology queries of GPU i through the library
// (h) with the Go mock's (g): the fabric through the unversioned call and
// both versions of nvmlDeviceGetGpuFabricInfoV, the module ID, the
// addressing mode. (Discovery's view of them is in the inventory that
// TestInventoryMatchesGoMock compares.)
func checkTopology(t *testing.T, i int, h, g nvml.Device) {
	t.Helper()
	//nolint:staticcheck // the unversioned query is the one the Go mocks implement
	want, wantRet := g.GetGpuFabricInfo()
	//nolint:staticcheck // as above
	got, r := h.GetGpuFabricInfo()
	if r != wantRet || got != want {
		t.Errorf("GPU %d: fabric %+v (%v), Go mock %+v (%v)", i, got, r, want, wantRet)
	}
	v2, r2 := h.GetGpuFabricInfoV().V2()
	v3, r3 := h.GetGpuFabricInfoV().V3()
	if r2 != wantRet || r3 != wantRet {
		t.Errorf("GPU %d: fabric V2 %v, V3 %v, want %v", i, r2, r3, wantRet)
	}
	if wantRet == nvml.SUCCESS {
		if v2.ClusterUuid != want.ClusterUuid || v2.CliqueId != want.CliqueId || v2.State != want.State || v2.Status != want.Status {
			t.Errorf("GPU %d: fabric V2 %+v, want %+v", i, v2, want)
		}
		if v3.ClusterUuid != want.ClusterUuid || v3.CliqueId != want.CliqueId || v3.State != want.State || v3.Status != want.Status {
			t.Errorf("GPU %d: fabric V3 %+v, want %+v", i, v3, want)
		}
		if healthy := want.State == nvml.GPU_FABRIC_STATE_COMPLETED; healthy != (v3.HealthSummary == nvml.GPU_FABRIC_HEALTH_SUMMARY_HEALTHY) {
			t.Errorf("GPU %d: fabric health summary %d", i, v3.HealthSummary)
		}
	}
	m1, r1 := h.GetModuleId()
	m2, rg := g.GetModuleId()
	if m1 != m2 || r1 != rg {
		t.Errorf("GPU %d: module ID %d (%v), Go mock %d (%v)", i, m1, r1, m2, rg)
	}
	a1, r1 := h.GetAddressingMode()
	a2, rg := g.GetAddressingMode()
	if a1.Value != a2.Value || r1 != rg {
		t.Errorf("GPU %d: addressing mode %+v (%v), Go mock %+v (%v)", i, a1, r1, a2, rg)
	}
}

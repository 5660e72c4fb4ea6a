package mockmachine

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// MIGSuffix turns a mock machine into its MIG variant: "dgxa100-mig"
// is a dgxa100 whose first two GPUs are in MIG mode with MIG devices
// already created (see MIGLayout).
const MIGSuffix = "-mig"

// MIGOnSuffix turns a mock machine into its MIG-mode variant:
// "dgxh100-migon" is a dgxh100 whose GPUs are all in MIG mode without any
// GPU instance, ready for instances created on demand.
const MIGOnSuffix = "-migon"

// MIGLayout is the GPU instance slice counts created on the GPUs of a
// MIG mock machine, by GPU index: GPU 0 is split into two 1-slice, a
// 2-slice and a 3-slice instance (GPU instance IDs 1 to 4, created in that
// order at the first free placement: memory slices 0, 1, 2-3 and 4-7),
// GPU 1 holds one 7-slice instance (ID 1). Each GPU instance holds one
// compute instance (ID 0) that spans it. They are created through the
// same NVML calls as any other instance.
var MIGLayout = map[int][]uint32{
	0: {1, 1, 2, 3},
	1: {7},
}

// variant is what a machine name's suffix asks for.
type variant int

const (
	plainVariant variant = iota // MIG mode disabled everywhere
	migVariant                  // MIGLayout
	migOnVariant                // every GPU in MIG mode, no instances
)

// MIGNames lists the MIG variants (MIGSuffix) of Names accepted by New.
func MIGNames() []string { return suffixed(MIGSuffix) }

// MIGOnNames lists the MIG-mode variants (MIGOnSuffix) of Names accepted
// by New.
func MIGOnNames() []string { return suffixed(MIGOnSuffix) }

func suffixed(suffix string) []string {
	var out []string
	for _, m := range Names() {
		out = append(out, m+suffix)
	}
	return out
}

// splitVariant returns the base machine of name and its variant.
func splitVariant(name string) (string, variant) {
	if base, ok := strings.CutSuffix(name, MIGOnSuffix); ok {
		return base, migOnVariant
	}
	if base, ok := strings.CutSuffix(name, MIGSuffix); ok {
		return base, migVariant
	}
	return name, plainVariant
}

// applyVariant puts the machine in the initial MIG state of v: MIG mode is
// enabled directly (as if the GPUs had been reset after SetMigMode), the
// instances of MIGLayout are created through the devices' NVML calls.
func (m *migMachine) applyVariant(v variant) error {
	switch v {
	case migOnVariant:
		for _, g := range m.gpus {
			g.current, g.pending = nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE
		}
	case migVariant:
		for idx, slices := range MIGLayout {
			if idx >= len(m.gpus) {
				continue
			}
			g := m.gpus[idx]
			g.current, g.pending = nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE
			for _, n := range slices {
				if err := createSpanningInstance(g, n); err != nil {
					return fmt.Errorf("mock machine %q: GPU %d: %w", m.machine, idx, err)
				}
			}
		}
	}
	return nil
}

// createSpanningInstance creates, with NVML calls, a GPU instance of the
// plain profile with n slices at its first free placement and a compute
// instance spanning it.
func createSpanningInstance(g *migGPU, n uint32) error {
	giProfile, ok := profileWithSlices(g.profiles, n)
	if !ok {
		return fmt.Errorf("no MIG profile with %d slices", n)
	}
	giH, ret := g.dev.CreateGpuInstance(&giProfile)
	if ret != nvml.SUCCESS {
		return fmt.Errorf("creating a %d-slice GPU instance: %s", n, nvml.ErrorString(ret))
	}
	for id := 0; id < nvml.COMPUTE_INSTANCE_PROFILE_COUNT; id++ {
		p, ret := giH.GetComputeInstanceProfileInfo(id, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
		if ret == nvml.SUCCESS && p.SliceCount == n {
			if _, ret := giH.CreateComputeInstance(&p); ret != nvml.SUCCESS {
				return fmt.Errorf("creating a %d-slice compute instance: %s", n, nvml.ErrorString(ret))
			}
			return nil
		}
	}
	return fmt.Errorf("no compute instance profile with %d slices", n)
}

// profileWithSlices returns the plain GPU instance profile (no media
// extension or double memory variant) with n slices.
func profileWithSlices(profiles map[int]nvml.GpuInstanceProfileInfo, n uint32) (nvml.GpuInstanceProfileInfo, bool) {
	for _, id := range []int{nvml.GPU_INSTANCE_PROFILE_1_SLICE, nvml.GPU_INSTANCE_PROFILE_2_SLICE, nvml.GPU_INSTANCE_PROFILE_3_SLICE,
		nvml.GPU_INSTANCE_PROFILE_4_SLICE, nvml.GPU_INSTANCE_PROFILE_7_SLICE} {
		if p, ok := profiles[id]; ok && p.SliceCount == n {
			return p, true
		}
	}
	return nvml.GpuInstanceProfileInfo{}, false
}

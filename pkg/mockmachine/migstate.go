package mockmachine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/durable"
)

// MIGStateFile is where the mock NVML backend of a plugin keeps the MIG
// state of its mock machine (see WithMIGState), relative to the mock host
// root; without a mock host root the state is not kept.
const MIGStateFile = "mig-state.json"

// MIGStatePath is the MIG state file under the mock host root.
func MIGStatePath(mockHostRoot string) string {
	return filepath.Join(mockHostRoot, MIGStateFile)
}

// Option configures New.
type Option func(*options)

type options struct {
	migState string
}

// WithMIGState makes the MIG state of the machine (every GPU's current and
// pending MIG mode, creation counter, GPU instances and compute instances
// with their profiles, placements, IDs and MIG UUIDs) survive a restart in
// the JSON file at path:
//
//   - New loads the state from path when the file exists and was written
//     for the same machine name and seed (the MIG layout of a "-mig" or
//     "-migon" variant is then not applied); a file of another machine or
//     seed is ignored (and replaced at the first mutation); a file that
//     cannot be read or does not fit the machine makes New fail;
//   - every successful mutation (SetMigMode that changes a mode, creating
//     or destroying a GPU or compute instance) replaces the file with one
//     durable.WriteFile before the call returns: one atomic, durable write
//     per mutation, in the order of the mutations. A mutation whose write
//     fails is undone and fails with ERROR_UNKNOWN. New itself never writes.
//
// The directory of path is created when needed.
func WithMIGState(path string) Option {
	return func(o *options) { o.migState = path }
}

// migStateFile is the JSON form of a migMachine.
type migStateFile struct {
	Machine string        `json:"machine"`
	Seed    string        `json:"seed"`
	GPUs    []migGPUState `json:"gpus"`
}

type migGPUState struct {
	Index          int          `json:"index"`
	MIGMode        int          `json:"migMode"`
	PendingMIGMode int          `json:"pendingMigMode"`
	Creations      uint64       `json:"creations"`
	GPUInstances   []migGIState `json:"gpuInstances,omitempty"`
}

type migGIState struct {
	ID               uint32       `json:"id"`
	ProfileID        uint32       `json:"profileId"`
	Start            uint32       `json:"start"`
	Size             uint32       `json:"size"`
	ComputeInstances []migCIState `json:"computeInstances,omitempty"`
}

type migCIState struct {
	ID        uint32 `json:"id"`
	ProfileID uint32 `json:"profileId"`
	Start     uint32 `json:"start"`
	Size      uint32 `json:"size"`
	UUID      string `json:"uuid"`
}

// snapshot returns the JSON form of the state; m.mu must be held.
func (m *migMachine) snapshot() migStateFile {
	st := migStateFile{Machine: m.machine, Seed: m.seed}
	for _, g := range m.gpus {
		gs := migGPUState{Index: g.index, MIGMode: g.current, PendingMIGMode: g.pending, Creations: g.creations}
		for _, gi := range g.sortedGIs() {
			s := migGIState{ID: gi.info.Id, ProfileID: gi.profile.Id, Start: gi.info.Placement.Start, Size: gi.info.Placement.Size}
			for _, ci := range gi.sortedCIs() {
				s.ComputeInstances = append(s.ComputeInstances, migCIState{ID: ci.info.Id, ProfileID: ci.profile.Id,
					Start: ci.info.Placement.Start, Size: ci.info.Placement.Size, UUID: ci.uuid})
			}
			gs.GPUInstances = append(gs.GPUInstances, s)
		}
		st.GPUs = append(st.GPUs, gs)
	}
	return st
}

// save writes the state to m.statePath, if set; m.mu must be held.
func (m *migMachine) save() error {
	if m.statePath == "" {
		return nil
	}
	data, err := json.MarshalIndent(m.snapshot(), "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.statePath), 0o755); err != nil {
		return err
	}
	if err := durable.WriteFile(m.statePath, append(data, '\n'), 0o644); err != nil {
		klog.Background().Error(err, "Mock MIG state not saved: the NVML call fails", "path", m.statePath)
		return err
	}
	return nil
}

// load replaces the state with that of the file at path. It returns false
// when there is no such file or it belongs to another machine or seed.
// Called by New before anyone else uses m.
func (m *migMachine) load(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mock MIG state: %w", err)
	}
	var st migStateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return false, fmt.Errorf("mock MIG state %s: %w", path, err)
	}
	if st.Machine != m.machine || st.Seed != m.seed {
		klog.Background().Info("Ignoring the mock MIG state of another machine", "path", path,
			"stateMachine", st.Machine, "stateSeed", st.Seed, "machine", m.machine, "seed", m.seed)
		return false, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.apply(st); err != nil {
		return false, fmt.Errorf("mock MIG state %s: %w", path, err)
	}
	return true, nil
}

func (m *migMachine) apply(st migStateFile) error {
	if len(st.GPUs) != len(m.gpus) {
		return fmt.Errorf("%d GPUs, the machine has %d", len(st.GPUs), len(m.gpus))
	}
	for i, gs := range st.GPUs {
		if gs.Index != i {
			return fmt.Errorf("GPU %d listed as index %d", i, gs.Index)
		}
		g := m.gpus[i]
		for _, mode := range []int{gs.MIGMode, gs.PendingMIGMode} {
			if mode != nvml.DEVICE_MIG_ENABLE && mode != nvml.DEVICE_MIG_DISABLE {
				return fmt.Errorf("GPU %d: MIG mode %d", i, mode)
			}
		}
		if len(gs.GPUInstances) > 0 && gs.MIGMode != nvml.DEVICE_MIG_ENABLE {
			return fmt.Errorf("GPU %d: GPU instances without MIG mode", i)
		}
		g.current, g.pending, g.creations = gs.MIGMode, gs.PendingMIGMode, gs.Creations
		for _, s := range gs.GPUInstances {
			p, ret := g.profile(&nvml.GpuInstanceProfileInfo{Id: s.ProfileID})
			if ret != nvml.SUCCESS || s.ID == 0 {
				return fmt.Errorf("GPU %d: GPU instance %d: no profile %d", i, s.ID, s.ProfileID)
			}
			gi, ret := g.addGI(p, nvml.GpuInstancePlacement{Start: s.Start, Size: s.Size}, s.ID)
			if ret != nvml.SUCCESS {
				return fmt.Errorf("GPU %d: GPU instance %d (profile %d at %d:%d): %s", i, s.ID, s.ProfileID, s.Start, s.Size, nvml.ErrorString(ret))
			}
			for _, c := range s.ComputeInstances {
				cp, ret := gi.ciProfile(&nvml.ComputeInstanceProfileInfo{Id: c.ProfileID})
				if ret == nvml.SUCCESS {
					_, ret = gi.addCI(cp, nvml.ComputeInstancePlacement{Start: c.Start, Size: c.Size}, c.ID, c.UUID)
				}
				if ret != nvml.SUCCESS || c.UUID == "" {
					return fmt.Errorf("GPU %d: GPU instance %d: compute instance %d (profile %d at %d:%d, UUID %q): %s",
						i, s.ID, c.ID, c.ProfileID, c.Start, c.Size, c.UUID, nvml.ErrorString(ret))
				}
			}
		}
	}
	return nil
}

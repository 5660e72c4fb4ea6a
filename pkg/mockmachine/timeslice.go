package mockmachine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/sharing/timeslicing"
)

// TimeSliceFileName is the name of the mock time-slice state file under a mock
// host root.
const TimeSliceFileName = "timeslice.json"

// TimeSliceFilePath returns where a plugin with the given mock host root keeps
// its mock time slices: <root>/var/lib/gpudra-mock/timeslice.json.
func TimeSliceFilePath(mockHostRoot string) string {
	return filepath.Join(mockHostRoot, "var/lib/gpudra-mock", TimeSliceFileName)
}

// TimeSliceFile is the TimeSlicer of mock backends: it records the interval of
// each GPU in a JSON file ({"GPU-...": "Long"}), so that tests and the
// end-to-end suite can check what a real node would have set. A GPU that
// is not in the file has the Default interval; setting Default removes it.
// Writes are atomic and durable (pkg/durable). Safe for concurrent use
// within one process.
type TimeSliceFile struct {
	path string
	mu   sync.Mutex
}

var _ timeslicing.TimeSlicer = (*TimeSliceFile)(nil)

// NewTimeSliceFile returns a TimeSliceFile that keeps its state at path; the file
// and its directory are created on the first change.
func NewTimeSliceFile(path string) *TimeSliceFile {
	return &TimeSliceFile{path: path}
}

// Path returns the state file's path.
func (f *TimeSliceFile) Path() string { return f.path }

// SetTimeSlice records interval for the GPU.
func (f *TimeSliceFile) SetTimeSlice(_ context.Context, gpuUUID string, interval configapi.TimeSliceInterval) error {
	if _, err := timeslicing.IntervalValue(interval); err != nil {
		return err
	}
	if interval == "" {
		interval = configapi.DefaultTimeSlice
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	state, err := f.read()
	if err != nil {
		return err
	}
	if interval == configapi.DefaultTimeSlice {
		if _, ok := state[gpuUUID]; !ok {
			return nil
		}
		delete(state, gpuUUID)
	} else {
		if state[gpuUUID] == interval {
			return nil
		}
		state[gpuUUID] = interval
	}
	data, err := json.MarshalIndent(state, "", "  ")
	if err != nil {
		return fmt.Errorf("mock time slice of GPU %s: %w", gpuUUID, err)
	}
	if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
		return fmt.Errorf("mock time slice of GPU %s: %w", gpuUUID, err)
	}
	if err := durable.WriteFile(f.path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("mock time slice of GPU %s: %w", gpuUUID, err)
	}
	return nil
}

// Intervals returns the recorded non-default interval of each GPU.
func (f *TimeSliceFile) Intervals() (map[string]configapi.TimeSliceInterval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.read()
}

// Interval returns the GPU's recorded interval, DefaultTimeSlice when none.
func (f *TimeSliceFile) Interval(gpuUUID string) (configapi.TimeSliceInterval, error) {
	state, err := f.Intervals()
	if err != nil {
		return "", err
	}
	if i, ok := state[gpuUUID]; ok {
		return i, nil
	}
	return configapi.DefaultTimeSlice, nil
}

func (f *TimeSliceFile) read() (map[string]configapi.TimeSliceInterval, error) {
	state := map[string]configapi.TimeSliceInterval{}
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return state, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the mock time-slice state: %w", err)
	}
	if err := json.Unmarshal(data, &state); err != nil {
		return nil, fmt.Errorf("mock time-slice state %s is corrupt: %w; delete the file to reset all GPUs to Default", f.path, err)
	}
	return state, nil
}

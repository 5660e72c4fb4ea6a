package timeslicing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/sharing"
)

func gpuDevice(name, uuid, interval string) sharing.Device {
	cfg := configapi.DefaultGpuConfig()
	if interval != "" {
		cfg.Sharing = &configapi.GpuSharing{Strategy: configapi.TimeSlicingStrategy,
			TimeSlicingConfig: &configapi.TimeSlicingConfig{Interval: configapi.TimeSliceInterval(interval)}}
	}
	return sharing.Device{Name: name, Type: devices.KindGPU, UUID: uuid, Config: cfg}
}

func TestIntervalValue(t *testing.T) {
	for in, want := range map[configapi.TimeSliceInterval]int{"": 0, "Default": 0, "Short": 1, "Medium": 2, "Long": 3} {
		if got, err := IntervalValue(in); err != nil || got != want {
			t.Errorf("IntervalValue(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := IntervalValue("Forever"); err == nil || !strings.Contains(err.Error(), `"Default", "Short", "Medium" or "Long"`) {
		t.Errorf("unknown interval error = %v", err)
	}
}

func TestNvidiaSMICommand(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := NewNvidiaSMI(root); err == nil || !strings.Contains(err.Error(), "nvidia-smi not found") {
		t.Fatalf("missing nvidia-smi: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/nvidia-smi"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	n, err := NewNvidiaSMI(root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	n.run = func(_ context.Context, path string, _ []string, args ...string) ([]byte, error) {
		got = append([]string{path}, args...)
		return nil, nil
	}
	if err := n.SetTimeSlice(context.Background(), "GPU-1", configapi.MediumTimeSlice); err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(root, "usr/bin/nvidia-smi"), "compute-policy", "-i", "GPU-1", "--set-timeslice=2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("command = %v, want %v", got, want)
	}
	n.run = func(context.Context, string, []string, ...string) ([]byte, error) {
		return []byte("Insufficient Permissions"), errors.New("exit status 4")
	}
	if err := n.SetTimeSlice(context.Background(), "GPU-1", configapi.LongTimeSlice); err == nil ||
		!strings.Contains(err.Error(), "GPU-1") || !strings.Contains(err.Error(), "Insufficient Permissions") {
		t.Errorf("failure error = %v", err)
	}
}

func TestManagerRestoresFromRecordedClaims(t *testing.T) {
	ctx := context.Background()
	f := newMemSlicer()
	var claims []sharing.Claim // the recorded claims, oldest first
	m := New(Options{Slicer: f, Claims: func() []sharing.Claim { return claims }})
	a := sharing.Claim{UID: "a", Devices: []sharing.Device{gpuDevice("gpu-0", "GPU-0", "Long"), gpuDevice("gpu-1", "GPU-1", "")}}
	b := sharing.Claim{UID: "b", Devices: []sharing.Device{gpuDevice("gpu-0", "GPU-0", "Short")}}
	claims = []sharing.Claim{a}
	if _, err := m.Apply(ctx, a); err != nil {
		t.Fatal(err)
	}
	claims = append(claims, b)
	if _, err := m.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	if i, _ := f.Interval("GPU-0"); i != configapi.ShortTimeSlice {
		t.Errorf("GPU-0 = %s, want Short", i)
	}
	if i, _ := f.Interval("GPU-1"); i != configapi.DefaultTimeSlice {
		t.Errorf("GPU-1 (exclusive in claim a) = %s, want Default", i)
	}
	// Undo of a: b still wants Short.
	if err := m.Undo(ctx, a); err != nil {
		t.Fatal(err)
	}
	if i, _ := f.Interval("GPU-0"); i != configapi.ShortTimeSlice {
		t.Errorf("after undo of a: GPU-0 = %s, want Short", i)
	}
	claims = claims[1:]
	// A new Manager (a restarted plugin) undoes b from the recorded claims
	// alone; b itself is among them until its record is deleted.
	m2 := New(Options{Slicer: f, Claims: func() []sharing.Claim { return claims }})
	if err := m2.Undo(ctx, b); err != nil {
		t.Fatal(err)
	}
	if i, _ := f.Interval("GPU-0"); i != configapi.DefaultTimeSlice {
		t.Errorf("after the last undo: GPU-0 = %s, want Default", i)
	}
}

// Of several other claims on a GPU, the most recently prepared one (the
// last of Options.Claims) gives the interval that Undo restores.
func TestUndoRestoresTheLastPreparedClaimsInterval(t *testing.T) {
	ctx := context.Background()
	f := newMemSlicer()
	older := sharing.Claim{UID: "older", Devices: []sharing.Device{gpuDevice("gpu-0", "GPU-0", "Long")}}
	newer := sharing.Claim{UID: "newer", Devices: []sharing.Device{gpuDevice("gpu-0", "GPU-0", "Medium")}}
	gone := sharing.Claim{UID: "gone", Devices: []sharing.Device{gpuDevice("gpu-0", "GPU-0", "Short")}}
	m := New(Options{Slicer: f, Claims: func() []sharing.Claim { return []sharing.Claim{older, newer, gone} }})
	if _, err := m.Apply(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := m.Undo(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if i, _ := f.Interval("GPU-0"); i != configapi.MediumTimeSlice {
		t.Errorf("after undo: GPU-0 = %s, want Medium (the newer remaining claim's)", i)
	}
}

func TestNewRequiresClaims(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without Options.Claims did not panic")
		}
	}()
	New(Options{Slicer: newMemSlicer()})
}

// memSlicer is a TimeSlicer that keeps the intervals in memory.
type memSlicer struct {
	mu        sync.Mutex
	intervals map[string]configapi.TimeSliceInterval
}

func newMemSlicer() *memSlicer {
	return &memSlicer{intervals: map[string]configapi.TimeSliceInterval{}}
}

func (m *memSlicer) SetTimeSlice(_ context.Context, gpuUUID string, interval configapi.TimeSliceInterval) error {
	if _, err := IntervalValue(interval); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.intervals[gpuUUID] = interval
	return nil
}

// Interval is the GPU's interval; Default when never set.
func (m *memSlicer) Interval(gpuUUID string) (configapi.TimeSliceInterval, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.intervals[gpuUUID]; ok && i != "" {
		return i, nil
	}
	return configapi.DefaultTimeSlice, nil
}

package timeslicing

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/sharing"
)

func gpuDevice(name, uuid, interval string) sharing.Device {
	cfg := configapi.DefaultGpuConfig()
	if interval != "" {
		cfg.Sharing = &configapi.GpuSharing{Strategy: configapi.TimeSlicingStrategy,
			TimeSlicingConfig: &configapi.TimeSlicingConfig{Interval: configapi.TimeSliceInterval(interval)}}
	}
	return sharing.Device{Name: name, Type: sharing.DeviceTypeGPU, UUID: uuid, Config: cfg}
}

func record(uid string, at time.Time, uuid, interval string) *checkpoint.ClaimRecord {
	d := gpuDevice("gpu", uuid, interval)
	raw, _ := json.Marshal(d.Config)
	return &checkpoint.ClaimRecord{ClaimUID: uid, DriverName: "gpu.nvidia.com", PreparedAt: at,
		Devices: []checkpoint.PreparedDevice{{Device: "gpu", UUID: uuid, Config: raw}}}
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

func TestStateFile(t *testing.T) {
	f := NewStateFile(filepath.Join(t.TempDir(), "sub", StateFileName))
	ctx := context.Background()
	if i, err := f.Interval("GPU-1"); err != nil || i != configapi.DefaultTimeSlice {
		t.Fatalf("fresh interval = %s, %v", i, err)
	}
	if err := f.SetTimeSlice(ctx, "GPU-1", configapi.LongTimeSlice); err != nil {
		t.Fatal(err)
	}
	// Another process (the e2e suite) reads the file.
	if i, _ := NewStateFile(f.Path()).Interval("GPU-1"); i != configapi.LongTimeSlice {
		t.Errorf("interval = %s, want Long", i)
	}
	if err := f.SetTimeSlice(ctx, "GPU-1", configapi.DefaultTimeSlice); err != nil {
		t.Fatal(err)
	}
	if all, _ := f.Intervals(); len(all) != 0 {
		t.Errorf("Default is not removed from the state: %v", all)
	}
	if err := f.SetTimeSlice(ctx, "GPU-1", "Bogus"); err == nil {
		t.Error("bogus interval accepted")
	}
}

func TestManagerRestoresFromCheckpoint(t *testing.T) {
	ctx := context.Background()
	f := NewStateFile(filepath.Join(t.TempDir(), StateFileName))
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var records []*checkpoint.ClaimRecord
	m := New(Options{Slicer: f, DriverName: "gpu.nvidia.com", Records: func() ([]*checkpoint.ClaimRecord, []checkpoint.LoadError, error) {
		return records, nil, nil
	}})
	a := sharing.Claim{UID: "a", Devices: []sharing.Device{gpuDevice("gpu-0", "GPU-0", "Long"), gpuDevice("gpu-1", "GPU-1", "")}}
	b := sharing.Claim{UID: "b", Devices: []sharing.Device{gpuDevice("gpu-0", "GPU-0", "Short")}}
	records = []*checkpoint.ClaimRecord{record("a", t0, "GPU-0", "Long")}
	if _, err := m.Apply(ctx, a); err != nil {
		t.Fatal(err)
	}
	records = append(records, record("b", t0.Add(time.Second), "GPU-0", "Short"))
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
	records = records[1:]
	// A new Manager (a restarted plugin) undoes b from the record alone.
	m2 := New(Options{Slicer: f, Records: func() ([]*checkpoint.ClaimRecord, []checkpoint.LoadError, error) { return records, nil, nil }})
	if err := m2.Undo(ctx, b); err != nil {
		t.Fatal(err)
	}
	if i, _ := f.Interval("GPU-0"); i != configapi.DefaultTimeSlice {
		t.Errorf("after the last undo: GPU-0 = %s, want Default", i)
	}
	// Undo needs the checkpoint; when it cannot be read, it fails and says so.
	m3 := New(Options{Slicer: f, Records: func() ([]*checkpoint.ClaimRecord, []checkpoint.LoadError, error) {
		return nil, nil, errors.New("disk on fire")
	}})
	if err := m3.Undo(ctx, b); err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), "uid b") {
		t.Errorf("undo with unreadable checkpoint: %v", err)
	}
}

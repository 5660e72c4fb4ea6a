// Package timeslicing applies sharing.strategy TimeSlicing: it sets the
// CUDA time-slice interval of the GPUs of a claim and restores the default
// when the last claim that set it is unprepared.
//
// Manager implements sharing.Applier. It keeps no count in memory: who else
// still uses a GPU's time slice is read from the claim checkpoint at each
// Undo, so the counts survive a plugin restart. The claim state records a
// claim before it calls Apply and deletes the record only after Undo; a
// claim being undone is told apart by its UID.
//
// The interval itself is set by a TimeSlicer: NvidiaSMI on a real node,
// StateFile for mock backends.
package timeslicing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"

	"k8s.io/klog/v2"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/opaqueconfig"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// TimeSlicer sets the time-slice interval of one GPU.
type TimeSlicer interface {
	// SetTimeSlice sets the interval of the GPU with the given UUID
	// ("GPU-..."). Setting the interval the GPU already has is not an
	// error. The error names the GPU.
	SetTimeSlice(ctx context.Context, gpuUUID string, interval configapi.TimeSliceInterval) error
}

// IntervalValue returns the value of nvidia-smi's --set-timeslice for
// interval: Default 0, Short 1, Medium 2, Long 3. The empty interval is
// Default.
func IntervalValue(interval configapi.TimeSliceInterval) (int, error) {
	switch interval {
	case configapi.DefaultTimeSlice, "":
		return 0, nil
	case configapi.ShortTimeSlice:
		return 1, nil
	case configapi.MediumTimeSlice:
		return 2, nil
	case configapi.LongTimeSlice:
		return 3, nil
	}
	return 0, fmt.Errorf(`sharing.timeSlicingConfig.interval %q is not supported: use "Default", "Short", "Medium" or "Long"`, interval)
}

// RecordLister lists the prepared claims; (*checkpoint.Store).List
// implements it.
type RecordLister func() ([]*checkpoint.ClaimRecord, []checkpoint.LoadError, error)

// Options configure a Manager.
type Options struct {
	// Slicer sets the intervals.
	Slicer TimeSlicer
	// Records lists the node's prepared claims from the checkpoint.
	Records RecordLister
	// DriverName selects the records of this driver; records of other
	// drivers are ignored. Empty: all records.
	DriverName string
}

// Manager is the sharing.Applier of TimeSlicing. Safe for concurrent use:
// Apply and Undo of all claims are serialized, so that the decision "is
// this the last claim on the GPU" and the setting it leads to are atomic.
type Manager struct {
	opts Options
	mu   sync.Mutex
}

var _ sharing.Applier = (*Manager)(nil)

// New returns a Manager.
func New(opts Options) *Manager {
	return &Manager{opts: opts}
}

// Apply sets the interval of every full GPU of the claim whose strategy is
// TimeSlicing. It returns no container edits: time-slicing needs nothing in
// the container. Idempotent: applying again sets the same intervals.
func (m *Manager) Apply(ctx context.Context, c sharing.Claim) (sharing.Edits, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	logger := klog.FromContext(ctx).WithValues("claim", klog.KRef(c.Namespace, c.Name), "claimUID", c.UID)
	for _, d := range timeSlicedGPUs(c) {
		if err := m.set(ctx, c, d.device, d.interval); err != nil {
			return sharing.Edits{}, err
		}
		logger.V(2).Info("Set GPU time slice", "device", d.device.Name, "gpu", d.device.UUID, "interval", d.interval)
	}
	return sharing.Edits{}, nil
}

// Undo gives each time-sliced GPU of the claim the interval that the other
// prepared claims on it want (the most recently prepared one wins), or
// Default when no other claim uses time-slicing on it. Idempotent, and safe
// for a claim whose Apply failed half-way: setting Default on a GPU that
// still has it changes nothing.
func (m *Manager) Undo(ctx context.Context, c sharing.Claim) error {
	gpus := timeSlicedGPUs(c)
	if len(gpus) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	logger := klog.FromContext(ctx).WithValues("claim", klog.KRef(c.Namespace, c.Name), "claimUID", c.UID)
	others, err := m.othersByGPU(ctx, c.UID)
	if err != nil {
		return fmt.Errorf("%s: restoring the GPU time slice: %w", c.Ref(), err)
	}
	var errs []error
	for _, d := range gpus {
		interval := configapi.DefaultTimeSlice
		if o, ok := others[d.device.UUID]; ok {
			interval = o.interval
			logger.V(2).Info("GPU time slice stays in use by another claim", "gpu", d.device.UUID, "otherClaimUID", o.claimUID, "interval", interval)
		}
		if err := m.set(ctx, c, d.device, interval); err != nil {
			errs = append(errs, err)
			continue
		}
		logger.V(2).Info("Restored GPU time slice", "device", d.device.Name, "gpu", d.device.UUID, "interval", interval)
	}
	return errors.Join(errs...)
}

func (m *Manager) set(ctx context.Context, c sharing.Claim, d sharing.Device, interval configapi.TimeSliceInterval) error {
	if _, err := IntervalValue(interval); err != nil {
		return fmt.Errorf("%s: device %s: %w", c.Ref(), d.Name, err)
	}
	if err := m.opts.Slicer.SetTimeSlice(ctx, d.UUID, interval); err != nil {
		return fmt.Errorf("%s: device %s: %w", c.Ref(), d.Name, err)
	}
	return nil
}

type gpuInterval struct {
	device   sharing.Device
	interval configapi.TimeSliceInterval
}

// timeSlicedGPUs returns the full GPUs of c with strategy TimeSlicing, each
// once, in claim order.
func timeSlicedGPUs(c sharing.Claim) []gpuInterval {
	var out []gpuInterval
	seen := map[string]bool{}
	for _, d := range c.Devices {
		cfg, ok := d.Config.(*configapi.GpuConfig)
		if d.Type == sharing.DeviceTypeMIG || !ok || cfg == nil || !cfg.Sharing.IsTimeSlicing() || seen[d.UUID] {
			continue
		}
		seen[d.UUID] = true
		out = append(out, gpuInterval{device: d, interval: cfg.Sharing.TimeSliceInterval()})
	}
	return out
}

type otherClaim struct {
	claimUID string
	interval configapi.TimeSliceInterval
}

// othersByGPU reads the checkpoint and returns, per GPU UUID, the interval
// wanted by the most recently prepared claim other than exceptUID.
func (m *Manager) othersByGPU(ctx context.Context, exceptUID string) (map[string]otherClaim, error) {
	records, loadErrs, err := m.opts.Records()
	if err != nil {
		return nil, fmt.Errorf("reading the claim checkpoint to find other claims on the GPU: %w; "+
			"fix the checkpoint directory, the kubelet retries the unprepare", err)
	}
	for _, le := range loadErrs {
		klog.FromContext(ctx).Error(le, "Skipping unreadable claim record when counting time-slice users")
	}
	sort.SliceStable(records, func(i, j int) bool {
		if !records[i].PreparedAt.Equal(records[j].PreparedAt) {
			return records[i].PreparedAt.Before(records[j].PreparedAt)
		}
		return records[i].ClaimUID < records[j].ClaimUID
	})
	out := map[string]otherClaim{}
	for _, rec := range records {
		if rec.ClaimUID == exceptUID || (m.opts.DriverName != "" && rec.DriverName != "" && rec.DriverName != m.opts.DriverName) {
			continue
		}
		for _, d := range rec.Devices {
			if interval, ok := recordedInterval(d.Config); ok {
				out[d.UUID] = otherClaim{claimUID: rec.ClaimUID, interval: interval}
			}
		}
	}
	return out, nil
}

// recordedInterval decodes a recorded device config and returns its
// time-slice interval when it is a GpuConfig with strategy TimeSlicing.
func recordedInterval(raw json.RawMessage) (configapi.TimeSliceInterval, bool) {
	if len(raw) == 0 {
		return "", false
	}
	obj, err := opaqueconfig.Decode(raw)
	if err != nil {
		return "", false
	}
	cfg, ok := obj.(*configapi.GpuConfig)
	if !ok || !cfg.Sharing.IsTimeSlicing() {
		return "", false
	}
	return cfg.Sharing.TimeSliceInterval(), true
}

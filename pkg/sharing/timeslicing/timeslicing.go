// Package timeslicing applies sharing.strategy TimeSlicing: it sets the
// CUDA time-slice interval of the GPUs of a claim and restores the default
// when the last claim that set it is unprepared.
//
// Manager implements sharing.Applier. It keeps no count of its own: who
// else still uses a GPU's time slice is read at each Undo from the node's
// recorded claims (Options.Claims: the claim state's in-memory view of its
// checkpoint, rebuilt from the checkpoint at start-up), so the counts
// survive a plugin restart. The claim state makes a claim one of those
// before it calls Apply and drops it only after Undo; a claim being undone
// is told apart by its UID.
//
// The interval itself is set by a TimeSlicer: NvidiaSMI on a real node,
// a state file (package mockmachine) for mock backends.
package timeslicing

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"k8s.io/klog/v2"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
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

// Options configure a Manager.
type Options struct {
	// Slicer sets the intervals.
	Slicer TimeSlicer
	// Claims returns the node's recorded claims: every claim whose
	// checkpoint record exists, from the moment it is written (before
	// Apply) until it is deleted (after Undo), so including the claim
	// being undone. They come ordered by prepare time, oldest first (ties
	// in a fixed order): of several claims that time-slice one GPU, the
	// last one wins. Required; (*claimstate.State).SharingClaims
	// implements it. Undo calls it with the Manager's lock held, so it
	// must not call into the Manager.
	Claims func() []sharing.Claim
}

// Manager is the sharing.Applier of TimeSlicing. Safe for concurrent use:
// Apply and Undo of all claims are serialized, so that the decision "is
// this the last claim on the GPU" and the setting it leads to are atomic.
type Manager struct {
	opts Options
	mu   sync.Mutex
}

var _ sharing.Applier = (*Manager)(nil)

// New returns a Manager. It panics when opts.Slicer or opts.Claims is nil.
func New(opts Options) *Manager {
	if opts.Slicer == nil || opts.Claims == nil {
		panic("timeslicing.New: Options.Slicer and Options.Claims are required")
	}
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
	others := m.othersByGPU(c.UID)
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
		interval, ok := timeSlice(d)
		if !ok || seen[d.UUID] {
			continue
		}
		seen[d.UUID] = true
		out = append(out, gpuInterval{device: d, interval: interval})
	}
	return out
}

// timeSlice returns the interval that d wants when it is a full GPU with
// strategy TimeSlicing.
func timeSlice(d sharing.Device) (configapi.TimeSliceInterval, bool) {
	cfg, ok := d.Config.(*configapi.GpuConfig)
	if d.Type == devices.KindMIG || !ok || cfg == nil || !cfg.Sharing.IsTimeSlicing() {
		return "", false
	}
	return cfg.Sharing.TimeSliceInterval(), true
}

type otherClaim struct {
	claimUID string
	interval configapi.TimeSliceInterval
}

// othersByGPU returns, per GPU UUID, the interval wanted by the most
// recently prepared claim other than exceptUID.
func (m *Manager) othersByGPU(exceptUID string) map[string]otherClaim {
	out := map[string]otherClaim{}
	for _, c := range m.opts.Claims() { // oldest first: the last one wins
		if c.UID == exceptUID {
			continue
		}
		for _, d := range c.Devices {
			if interval, ok := timeSlice(d); ok {
				out[d.UUID] = otherClaim{claimUID: c.UID, interval: interval}
			}
		}
	}
	return out
}

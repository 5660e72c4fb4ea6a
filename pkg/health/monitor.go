// Package health watches the node's GPUs through NVML events and keeps the
// health of every GPU: critical XID errors (less the ignore list of
// application-caused XIDs), double-bit ECC errors, and GPUs that fell off
// the bus (XID 79, or NVML's ERROR_GPU_IS_LOST).
//
// A Monitor is the single owner of that state. Consumers (the DRA plugin's
// health stream and ResourceSlice taints, the device plugin's ListAndWatch)
// read it with Current, which returns the latest Snapshot and a channel
// closed on the next change: a consumer that comes late still starts from
// the current state, and a slow consumer never blocks the monitor (it skips
// to the newest state).
//
// The monitor never panics on NVML errors and never blocks anything else:
// ERROR_TIMEOUT from waiting is normal; other errors are retried with
// backoff, and after Options.MaxFailures in a row every GPU without a
// problem of its own becomes Unmonitored (said loudly in the log and
// through Options.OnLoopError) until the event loop works again.
//
// Recovery: a GPU with a critical XID or a double-bit ECC error becomes
// healthy after Options.RecoveryPeriod without new errors (0, the default,
// means never: such a GPU usually needs a reset, after which the plugin is
// restarted and starts from a clean state). A lost GPU becomes healthy when
// NVML sees it again (checked every Options.ProbeInterval), e.g. after a
// reset.
package health

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// EventMask are the NVML events the monitor registers for (less those a GPU
// does not support). Single-bit ECC errors are corrected by the hardware
// and not watched.
const EventMask = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError

// Options tune a Monitor. The zero value is valid.
type Options struct {
	// AdditionalIgnoredXIDs are ignored on top of DefaultIgnoredXIDs, or
	// instead of them with ReplaceIgnoredXIDs.
	AdditionalIgnoredXIDs []uint64
	ReplaceIgnoredXIDs    bool
	// RecoveryPeriod is how long a GPU with a critical XID or double-bit
	// ECC error must stay free of errors to be healthy again; 0 means never.
	RecoveryPeriod time.Duration
	// ProbeInterval is how often lost GPUs are looked up again (default
	// 30 s); a lost GPU recovers no earlier than this after its last error.
	ProbeInterval time.Duration
	// WaitTimeout bounds one wait for events (default 1 s); Run returns at
	// most this long after its context is done.
	WaitTimeout time.Duration
	// MaxFailures is how many NVML event errors in a row make every GPU
	// Unmonitored (default 3).
	MaxFailures int
	// InitialBackoff and MaxBackoff bound the wait before retrying after an
	// error (defaults 250 ms and 30 s; it doubles per failure).
	InitialBackoff, MaxBackoff time.Duration
	// Probe asks NVML whether the GPU with this UUID is there: SUCCESS, or
	// ERROR_GPU_IS_LOST / ERROR_NOT_FOUND when it is gone. Default: look
	// its handle up by UUID and read its PCI info. The node's backend
	// supplies its own (node.Node.HealthOptions).
	Probe func(uuid string) nvml.Return
	// OnLoopError, when set, is called (from the monitor's goroutine) with
	// every NVML event error that is not a timeout: feed a metric with it.
	OnLoopError func(error)
	// Clock is the time the monitor goes by (default: the real clock):
	// recovery periods, probe intervals, the backoff after errors and the
	// Since stamps of problems. Tests give it a fake clock
	// (k8s.io/utils/clock/testing) and step it. The wait for NVML events is
	// NVML's own and always takes up to WaitTimeout of real time, so the
	// monitor looks at its clock at least that often while the event loop
	// works; while it backs off after an error it waits for Clock.
	Clock clock.Clock
}

func (o *Options) setDefaults() {
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 30 * time.Second
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = time.Second
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = 3
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff < o.InitialBackoff {
		o.MaxBackoff = max(30*time.Second, o.InitialBackoff)
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

// device is the monitor's own record of one GPU.
type device struct {
	uuid string
	// problem is the GPU's own problem (never Unmonitored).
	problem         Problem
	reason, message string
	since           time.Time // when problem began
	lastError       time.Time
	// noEvents: the GPU supports none of EventMask.
	noEvents      bool
	noEventsSince time.Time
}

// Monitor keeps the health of a fixed set of GPUs. Create it with New, run
// it with Run, read it with Current.
type Monitor struct {
	lib     nvml.Interface
	opts    Options
	ignored map[uint64]bool
	index   map[string]int // UUID -> position in devs

	mu        sync.Mutex
	devs      []device
	monitored bool
	downSince time.Time
	snap      Snapshot
	changed   chan struct{}
	processed uint64
}

// New returns a monitor of the GPUs named by uuids through lib, which stays
// owned by the caller (the monitor never shuts it down). Every GPU starts
// healthy and monitored. The events come from lib: a mock machine must
// have its injectable events installed (mockmachine.InstallEvents; the
// node's backend does it when it opens NVML).
func New(lib nvml.Interface, uuids []string, opts Options) (*Monitor, error) {
	if opts.RecoveryPeriod < 0 {
		return nil, fmt.Errorf("health recovery period %v is negative: use 0 (never) or a positive duration", opts.RecoveryPeriod)
	}
	opts.setDefaults()
	m := &Monitor{
		lib:       lib,
		ignored:   map[uint64]bool{},
		index:     make(map[string]int, len(uuids)),
		monitored: true,
		changed:   make(chan struct{}),
	}
	for _, x := range IgnoredXIDs(opts.AdditionalIgnoredXIDs, opts.ReplaceIgnoredXIDs) {
		m.ignored[x] = true
	}
	for i, u := range uuids {
		if _, dup := m.index[u]; dup {
			return nil, fmt.Errorf("health monitor: GPU %s is listed twice", u)
		}
		m.index[u] = i
		m.devs = append(m.devs, device{uuid: u})
	}
	if opts.Probe == nil {
		opts.Probe = m.probeNVML
	}
	m.opts = opts
	m.snap = m.snapshotLocked()
	return m, nil
}

// Current returns the latest snapshot and a channel that is closed when a
// newer one exists. The snapshot is the caller's to keep (it is never
// modified afterwards).
func (m *Monitor) Current() (Snapshot, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap, m.changed
}

// Processed counts the NVML events the monitor has taken in, ignored ones
// included; a snapshot read after the count moved reflects the event.
func (m *Monitor) Processed() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.processed
}

// Run watches the GPUs until ctx is done. Call it once, in its own
// goroutine.
func (m *Monitor) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("health")
	ctx = klog.NewContext(ctx, logger)
	if len(m.devs) == 0 {
		logger.Info("No GPUs to monitor")
		return
	}
	logger.Info("GPU health monitoring started", "gpus", len(m.devs), "ignoredXIDs", IgnoredXIDs(m.opts.AdditionalIgnoredXIDs, m.opts.ReplaceIgnoredXIDs),
		"recoveryPeriod", m.opts.RecoveryPeriod)
	var set nvml.EventSet
	defer func() { m.free(set) }()
	failures := 0
	backoff := m.opts.InitialBackoff
	nextProbe := m.opts.Clock.Now().Add(m.opts.ProbeInterval)
	fail := func(err error) {
		failures++
		m.loopFailed(ctx, err, failures, backoff)
		m.free(set)
		set = nil
		m.sleep(ctx, backoff)
		backoff = min(2*backoff, m.opts.MaxBackoff)
	}
	var members []int // the GPUs registered in set
	for ctx.Err() == nil {
		if set == nil {
			s, registered, err := m.establish(ctx)
			if err != nil {
				fail(err)
				continue
			}
			set, members = s, registered
		}
		data, ret := m.wait(ctx, set)
		switch ret {
		case nvml.SUCCESS, nvml.ERROR_TIMEOUT:
			failures, backoff = 0, m.opts.InitialBackoff
			m.loopWorks(ctx)
			if ret == nvml.SUCCESS {
				m.handle(ctx, data)
			}
		case nvml.ERROR_GPU_IS_LOST:
			// NVML says a GPU of the set is lost: one newly found lost, or
			// one registered before an event (XID 79) marked it lost.
			if m.probeAll(ctx) == 0 && !m.anyLost(members) {
				fail(errors.New("waiting for NVML events: a GPU is lost, but every GPU still answers"))
				continue
			}
			// Register again, without the lost GPUs.
			m.free(set)
			set = nil
		default:
			if ctx.Err() != nil {
				return
			}
			fail(fmt.Errorf("waiting for NVML events: %s", nvml.ErrorString(ret)))
			continue
		}
		now := m.opts.Clock.Now()
		m.expire(ctx, now)
		if !now.Before(nextProbe) {
			nextProbe = now.Add(m.opts.ProbeInterval)
			if m.probeLost(ctx, now) {
				// Found GPUs must be registered again.
				m.free(set)
				set = nil
			}
		}
	}
}

// establish creates an event set, registers every GPU that is not lost and
// returns the indices of the GPUs it registered.
func (m *Monitor) establish(ctx context.Context) (set nvml.EventSet, registered []int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("NVML call panicked: %v", r)
		}
		if err != nil {
			m.free(set)
			set, registered = nil, nil
		}
	}()
	set, ret := m.lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		return nil, nil, fmt.Errorf("creating an NVML event set: %s", nvml.ErrorString(ret))
	}
	for i, uuid := range m.uuids() {
		if m.problem(i) == GPULost {
			continue
		}
		h, ret := m.lib.DeviceGetHandleByUUID(uuid)
		if ret == nvml.ERROR_GPU_IS_LOST {
			m.apply(ctx, i, GPULost, ReasonGPULost, "NVML reports the GPU lost (fallen off the bus)")
			continue
		}
		if ret != nvml.SUCCESS {
			return nil, nil, fmt.Errorf("getting the NVML handle of GPU %s: %s", uuid, nvml.ErrorString(ret))
		}
		mask := uint64(EventMask)
		if supported, ret := h.GetSupportedEventTypes(); ret == nvml.SUCCESS {
			mask &= supported
		}
		ret = nvml.ERROR_NOT_SUPPORTED
		if mask != 0 {
			ret = h.RegisterEvents(mask, set)
		}
		switch ret {
		case nvml.SUCCESS:
			m.setNoEvents(ctx, i, false)
			registered = append(registered, i)
		case nvml.ERROR_NOT_SUPPORTED:
			m.setNoEvents(ctx, i, true)
		case nvml.ERROR_GPU_IS_LOST:
			m.apply(ctx, i, GPULost, ReasonGPULost, "NVML reports the GPU lost (fallen off the bus)")
		default:
			return nil, nil, fmt.Errorf("registering GPU %s for NVML events: %s", uuid, nvml.ErrorString(ret))
		}
	}
	return set, registered, nil
}

func (m *Monitor) wait(ctx context.Context, set nvml.EventSet) (data nvml.EventData, ret nvml.Return) {
	defer func() {
		if r := recover(); r != nil {
			klog.FromContext(ctx).Error(fmt.Errorf("%v", r), "NVML event wait panicked")
			data, ret = nvml.EventData{}, nvml.ERROR_UNKNOWN
		}
	}()
	return set.Wait(uint32(m.opts.WaitTimeout.Milliseconds()))
}

func (m *Monitor) free(set nvml.EventSet) {
	if set == nil {
		return
	}
	defer func() { _ = recover() }()
	set.Free()
}

// handle applies one NVML event.
func (m *Monitor) handle(ctx context.Context, data nvml.EventData) {
	logger := klog.FromContext(ctx)
	targets := m.targets(ctx, data.Device)
	switch {
	case data.EventType&nvml.EventTypeXidCriticalError != 0:
		xid := data.EventData
		reason := fmt.Sprintf("%s%d", ReasonXIDPrefix, xid)
		switch {
		case m.ignored[xid]:
			logger.V(2).Info("Ignoring an application XID error", "xid", xid, "gpus", m.uuidsOf(targets))
		case xid == XIDLost:
			for _, i := range targets {
				m.apply(ctx, i, GPULost, reason, "XID 79: the GPU has fallen off the bus; it needs a reset or a reboot (see dmesg)")
			}
		default:
			for _, i := range targets {
				m.apply(ctx, i, CriticalXID, reason, fmt.Sprintf("critical XID %d; see NVIDIA's XID catalog and dmesg; reset the GPU, or add %d to the ignored XIDs if applications cause it", xid, xid))
			}
		}
	case data.EventType&nvml.EventTypeDoubleBitEccError != 0:
		for _, i := range targets {
			m.apply(ctx, i, DoubleBitECC, ReasonDoubleBitECC, "uncorrectable (double-bit) ECC error; reset the GPU to retire the page (nvidia-smi -r)")
		}
	default:
		logger.V(4).Info("Ignoring an NVML event", "type", data.EventType, "data", data.EventData)
	}
	m.mu.Lock()
	m.processed++
	m.mu.Unlock()
}

// targets are the GPUs an event is about: its device, or every GPU when
// NVML does not say which (as NVIDIA's device plugin does).
func (m *Monitor) targets(ctx context.Context, h nvml.Device) []int {
	if h != nil {
		if uuid, ret := h.GetUUID(); ret == nvml.SUCCESS {
			if i, ok := m.index[uuid]; ok {
				return []int{i}
			}
			klog.FromContext(ctx).Info("NVML event for a GPU that is not monitored", "uuid", uuid)
			return nil
		}
	}
	klog.FromContext(ctx).Info("NVML event without a GPU: applying it to every GPU")
	all := make([]int, len(m.devs))
	for i := range all {
		all[i] = i
	}
	return all
}

// apply records an error of GPU i; a milder problem never replaces a worse
// one, but every error restarts the recovery period.
func (m *Monitor) apply(ctx context.Context, i int, p Problem, reason, message string) {
	now := m.opts.Clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	d := &m.devs[i]
	d.lastError = now
	if p < d.problem {
		return
	}
	if d.problem == None {
		d.since = now
	}
	if d.problem != p || d.reason != reason {
		klog.FromContext(ctx).Error(nil, "GPU is unhealthy", "uuid", d.uuid, "reason", reason, "problem", p, "detail", message)
	}
	d.problem, d.reason, d.message = p, reason, message
	m.publishLocked()
}

func (m *Monitor) setNoEvents(ctx context.Context, i int, noEvents bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := &m.devs[i]
	if d.noEvents == noEvents {
		return
	}
	d.noEvents = noEvents
	if noEvents {
		d.noEventsSince = m.opts.Clock.Now()
		klog.FromContext(ctx).Error(nil, "GPU supports no NVML error events: it is reported unmonitored; turn the health monitor off if that is acceptable", "uuid", d.uuid)
	}
	m.publishLocked()
}

// expire clears XID and ECC problems older than the recovery period. Nothing
// recovers while the event loop is down: errors could have gone unseen.
func (m *Monitor) expire(ctx context.Context, now time.Time) {
	if m.opts.RecoveryPeriod <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.monitored {
		return
	}
	for i := range m.devs {
		d := &m.devs[i]
		if (d.problem == CriticalXID || d.problem == DoubleBitECC) && now.Sub(d.lastError) >= m.opts.RecoveryPeriod {
			klog.FromContext(ctx).Info("GPU recovered: no error within the recovery period", "uuid", d.uuid, "reason", d.reason, "recoveryPeriod", m.opts.RecoveryPeriod)
			m.clearLocked(i)
		}
	}
}

// probeLost looks the lost GPUs up again and reports whether one is back.
func (m *Monitor) probeLost(ctx context.Context, now time.Time) bool {
	found := false
	for i, uuid := range m.uuids() {
		m.mu.Lock()
		d := m.devs[i]
		m.mu.Unlock()
		if d.problem != GPULost || now.Sub(d.lastError) < m.opts.ProbeInterval {
			continue
		}
		if ret := m.probe(uuid); ret != nvml.SUCCESS {
			klog.FromContext(ctx).V(2).Info("Lost GPU is still gone", "uuid", uuid, "nvml", nvml.ErrorString(ret))
			continue
		}
		m.mu.Lock()
		if m.devs[i].problem == GPULost && m.devs[i].lastError.Equal(d.lastError) {
			klog.FromContext(ctx).Info("GPU recovered: NVML sees the lost GPU again", "uuid", uuid, "reason", d.reason)
			m.clearLocked(i)
			found = true
		}
		m.mu.Unlock()
	}
	return found
}

// probeAll looks every GPU up after NVML said one is lost, marks the lost
// ones, and returns how many it newly found lost.
func (m *Monitor) probeAll(ctx context.Context) int {
	n := 0
	for i, uuid := range m.uuids() {
		if m.problem(i) == GPULost {
			continue
		}
		switch ret := m.probe(uuid); ret {
		case nvml.ERROR_GPU_IS_LOST, nvml.ERROR_NOT_FOUND:
			m.apply(ctx, i, GPULost, ReasonGPULost, fmt.Sprintf("NVML reports the GPU lost (%s); it needs a reset or a reboot (see dmesg)", nvml.ErrorString(ret)))
			n++
		}
	}
	return n
}

func (m *Monitor) probe(uuid string) (ret nvml.Return) {
	defer func() {
		if recover() != nil {
			ret = nvml.ERROR_UNKNOWN
		}
	}()
	return m.opts.Probe(uuid)
}

func (m *Monitor) probeNVML(uuid string) nvml.Return {
	h, ret := m.lib.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return ret
	}
	_, ret = h.GetPciInfo()
	return ret
}

func (m *Monitor) loopFailed(ctx context.Context, err error, failures int, retryIn time.Duration) {
	logger := klog.FromContext(ctx)
	if m.opts.OnLoopError != nil {
		m.opts.OnLoopError(err)
	}
	logger.Error(err, "NVML event monitoring failed; retrying", "consecutiveFailures", failures, "retryIn", retryIn)
	m.mu.Lock()
	defer m.mu.Unlock()
	if failures < m.opts.MaxFailures || !m.monitored {
		return
	}
	m.monitored = false
	m.downSince = m.opts.Clock.Now()
	logger.Error(err, "NVML event monitoring is DOWN: every GPU is now reported unmonitored (health Unknown, tainted) until it works again; check the NVIDIA driver (nvidia-smi, dmesg) and the plugin's access to it",
		"consecutiveFailures", failures)
	m.publishLocked()
}

func (m *Monitor) loopWorks(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.monitored {
		return
	}
	m.monitored = true
	klog.FromContext(ctx).Info("NVML event monitoring works again", "downFor", m.opts.Clock.Since(m.downSince))
	m.publishLocked()
}

func (m *Monitor) clearLocked(i int) {
	d := &m.devs[i]
	d.problem, d.reason, d.message, d.since = None, "", "", time.Time{}
	m.publishLocked()
}

// publishLocked replaces the snapshot and wakes subscribers when anything
// visible changed.
func (m *Monitor) publishLocked() {
	s := m.snapshotLocked()
	if s.Monitored == m.snap.Monitored && slices.Equal(s.Devices, m.snap.Devices) {
		return
	}
	m.snap = s
	close(m.changed)
	m.changed = make(chan struct{})
}

func (m *Monitor) snapshotLocked() Snapshot {
	s := Snapshot{Monitored: m.monitored, Devices: make([]DeviceState, len(m.devs))}
	for i, d := range m.devs {
		st := DeviceState{UUID: d.uuid}
		switch {
		case d.problem != None:
			st.Problem, st.Reason, st.Message, st.Since = d.problem, d.reason, d.message, d.since
		case !m.monitored:
			st.Problem, st.Reason, st.Since = Unmonitored, ReasonUnmonitored, m.downSince
			st.Message = "the NVML event loop is down, so errors of this GPU would go unseen; see the plugin's log"
		case d.noEvents:
			st.Problem, st.Reason, st.Since = Unmonitored, ReasonUnmonitored, d.noEventsSince
			st.Message = "the GPU supports no NVML error events; turn the health monitor off if that is acceptable"
		}
		s.Devices[i] = st
	}
	return s
}

func (m *Monitor) uuids() []string {
	out := make([]string, len(m.devs))
	for i, d := range m.devs {
		out[i] = d.uuid // immutable after New
	}
	return out
}

func (m *Monitor) uuidsOf(idx []int) []string {
	out := make([]string, 0, len(idx))
	for _, i := range idx {
		out = append(out, m.devs[i].uuid)
	}
	return out
}

// anyLost tells whether one of the GPUs idx is lost.
func (m *Monitor) anyLost(idx []int) bool {
	for _, i := range idx {
		if m.problem(i) == GPULost {
			return true
		}
	}
	return false
}

func (m *Monitor) problem(i int) Problem {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.devs[i].problem
}

// sleep waits d on the monitor's clock, or until ctx is done.
func (m *Monitor) sleep(ctx context.Context, d time.Duration) {
	t := m.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C():
	}
}

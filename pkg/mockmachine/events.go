package mockmachine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"k8s.io/klog/v2"
)

// EventsFile is the file, in the mock host root of a plugin with a mock
// NVML backend, from which the plugin takes injected GPU events (see
// Events.WatchFile and Apply).
const EventsFile = "inject-events"

// EventsPoll is how often the plugins look at EventsFile.
const EventsPoll = 500 * time.Millisecond

// SupportedEventTypes are the NVML event types a mock GPU with
// Events claims to support (GetSupportedEventTypes).
const SupportedEventTypes = nvml.EventTypeXidCriticalError | nvml.EventTypeDoubleBitEccError | nvml.EventTypeSingleBitEccError

// Events gives a go-nvml mock machine (see NewMock) the NVML event API,
// which go-nvml's mock servers leave unset, and lets tests and the mock
// plugins inject events into it:
//
//   - lib.EventSetCreate returns an event set that Events owns;
//   - device.RegisterEvents registers the device's events in such a set,
//     and device.GetSupportedEventTypes reports SupportedEventTypes;
//   - Inject delivers an nvml.EventData to every live set in which the
//     device registered for that event type; set.Wait returns it;
//   - SetLost makes a GPU fall off the bus: waiting sets get
//     ERROR_GPU_IS_LOST once, RegisterEvents and Probe fail with it;
//   - SetWaitError makes every Wait fail, to simulate a broken event loop.
//
// Events injected while no set has the device registered are dropped, as
// NVML drops events nobody waits for. All methods are safe for concurrent
// use. The event sets keep no call history, so a monitor may wait on them
// forever without growing memory.
type Events struct {
	devices []*server.Device

	mu      sync.Mutex
	sets    map[*mockEventSet]struct{}
	lost    map[string]bool // by UUID
	waitErr nvml.Return     // SUCCESS: Wait works
}

// InstallEvents sets the event functions of s and of its devices
// (EventSetCreate, EventSetWait, EventSetFree; RegisterEvents,
// GetSupportedEventTypes) and returns the handle to inject events. It sets
// only functions that go-nvml's mock servers leave nil, so it does not race
// with other users of s. Call it once per server, before anything registers
// events; a second call replaces the first (sets of the first stop getting
// events).
func InstallEvents(s *server.Server) (*Events, error) {
	e := &Events{sets: map[*mockEventSet]struct{}{}, lost: map[string]bool{}, waitErr: nvml.SUCCESS}
	for i, h := range s.Devices {
		d, ok := h.(*server.Device)
		if !ok {
			return nil, fmt.Errorf("mock events: device %d has unexpected type %T, want *server.Device", i, h)
		}
		e.devices = append(e.devices, d)
	}
	for _, d := range e.devices {
		d.RegisterEventsFunc = func(types uint64, set nvml.EventSet) nvml.Return {
			return e.register(d, types, set)
		}
		d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
			return SupportedEventTypes, nvml.SUCCESS
		}
	}
	s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		set := &mockEventSet{owner: e, registered: map[*server.Device]uint64{}, wake: make(chan struct{}, 1)}
		e.mu.Lock()
		e.sets[set] = struct{}{}
		e.mu.Unlock()
		return set, nvml.SUCCESS
	}
	s.EventSetWaitFunc = func(set nvml.EventSet, timeoutMs uint32) (nvml.EventData, nvml.Return) {
		if set == nil {
			return nvml.EventData{}, nvml.ERROR_INVALID_ARGUMENT
		}
		return set.Wait(timeoutMs)
	}
	s.EventSetFreeFunc = func(set nvml.EventSet) nvml.Return {
		if set == nil {
			return nvml.ERROR_INVALID_ARGUMENT
		}
		return set.Free()
	}
	return e, nil
}

func (e *Events) register(d *server.Device, types uint64, set nvml.EventSet) nvml.Return {
	s, ok := set.(*mockEventSet)
	if !ok || s.owner != e {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	if types&^SupportedEventTypes != 0 {
		return nvml.ERROR_NOT_SUPPORTED
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lost[d.UUID] {
		return nvml.ERROR_GPU_IS_LOST
	}
	if _, live := e.sets[s]; !live {
		return nvml.ERROR_INVALID_ARGUMENT // freed
	}
	s.mu.Lock()
	s.registered[d] |= types
	s.mu.Unlock()
	return nvml.SUCCESS
}

// device finds a mock GPU by UUID or NVML index ("3").
func (e *Events) device(id string) (*server.Device, error) {
	for _, d := range e.devices {
		if d.UUID == id {
			return d, nil
		}
	}
	if i, err := strconv.Atoi(id); err == nil && i >= 0 && i < len(e.devices) {
		return e.devices[i], nil
	}
	return nil, fmt.Errorf("mock events: no GPU %q: name it by UUID or by NVML index 0..%d", id, len(e.devices)-1)
}

// Inject delivers an event of eventType (an nvml.EventType* value) with
// data (the XID for EventTypeXidCriticalError) for the GPU named by device
// (UUID or NVML index) to every live event set that registered the device
// for that type. It returns how many sets got it: 0 means nobody listens.
func (e *Events) Inject(device string, eventType, data uint64) (int, error) {
	d, err := e.device(device)
	if err != nil {
		return 0, err
	}
	ev := nvml.EventData{Device: d, EventType: eventType, EventData: data,
		GpuInstanceId: 0xFFFFFFFF, ComputeInstanceId: 0xFFFFFFFF} // NVML's "not a MIG device"
	n := 0
	for _, s := range e.liveSets() {
		if s.push(d, eventType, mockItem{data: ev, ret: nvml.SUCCESS}) {
			n++
		}
	}
	return n, nil
}

// InjectXID is Inject of a critical XID error.
func (e *Events) InjectXID(device string, xid uint64) (int, error) {
	return e.Inject(device, nvml.EventTypeXidCriticalError, xid)
}

// Listeners tells how many live event sets have the GPU named by device
// registered for eventType. Tests wait for it before injecting.
func (e *Events) Listeners(device string, eventType uint64) int {
	d, err := e.device(device)
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range e.liveSets() {
		s.mu.Lock()
		if s.registered[d]&eventType != 0 {
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// SetLost makes the GPU named by device fall off the bus (lost) or come
// back. Losing it wakes every set that has it registered with
// ERROR_GPU_IS_LOST once; while lost, RegisterEvents and Probe of it fail
// with ERROR_GPU_IS_LOST.
func (e *Events) SetLost(device string, lost bool) error {
	d, err := e.device(device)
	if err != nil {
		return err
	}
	e.mu.Lock()
	was := e.lost[d.UUID]
	if lost {
		e.lost[d.UUID] = true
	} else {
		delete(e.lost, d.UUID)
	}
	e.mu.Unlock()
	if lost && !was {
		for _, s := range e.liveSets() {
			s.push(d, ^uint64(0), mockItem{ret: nvml.ERROR_GPU_IS_LOST})
		}
	}
	return nil
}

// SetWaitError makes every Wait of every set return ret at once (a broken
// event loop) until it is called again with nvml.SUCCESS.
func (e *Events) SetWaitError(ret nvml.Return) {
	e.mu.Lock()
	e.waitErr = ret
	sets := e.liveSetsLocked()
	e.mu.Unlock()
	for _, s := range sets {
		s.signal()
	}
}

// Probe is what NVML answers for the GPU with this UUID: SUCCESS, or
// ERROR_GPU_IS_LOST while SetLost holds it lost, or ERROR_NOT_FOUND for an
// unknown UUID.
func (e *Events) Probe(uuid string) nvml.Return {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lost[uuid] {
		return nvml.ERROR_GPU_IS_LOST
	}
	for _, d := range e.devices {
		if d.UUID == uuid {
			return nvml.SUCCESS
		}
	}
	return nvml.ERROR_NOT_FOUND
}

func (e *Events) liveSets() []*mockEventSet {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.liveSetsLocked()
}

func (e *Events) liveSetsLocked() []*mockEventSet {
	out := make([]*mockEventSet, 0, len(e.sets))
	for s := range e.sets {
		out = append(out, s)
	}
	return out
}

func (e *Events) waitError() nvml.Return {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.waitErr
}

// mockItem is what one Wait returns: an event, or an error code.
type mockItem struct {
	data nvml.EventData
	ret  nvml.Return
}

// mockEventSet implements nvml.EventSet for Events.
type mockEventSet struct {
	owner *Events
	wake  chan struct{} // capacity 1: "something changed"

	mu         sync.Mutex
	registered map[*server.Device]uint64
	queue      []mockItem
	freed      bool
}

var _ nvml.EventSet = (*mockEventSet)(nil)

// push queues it when d is registered for any bit of types.
func (s *mockEventSet) push(d *server.Device, types uint64, it mockItem) bool {
	s.mu.Lock()
	ok := !s.freed && s.registered[d]&types != 0
	if ok {
		s.queue = append(s.queue, it)
	}
	s.mu.Unlock()
	if ok {
		s.signal()
	}
	return ok
}

func (s *mockEventSet) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Wait returns the next queued event, ERROR_TIMEOUT after timeoutMs
// without one, or the error set by SetWaitError.
func (s *mockEventSet) Wait(timeoutMs uint32) (nvml.EventData, nvml.Return) {
	timer := time.NewTimer(time.Duration(timeoutMs) * time.Millisecond)
	defer timer.Stop()
	for {
		if ret := s.owner.waitError(); ret != nvml.SUCCESS {
			return nvml.EventData{}, ret
		}
		s.mu.Lock()
		if s.freed {
			s.mu.Unlock()
			return nvml.EventData{}, nvml.ERROR_UNINITIALIZED
		}
		if len(s.queue) > 0 {
			it := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return it.data, it.ret
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-timer.C:
			return nvml.EventData{}, nvml.ERROR_TIMEOUT
		}
	}
}

// Free releases the set; a Wait in progress returns ERROR_UNINITIALIZED.
func (s *mockEventSet) Free() nvml.Return {
	s.owner.mu.Lock()
	delete(s.owner.sets, s)
	s.owner.mu.Unlock()
	s.mu.Lock()
	s.freed = true
	s.queue = nil
	s.mu.Unlock()
	s.signal()
	return nvml.SUCCESS
}

func (s *mockEventSet) Wait_v3(uint32) (nvml.EventSetWaitData_v3, nvml.Return) {
	return nvml.EventSetWaitData_v3{}, nvml.ERROR_NOT_SUPPORTED
}

func (s *mockEventSet) GetContextCount_v1() (nvml.GetContextCount_v1, nvml.Return) {
	return nvml.GetContextCount_v1{}, nvml.ERROR_NOT_SUPPORTED
}

func (s *mockEventSet) GetContextData_v1(d nvml.GetContextData_v1) (nvml.GetContextData_v1, nvml.Return) {
	return d, nvml.ERROR_NOT_SUPPORTED
}

func (s *mockEventSet) GetContextInfo_v1(uint32) (nvml.GetContextInfo_v1, nvml.Return) {
	return nvml.GetContextInfo_v1{}, nvml.ERROR_NOT_SUPPORTED
}

func (s *mockEventSet) GetGpuOperationalEventContextLegacyXid_v1(uint32) (uint32, nvml.Return) {
	return 0, nvml.ERROR_NOT_SUPPORTED
}

func (s *mockEventSet) RegisterGpuOperationalEvents_v1(*nvml.GpuOperationalEventConfig_v1) nvml.Return {
	return nvml.ERROR_NOT_SUPPORTED
}

// Apply runs injection commands, one per line; blank lines and lines
// starting with # are skipped. <gpu> is a UUID or an NVML index (the N of
// the DRA device gpu-N):
//
//	xid <gpu> <xid>   a critical XID error, e.g. "xid 0 79"
//	dbe <gpu>         a double-bit ECC error
//	sbe <gpu>         a single-bit ECC error
//	lost <gpu>        the GPU falls off the bus (see SetLost)
//	found <gpu>       the lost GPU is back
//	wait-error        every event wait fails (ERROR_UNKNOWN) ...
//	wait-ok           ... until this
//
// Every line is tried; the error joins the failures, each naming its line.
func (e *Events) Apply(ctx context.Context, r io.Reader) error {
	logger := klog.FromContext(ctx)
	var errs []error
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := e.applyLine(line); err != nil {
			errs = append(errs, fmt.Errorf("line %d %q: %w", n, line, err))
			continue
		}
		logger.Info("Injected mock GPU event", "command", line)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (e *Events) applyLine(line string) error {
	f := strings.Fields(line)
	want := map[string]int{"xid": 3, "dbe": 2, "sbe": 2, "lost": 2, "found": 2, "wait-error": 1, "wait-ok": 1}
	n, known := want[f[0]]
	if !known {
		return errors.New("unknown command: use xid, dbe, sbe, lost, found, wait-error or wait-ok")
	}
	if len(f) != n {
		return fmt.Errorf("%s takes %d argument(s)", f[0], n-1)
	}
	var err error
	switch f[0] {
	case "xid":
		xid, perr := strconv.ParseUint(f[2], 10, 64)
		if perr != nil {
			return fmt.Errorf("XID %q is not a number", f[2])
		}
		_, err = e.InjectXID(f[1], xid)
	case "dbe":
		_, err = e.Inject(f[1], nvml.EventTypeDoubleBitEccError, 0)
	case "sbe":
		_, err = e.Inject(f[1], nvml.EventTypeSingleBitEccError, 0)
	case "lost", "found":
		err = e.SetLost(f[1], f[0] == "lost")
	case "wait-error":
		e.SetWaitError(nvml.ERROR_UNKNOWN)
	case "wait-ok":
		e.SetWaitError(nvml.SUCCESS)
	}
	return err
}

// WatchFile applies (see Apply) the commands written to path, polling every
// interval until ctx is done. It consumes the file: it is read, then
// removed, so every command runs once. A file is taken once it ends with a
// newline, or once it has not changed for one interval; an empty file is
// left alone (it is being written). Writing another file and renaming it to
// path is always safe. A missing file is normal; other failures are logged
// and retried.
func (e *Events) WatchFile(ctx context.Context, path string, interval time.Duration) {
	logger := klog.FromContext(ctx).WithValues("path", path)
	logger.Info("Mock GPU event injection enabled: write commands such as \"xid 0 79\" to the file")
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var last []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err == nil && !complete(data, &last) {
			continue // being written: look again at the next tick
		}
		if err == nil {
			err = os.Remove(path)
		}
		if err != nil {
			logger.Error(err, "Reading the mock event injection file failed; fix its permissions or remove it")
			continue
		}
		if err := e.Apply(ctx, bytes.NewReader(data)); err != nil {
			logger.Error(err, "Some mock event injection commands failed")
		}
	}
}

// complete tells whether data, read from the injection file, is ready to
// apply; last remembers the previous incomplete read.
func complete(data []byte, last *[]byte) bool {
	if len(data) == 0 {
		return false
	}
	if data[len(data)-1] == '\n' || bytes.Equal(data, *last) {
		*last = nil
		return true
	}
	*last = data
	return false
}

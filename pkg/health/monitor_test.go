package health

import (
	"context"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"k8s.io/klog/v2/ktesting"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// patience bounds every wait for something that normally takes
// milliseconds.
const patience = 20 * time.Second

type env struct {
	lib   *server.Server
	inv   *inventory.Inventory
	mon   *Monitor
	ev    *mockmachine.Events
	ctx   context.Context
	stop  func()
	loopE atomic.Int64
}

// fastOptions keep every period short so that tests take milliseconds.
func fastOptions() Options {
	return Options{
		ProbeInterval:  50 * time.Millisecond,
		WaitTimeout:    20 * time.Millisecond,
		InitialBackoff: 5 * time.Millisecond,
		MaxBackoff:     20 * time.Millisecond,
	}
}

// withFakeClock makes opts go by a fake clock, which moves only when the
// test steps it.
func withFakeClock(opts *Options) *testingclock.FakeClock {
	clk := testingclock.NewFakeClock(time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC))
	opts.Clock = clk
	return clk
}

// eventually polls cond until it holds (true) or patience runs out (false).
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// newEnv builds a mock DGX H100 (8 GPUs) and a monitor of it; start runs it.
func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	lib, err := mockmachine.New("dgxh100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := mockmachine.InstallEvents(lib)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{lib: lib, inv: inv, ev: ev}
	opts.OnLoopError = func(error) { e.loopE.Add(1) }
	if opts.Probe == nil {
		opts.Probe = ev.Probe
	}
	e.mon, err = New(lib, inv.UUIDs(), opts)
	if err != nil {
		t.Fatal(err)
	}
	_, e.ctx = ktesting.NewTestContext(t)
	return e
}

func (e *env) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.mon.Run(ctx) }()
	e.stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(patience):
			t.Error("Run did not return after its context was cancelled")
		}
	}
	t.Cleanup(e.stop)
}

func (e *env) uuid(i int) string { return e.inv.Devices[i].UUID }

// waitRegistered waits until the monitor listens to GPU i.
func (e *env) waitRegistered(t *testing.T, i int) {
	t.Helper()
	if !eventually(func() bool { return e.ev.Listeners(e.uuid(i), nvml.EventTypeXidCriticalError) != 0 }) {
		t.Fatalf("the monitor did not register GPU %d for events", i)
	}
}

// loopWentRound waits until the monitor's loop has come round after
// everything the test did before (a clock step above all): it feeds two
// ignored XIDs to GPU 0 (which must be registered) one after the other. The
// loop takes the time, expires and probes after each event it took in, and
// it takes in one event per round; so once the second event is counted,
// the round of the first, which began after the call, is over.
func (e *env) loopWentRound(t *testing.T) {
	t.Helper()
	n := e.mon.Processed()
	for k := range uint64(2) {
		if _, err := e.ev.InjectXID("0", 13); err != nil {
			t.Fatal(err)
		}
		waitProcessed(t, e.mon, n+k+1)
	}
}

// waitFor waits until cond holds for the current snapshot.
func waitFor(t *testing.T, m *Monitor, what string, cond func(Snapshot) bool) Snapshot {
	t.Helper()
	timeout := time.After(patience)
	for {
		s, changed := m.Current()
		if cond(s) {
			return s
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("timed out waiting for %s; last snapshot: %+v", what, s)
		}
	}
}

// waitProcessed waits until the monitor took in n events in all.
func waitProcessed(t *testing.T, m *Monitor, n uint64) {
	t.Helper()
	if !eventually(func() bool { return m.Processed() >= n }) {
		t.Fatalf("the monitor processed %d events, want %d", m.Processed(), n)
	}
}

func onlyUnhealthy(s Snapshot, uuid, reason string) bool {
	for _, d := range s.Devices {
		if d.UUID == uuid {
			if d.Reason != reason {
				return false
			}
		} else if !d.Healthy() {
			return false
		}
	}
	return true
}

func allHealthy(s Snapshot) bool { return s.Monitored && s.Unhealthy() == 0 }

func TestCriticalXIDMakesOnlyThatGPUUnhealthyAndRecovers(t *testing.T) {
	opts := fastOptions()
	clk := withFakeClock(&opts)
	opts.RecoveryPeriod = 10 * time.Minute
	e := newEnv(t, opts)
	e.start(t)
	e.waitRegistered(t, 2)
	e.waitRegistered(t, 0)

	before := clk.Now()
	if _, err := e.ev.InjectXID(e.uuid(2), 48); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, e.mon, "GPU 2 unhealthy with xid-48", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(2), "xid-48") })
	d, _ := s.Device(e.uuid(2))
	// The clock has not moved: the problem began at its time.
	if d.Problem != CriticalXID || d.Healthy() || !d.Since.Equal(before) || d.Message == "" {
		t.Errorf("state = %+v", d)
	}
	if s.Unhealthy() != 1 {
		t.Errorf("Unhealthy() = %d, want 1", s.Unhealthy())
	}
	// A moment before the recovery period is over, the GPU is still unhealthy.
	clk.Step(opts.RecoveryPeriod - time.Nanosecond)
	e.loopWentRound(t)
	if s, _ := e.mon.Current(); !onlyUnhealthy(s, e.uuid(2), "xid-48") {
		t.Fatalf("GPU 2 recovered before the recovery period was over: %+v", s.Devices[2])
	}
	clk.Step(time.Nanosecond)
	waitFor(t, e.mon, "GPU 2 healthy again after the recovery period", allHealthy)
}

func TestIgnoredXIDsChangeNothing(t *testing.T) {
	opts := fastOptions()
	opts.AdditionalIgnoredXIDs = []uint64{94}
	e := newEnv(t, opts)
	e.start(t)
	e.waitRegistered(t, 0)
	before, changed := e.mon.Current()

	for i, xid := range []uint64{13, 31, 43, 45, 68, 109, 94} {
		if _, err := e.ev.InjectXID("0", xid); err != nil {
			t.Fatal(err)
		}
		waitProcessed(t, e.mon, uint64(i+1))
	}
	// A single-bit ECC error is corrected by the hardware: the monitor does
	// not even register for it.
	if n, _ := e.ev.Inject("0", nvml.EventTypeSingleBitEccError, 0); n != 0 {
		t.Errorf("the monitor listens to single-bit ECC errors")
	}
	after, _ := e.mon.Current()
	if !reflect.DeepEqual(before, after) || !allHealthy(after) {
		t.Errorf("ignored XIDs changed the state: %+v", after)
	}
	select {
	case <-changed:
		t.Error("ignored XIDs woke the subscribers")
	default:
	}
}

func TestReplacedIgnoreList(t *testing.T) {
	opts := fastOptions()
	opts.ReplaceIgnoredXIDs = true // and nothing instead: ignore nothing
	e := newEnv(t, opts)
	e.start(t)
	e.waitRegistered(t, 5)
	if _, err := e.ev.InjectXID("5", 13); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.mon, "XID 13 counted once the default list is replaced", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(5), "xid-13") })
}

func TestDoubleBitECCStaysWithoutRecoveryPeriod(t *testing.T) {
	opts := fastOptions() // RecoveryPeriod 0: never
	clk := withFakeClock(&opts)
	e := newEnv(t, opts)
	e.start(t)
	e.waitRegistered(t, 3)
	e.waitRegistered(t, 0)
	if _, err := e.ev.Inject("3", nvml.EventTypeDoubleBitEccError, 0); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, e.mon, "GPU 3 double-bit-ecc", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(3), ReasonDoubleBitECC) })
	since := s.Devices[3].Since
	// A milder error does not replace the worse one.
	if _, err := e.ev.InjectXID("3", 48); err != nil {
		t.Fatal(err)
	}
	waitProcessed(t, e.mon, 2)
	// Many probe intervals later, each seen by the loop, and then a day
	// later, the error is still there.
	for range 5 {
		clk.Step(opts.ProbeInterval)
		e.loopWentRound(t)
	}
	clk.Step(24 * time.Hour)
	e.loopWentRound(t)
	s, _ = e.mon.Current()
	if d := s.Devices[3]; d.Reason != ReasonDoubleBitECC || !d.Since.Equal(since) || d.Problem != DoubleBitECC {
		t.Errorf("GPU 3 = %+v, want still double-bit-ecc since %v", d, since)
	}
}

func TestXID79RecoversWhenNVMLSeesTheGPU(t *testing.T) {
	opts := fastOptions()
	clk := withFakeClock(&opts)
	var gone atomic.Bool // NVML does not see the GPU until the test says so
	gone.Store(true)
	opts.Probe = func(string) nvml.Return {
		if gone.Load() {
			return nvml.ERROR_GPU_IS_LOST
		}
		return nvml.SUCCESS
	}
	e := newEnv(t, opts)
	e.start(t)
	e.waitRegistered(t, 1)
	e.waitRegistered(t, 0)
	if _, err := e.ev.InjectXID("1", 79); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, e.mon, "GPU 1 lost with xid-79", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(1), "xid-79") })
	if s.Devices[1].Problem != GPULost {
		t.Errorf("XID 79 gives %v, want GPULost", s.Devices[1].Problem)
	}
	gone.Store(false)
	// Lost GPUs are looked up every probe interval, not before.
	e.loopWentRound(t)
	if s, _ := e.mon.Current(); !onlyUnhealthy(s, e.uuid(1), "xid-79") {
		t.Fatalf("GPU 1 was found again before a probe interval passed: %+v", s.Devices[1])
	}
	clk.Step(opts.ProbeInterval)
	waitFor(t, e.mon, "GPU 1 found again", allHealthy)
}

func TestLostGPUStaysLostUntilFound(t *testing.T) {
	var probes sync.Map // uuid -> *atomic.Int64
	opts := fastOptions()
	clk := withFakeClock(&opts)
	var ev *mockmachine.Events
	opts.Probe = func(uuid string) nvml.Return {
		c, _ := probes.LoadOrStore(uuid, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		return ev.Probe(uuid)
	}
	e := newEnv(t, opts)
	ev = e.ev
	e.start(t)
	e.waitRegistered(t, 6)
	if err := ev.SetLost("6", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.mon, "GPU 6 gpu-lost", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(6), ReasonGPULost) })
	count := func() int64 {
		c, ok := probes.Load(e.uuid(6))
		if !ok {
			return 0
		}
		return c.(*atomic.Int64).Load()
	}
	// Every probe interval, the lost GPU is looked up again.
	start := count()
	for k := range int64(3) {
		clk.Step(opts.ProbeInterval)
		if !eventually(func() bool { return count() >= start+k+1 }) {
			t.Fatalf("the lost GPU is not probed again after %d probe intervals", k+1)
		}
	}
	if s, _ := e.mon.Current(); !onlyUnhealthy(s, e.uuid(6), ReasonGPULost) {
		t.Fatalf("a GPU that NVML still reports lost recovered: %+v", s.Devices[6])
	}
	// The other GPUs are still watched, and registration skips the lost one.
	if ev.Listeners("6", nvml.EventTypeXidCriticalError) != 0 {
		t.Error("the lost GPU is registered for events")
	}
	e.waitRegistered(t, 0)
	if err := ev.SetLost("6", false); err != nil {
		t.Fatal(err)
	}
	clk.Step(opts.ProbeInterval)
	waitFor(t, e.mon, "GPU 6 found again", allHealthy)
	e.waitRegistered(t, 6)
}

func TestEventLoopFailureMakesEveryGPUUnmonitored(t *testing.T) {
	e := newEnv(t, fastOptions())
	e.start(t)
	e.waitRegistered(t, 4)
	if _, err := e.ev.InjectXID("4", 48); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.mon, "GPU 4 xid-48", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(4), "xid-48") })

	e.ev.SetWaitError(nvml.ERROR_UNKNOWN)
	s := waitFor(t, e.mon, "every GPU unmonitored", func(s Snapshot) bool { return !s.Monitored })
	for i, d := range s.Devices {
		switch {
		case i == 4 && d.Reason != "xid-48":
			t.Errorf("GPU 4 lost its own problem while unmonitored: %+v", d)
		case i != 4 && (d.Problem != Unmonitored || d.Reason != ReasonUnmonitored || d.Since.IsZero() || d.Message == ""):
			t.Errorf("GPU %d = %+v, want unmonitored", i, d)
		}
	}
	if s.Unhealthy() != len(s.Devices) {
		t.Errorf("Unhealthy() = %d, want every GPU", s.Unhealthy())
	}
	if n := e.loopE.Load(); n < 3 {
		t.Errorf("OnLoopError called %d times, want at least MaxFailures (3)", n)
	}

	e.ev.SetWaitError(nvml.SUCCESS)
	waitFor(t, e.mon, "monitoring re-established", func(s Snapshot) bool { return s.Monitored && onlyUnhealthy(s, e.uuid(4), "xid-48") })
}

func TestBackoffDoublesOnTheClock(t *testing.T) {
	opts := fastOptions() // backoff from 5 ms, doubling, at most 20 ms
	clk := withFakeClock(&opts)
	e := newEnv(t, opts)
	e.start(t)
	e.waitRegistered(t, 0)
	e.ev.SetWaitError(nvml.ERROR_UNKNOWN)
	backoffs := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 20 * time.Millisecond}
	for i, backoff := range backoffs {
		n := int64(i + 1)
		// Failure n, then a backoff on the clock, which stands still: no
		// further failure until the test steps it.
		if !eventually(func() bool { return clk.HasWaiters() && e.loopE.Load() >= n }) {
			t.Fatalf("%d loop errors and no backoff on the clock, want %d", e.loopE.Load(), n)
		}
		if got := e.loopE.Load(); got != n {
			t.Fatalf("%d loop errors while the clock stood still, want %d", got, n)
		}
		if n == 3 { // MaxFailures: monitoring is down from now on
			s, _ := e.mon.Current()
			if d := s.Devices[1]; s.Monitored || d.Problem != Unmonitored || !d.Since.Equal(clk.Now()) {
				t.Errorf("after 3 failures: monitored=%v, GPU 1 = %+v; want unmonitored since %v", s.Monitored, d, clk.Now())
			}
		}
		clk.Step(backoff - time.Nanosecond)
		// The backoff's timer is still pending (had it fired, a new one
		// would come only after another loop error).
		if !clk.HasWaiters() || e.loopE.Load() != n {
			t.Fatalf("backoff %d ended before %v", n, backoff)
		}
		if i == len(backoffs)-1 {
			e.ev.SetWaitError(nvml.SUCCESS)
		}
		clk.Step(time.Nanosecond)
	}
	waitFor(t, e.mon, "monitoring re-established after the last backoff", allHealthy)
	if n := e.loopE.Load(); n != int64(len(backoffs)) {
		t.Errorf("%d loop errors, want %d", n, len(backoffs))
	}
}

func TestNVMLPanicsAndEventSetErrorsNeverCrash(t *testing.T) {
	e := newEnv(t, fastOptions())
	var calls atomic.Int64
	// go-nvml's mock panics on unset functions; the real library returns
	// errors. Both must end in "unmonitored", never in a crash.
	e.lib.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) {
		if calls.Add(1)%2 == 0 {
			panic("unset mock function")
		}
		return nil, nvml.ERROR_LIBRARY_NOT_FOUND
	}
	e.start(t)
	waitFor(t, e.mon, "every GPU unmonitored", func(s Snapshot) bool {
		return !s.Monitored && s.Unhealthy() == len(s.Devices) && s.Devices[0].Problem == Unmonitored
	})
}

func TestGPUWithoutEventSupportIsUnmonitored(t *testing.T) {
	e := newEnv(t, fastOptions())
	e.lib.Devices[7].(*server.Device).GetSupportedEventTypesFunc = func() (uint64, nvml.Return) {
		return nvml.EventTypePState, nvml.SUCCESS
	}
	e.start(t)
	s := waitFor(t, e.mon, "GPU 7 unmonitored", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(7), ReasonUnmonitored) })
	if !s.Monitored {
		t.Error("one GPU without events made the whole loop unmonitored")
	}
}

func TestEventWithoutDeviceAppliesToEveryGPU(t *testing.T) {
	e := newEnv(t, fastOptions())
	e.mon.handle(e.ctx, nvml.EventData{EventType: nvml.EventTypeDoubleBitEccError})
	s, _ := e.mon.Current()
	for _, d := range s.Devices {
		if d.Reason != ReasonDoubleBitECC {
			t.Errorf("GPU %s = %+v, want double-bit-ecc", d.UUID, d)
		}
	}
}

func TestNewValidates(t *testing.T) {
	lib, err := mockmachine.New("dgxa100", "n")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(lib, []string{"GPU-a", "GPU-a"}, Options{}); err == nil {
		t.Error("a GPU listed twice was accepted")
	}
	if _, err := New(lib, nil, Options{RecoveryPeriod: -time.Second}); err == nil {
		t.Error("a negative recovery period was accepted")
	}
}

func TestIgnoredAndParseXIDs(t *testing.T) {
	if got, want := IgnoredXIDs(nil, false), []uint64{13, 31, 43, 45, 68, 109}; !reflect.DeepEqual(got, want) {
		t.Errorf("defaults = %v, want %v", got, want)
	}
	if got, want := IgnoredXIDs([]uint64{200, 13}, false), []uint64{13, 31, 43, 45, 68, 109, 200}; !reflect.DeepEqual(got, want) {
		t.Errorf("extended = %v, want %v", got, want)
	}
	if got := IgnoredXIDs([]uint64{48}, true); !reflect.DeepEqual(got, []uint64{48}) {
		t.Errorf("replaced = %v, want [48]", got)
	}
	if got := IgnoredXIDs(nil, true); len(got) != 0 {
		t.Errorf("replaced by nothing = %v, want empty", got)
	}
	got, err := ParseXIDs(" 48, 63,,")
	if err != nil || !reflect.DeepEqual(got, []uint64{48, 63}) {
		t.Errorf("ParseXIDs = %v, %v", got, err)
	}
	if got, err := ParseXIDs(""); err != nil || len(got) != 0 {
		t.Errorf("ParseXIDs(\"\") = %v, %v", got, err)
	}
	for _, bad := range []string{"x", "-1", "1;2", "99999999999"} {
		if _, err := ParseXIDs(bad); err == nil {
			t.Errorf("ParseXIDs(%q) succeeded", bad)
		}
	}
}

func TestProblemStrings(t *testing.T) {
	seen := map[string]bool{}
	for p := None; p <= GPULost; p++ {
		s := p.String()
		if seen[s] {
			t.Errorf("two problems are called %q", s)
		}
		seen[s] = true
	}
}

// A GPU that falls off the bus first says so with XID 79, then NVML's event
// wait reports it lost: the monitor registers again without it, and that is
// no event-loop failure (the lost GPU was in the event set).
func TestXID79ThenLostIsNoLoopFailure(t *testing.T) {
	opts := fastOptions()
	e := newEnv(t, opts)
	e.start(t)
	e.waitRegistered(t, 3)
	if _, err := e.ev.InjectXID("3", 79); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e.mon, "GPU 3 lost with xid-79", func(s Snapshot) bool { return onlyUnhealthy(s, e.uuid(3), "xid-79") })
	if err := e.ev.SetLost("3", true); err != nil {
		t.Fatal(err)
	}
	if !eventually(func() bool { return e.ev.Listeners("3", nvml.EventTypeXidCriticalError) == 0 }) {
		t.Fatal("the lost GPU is still registered for events")
	}
	e.waitRegistered(t, 0)
	e.loopWentRound(t)
	if n := e.loopE.Load(); n != 0 {
		t.Errorf("%d event-loop failures after a GPU fell off the bus, want 0", n)
	}
	if s, _ := e.mon.Current(); !s.Monitored || !onlyUnhealthy(s, e.uuid(3), "xid-79") {
		t.Errorf("snapshot %+v, want monitored with only GPU 3 lost", s)
	}
}

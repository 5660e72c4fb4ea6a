package mockmachine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2/ktesting"
)

func newMockEvents(t *testing.T) (nvml.Interface, *Events) {
	t.Helper()
	s, err := New("dgxa100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	e, err := InstallEvents(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, e
}

func registeredSet(t *testing.T, lib nvml.Interface, index int, types uint64) nvml.EventSet {
	t.Helper()
	set, ret := lib.EventSetCreate()
	if ret != nvml.SUCCESS {
		t.Fatalf("EventSetCreate: %v", nvml.ErrorString(ret))
	}
	t.Cleanup(func() { set.Free() })
	d, ret := lib.DeviceGetHandleByIndex(index)
	if ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	if ret := d.RegisterEvents(types, set); ret != nvml.SUCCESS {
		t.Fatalf("RegisterEvents: %v", nvml.ErrorString(ret))
	}
	return set
}

func TestMockEventsDeliverRegisteredEventsOnly(t *testing.T) {
	lib, e := newMockEvents(t)
	set := registeredSet(t, lib, 2, nvml.EventTypeXidCriticalError)

	if _, ret := set.Wait(1); ret != nvml.ERROR_TIMEOUT {
		t.Fatalf("Wait on an empty set = %v, want ERROR_TIMEOUT", nvml.ErrorString(ret))
	}
	// Not registered: another GPU, another event type.
	if n, err := e.InjectXID("3", 48); err != nil || n != 0 {
		t.Errorf("XID for an unregistered GPU reached %d sets (err %v), want 0", n, err)
	}
	if n, _ := e.Inject("2", nvml.EventTypeDoubleBitEccError, 0); n != 0 {
		t.Errorf("DBE on a set registered for XIDs only reached %d sets", n)
	}
	if got := e.Listeners("2", nvml.EventTypeXidCriticalError); got != 1 {
		t.Errorf("Listeners = %d, want 1", got)
	}

	d2, _ := lib.DeviceGetHandleByIndex(2)
	uuid2, _ := d2.GetUUID()
	if n, err := e.InjectXID(uuid2, 79); err != nil || n != 1 {
		t.Fatalf("InjectXID by UUID reached %d sets (err %v), want 1", n, err)
	}
	data, ret := set.Wait(10_000)
	if ret != nvml.SUCCESS {
		t.Fatalf("Wait = %v", nvml.ErrorString(ret))
	}
	if data.EventType != nvml.EventTypeXidCriticalError || data.EventData != 79 {
		t.Errorf("event = %+v, want XID 79", data)
	}
	if u, _ := data.Device.GetUUID(); u != uuid2 {
		t.Errorf("event device %s, want %s", u, uuid2)
	}
	if _, ret := set.Wait(1); ret != nvml.ERROR_TIMEOUT {
		t.Errorf("the event was delivered twice")
	}
	if _, err := e.InjectXID("GPU-nope", 1); err == nil {
		t.Error("injecting for an unknown GPU succeeded")
	}
}

func TestMockEventsWaitWakesUpOnInjection(t *testing.T) {
	lib, e := newMockEvents(t)
	set := registeredSet(t, lib, 0, nvml.EventTypeDoubleBitEccError)
	got := make(chan nvml.EventData, 1)
	go func() {
		data, _ := set.Wait(60_000)
		got <- data
	}()
	// The waiter may start after the injection; either way it gets it.
	if _, err := e.Inject("0", nvml.EventTypeDoubleBitEccError, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if d.EventType != nvml.EventTypeDoubleBitEccError {
			t.Errorf("got %+v", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return the injected event")
	}
}

func TestMockEventsLostAndWaitError(t *testing.T) {
	lib, e := newMockEvents(t)
	set := registeredSet(t, lib, 1, nvml.EventTypeXidCriticalError)
	d1, _ := lib.DeviceGetHandleByIndex(1)
	uuid1, _ := d1.GetUUID()

	if err := e.SetLost("1", true); err != nil {
		t.Fatal(err)
	}
	if _, ret := set.Wait(10_000); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("Wait after SetLost = %v, want ERROR_GPU_IS_LOST", nvml.ErrorString(ret))
	}
	if ret := e.Probe(uuid1); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("Probe of a lost GPU = %v", nvml.ErrorString(ret))
	}
	set2, _ := lib.EventSetCreate()
	defer set2.Free()
	if ret := d1.RegisterEvents(nvml.EventTypeXidCriticalError, set2); ret != nvml.ERROR_GPU_IS_LOST {
		t.Errorf("RegisterEvents of a lost GPU = %v", nvml.ErrorString(ret))
	}
	if err := e.SetLost(uuid1, false); err != nil {
		t.Fatal(err)
	}
	if ret := e.Probe(uuid1); ret != nvml.SUCCESS {
		t.Errorf("Probe of a found GPU = %v", nvml.ErrorString(ret))
	}
	if ret := e.Probe("GPU-nope"); ret != nvml.ERROR_NOT_FOUND {
		t.Errorf("Probe of an unknown GPU = %v", nvml.ErrorString(ret))
	}

	e.SetWaitError(nvml.ERROR_UNKNOWN)
	if _, ret := set.Wait(10_000); ret != nvml.ERROR_UNKNOWN {
		t.Errorf("Wait with a wait error = %v", nvml.ErrorString(ret))
	}
	e.SetWaitError(nvml.SUCCESS)
	if _, ret := set.Wait(1); ret != nvml.ERROR_TIMEOUT {
		t.Errorf("Wait after clearing the error = %v", nvml.ErrorString(ret))
	}

	if ret := set.Free(); ret != nvml.SUCCESS {
		t.Fatal(nvml.ErrorString(ret))
	}
	if n, _ := e.InjectXID("1", 48); n != 0 {
		t.Error("a freed set still gets events")
	}
	if _, ret := set.Wait(1); ret == nvml.SUCCESS || ret == nvml.ERROR_TIMEOUT {
		t.Errorf("Wait on a freed set = %v, want an error", nvml.ErrorString(ret))
	}
}

func TestMockEventsUnsupportedType(t *testing.T) {
	lib, _ := newMockEvents(t)
	set, _ := lib.EventSetCreate()
	defer set.Free()
	d, _ := lib.DeviceGetHandleByIndex(0)
	if ret := d.RegisterEvents(nvml.EventTypeClock, set); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("RegisterEvents(clock) = %v, want ERROR_NOT_SUPPORTED", nvml.ErrorString(ret))
	}
	if types, ret := d.GetSupportedEventTypes(); ret != nvml.SUCCESS || types != SupportedEventTypes {
		t.Errorf("GetSupportedEventTypes = %#x, %v", types, nvml.ErrorString(ret))
	}
}

func TestMockEventsApplyAndWatchFile(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	lib, e := newMockEvents(t)
	set := registeredSet(t, lib, 0, SupportedEventTypes)

	err := e.Apply(ctx, strings.NewReader("# comment\n\nxid 0 13\ndbe 0\nbogus 1\nxid 0 x\nxid 9 1\n"))
	if err == nil || !strings.Contains(err.Error(), "line 5") || !strings.Contains(err.Error(), "line 6") || !strings.Contains(err.Error(), "line 7") {
		t.Errorf("Apply error = %v, want failures of lines 5, 6 and 7", err)
	}
	for _, want := range []uint64{nvml.EventTypeXidCriticalError, nvml.EventTypeDoubleBitEccError} {
		d, ret := set.Wait(10_000)
		if ret != nvml.SUCCESS || d.EventType != want {
			t.Fatalf("Wait = %+v, %v; want event type %d", d, nvml.ErrorString(ret), want)
		}
	}

	path := filepath.Join(t.TempDir(), "inject-events")
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.WatchFile(ctx, path, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	if err := os.WriteFile(path, []byte("lost 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ret := set.Wait(20_000); ret != nvml.ERROR_GPU_IS_LOST {
		t.Fatalf("Wait after writing \"lost 0\" = %v", nvml.ErrorString(ret))
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the injection file was not consumed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

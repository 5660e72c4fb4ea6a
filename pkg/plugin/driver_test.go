package plugin

import (
	"context"
	"testing"
	"time"

	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2/ktesting"
)

func TestWatchHealthStatusResendsAndStops(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	d := &driver{poolName: "node-a", devices: []string{"gpu-0", "gpu-1"}, healthResend: 20 * time.Millisecond}
	reports := make(chan kubeletplugin.DeviceHealthReport)
	done := make(chan error, 1)
	go func() { done <- d.WatchHealthStatus(ctx, reports) }()

	var last time.Time
	for i := 0; i < 3; i++ {
		select {
		case r := <-reports:
			if len(r.Devices) != 2 {
				t.Fatalf("report %d covers %d devices, want 2", i, len(r.Devices))
			}
			for _, dh := range r.Devices {
				if dh.PoolName != "node-a" || dh.Health != kubeletplugin.HealthStatusHealthy || !dh.LastUpdated.After(last) {
					t.Errorf("report %d: %+v", i, dh)
				}
			}
			last = r.Devices[0].LastUpdated
		case <-time.After(10 * time.Second):
			t.Fatalf("no report %d: the health stream must be re-sent periodically", i)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WatchHealthStatus returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchHealthStatus did not return after cancel while nobody reads")
	}
}

func TestPanicInOneClaimFailsOnlyThatClaim(t *testing.T) {
	var err error
	func() {
		defer recoverInto(&err)
		var m map[string]int
		m["boom"]++
	}()
	if err == nil {
		t.Fatal("panic was not turned into an error")
	}
}

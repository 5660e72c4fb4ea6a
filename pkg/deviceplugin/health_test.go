package deviceplugin

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	nvmlmock "github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"google.golang.org/grpc"
	"k8s.io/klog/v2/ktesting"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// listStream is a ListAndWatch server stream that hands every response to
// the test.
type listStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan *pluginapi.ListAndWatchResponse
}

func (s *listStream) Context() context.Context { return s.ctx }

func (s *listStream) Send(r *pluginapi.ListAndWatchResponse) error {
	select {
	case s.sent <- r:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// nextList waits for a list in which GPU i has health want, all others
// Healthy.
func nextList(t *testing.T, s *listStream, i int, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case r := <-s.sent:
			ok := len(r.Devices) == 8
			for k, d := range r.Devices {
				w := pluginapi.Healthy
				if k == i {
					w = want
				}
				ok = ok && d.Health == w
			}
			if ok {
				return
			}
		case <-timeout:
			t.Fatalf("no ListAndWatch update with GPU %d %s", i, want)
		}
	}
}

func TestListAndWatchFollowsTheHealthMonitor(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}})
	var gone sync.Map // UUIDs NVML does not see
	ev, err := mockmachine.InstallEvents(e.lib.(*nvmlmock.Server))
	if err != nil {
		t.Fatal(err)
	}
	mon, err := health.New(e.lib, e.inv.UUIDs(), health.Options{
		ProbeInterval: 50 * time.Millisecond, WaitTimeout: 20 * time.Millisecond,
		Probe: func(uuid string) nvml.Return {
			if _, ok := gone.Load(uuid); ok {
				return nvml.ERROR_GPU_IS_LOST
			}
			return nvml.SUCCESS
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	stream := &listStream{ctx: ctx, sent: make(chan *pluginapi.ListAndWatchResponse)}
	wg.Go(func() { mon.Run(ctx) })
	wg.Go(func() { p.WatchHealth(ctx, mon) })
	wg.Go(func() {
		if err := p.ListAndWatch(&pluginapi.Empty{}, stream); err != nil && ctx.Err() == nil {
			t.Errorf("ListAndWatch: %v", err)
		}
	})
	nextList(t, stream, -1, "")

	if !eventually(20*time.Second, func() bool { return ev.Listeners("4", nvml.EventTypeXidCriticalError) != 0 }) {
		t.Fatal("GPU 4 was never registered for events")
	}
	gone.Store(e.uuid(4), true)
	if _, err := ev.InjectXID("4", 79); err != nil {
		t.Fatal(err)
	}
	nextList(t, stream, 4, pluginapi.Unhealthy)
	gone.Delete(e.uuid(4))
	nextList(t, stream, 4, pluginapi.Healthy)

	// Monitoring down: no GPU can be vouched for.
	ev.SetWaitError(nvml.ERROR_UNKNOWN)
	timeout := time.After(20 * time.Second)
	for unhealthy := 0; unhealthy != 8; {
		select {
		case r := <-stream.sent:
			unhealthy = 0
			for _, d := range r.Devices {
				if d.Health == pluginapi.Unhealthy {
					unhealthy++
				}
			}
		case <-timeout:
			t.Fatal("the GPUs were not all Unhealthy while the monitor was down")
		}
	}
	ev.SetWaitError(nvml.SUCCESS)
	nextList(t, stream, -1, "")
}

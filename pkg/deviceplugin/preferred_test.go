package deviceplugin

import (
	"context"
	"fmt"
	"slices"
	"testing"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func preferred(t testing.TB, p *Plugin, available, must []string, size int) []string {
	t.Helper()
	resp, err := p.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: available, MustIncludeDeviceIDs: must, AllocationSize: int32(size)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.ContainerResponses[0].DeviceIDs
}

func TestPreferredAllocationGroupsByNUMA(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}, DeviceIDStrategy: IDStrategyIndex})
	// mock dgxh100: GPUs 0-3 on NUMA node 0, 4-7 on node 1.
	all := []string{"0", "1", "2", "3", "4", "5", "6", "7"}
	for _, tc := range []struct {
		available, must []string
		size            int
		want            []string
	}{
		{all, nil, 4, []string{"0", "1", "2", "3"}},
		{all, []string{"6"}, 4, []string{"4", "5", "6", "7"}},
		{all, []string{"5"}, 2, []string{"4", "5"}},
		{[]string{"0", "4", "5", "6"}, nil, 2, []string{"4", "5"}},
		{[]string{"0", "1", "4", "5", "6"}, nil, 3, []string{"4", "5", "6"}},
		{[]string{"0", "1", "4", "5", "6"}, []string{"0"}, 3, []string{"0", "1", "4"}},
		{[]string{"0", "1", "4", "5", "6"}, []string{"0", "6"}, 2, []string{"0", "6"}},
		{all, nil, 8, all},
		{[]string{"3", "7"}, nil, 1, []string{"3"}},
	} {
		got := preferred(t, p, tc.available, tc.must, tc.size)
		if !slices.Equal(got, tc.want) {
			t.Errorf("available %v, must %v, size %d: got %v, want %v", tc.available, tc.must, tc.size, got, tc.want)
		}
	}
}

func TestPreferredAllocationInvalid(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}, DeviceIDStrategy: IDStrategyIndex})
	for _, tc := range []struct {
		available, must []string
		size            int
	}{
		{[]string{"0", "1"}, nil, 3},
		{[]string{"0", "1"}, []string{"0", "1"}, 1},
		{[]string{"0", "1"}, []string{"2"}, 1},
		{[]string{"0", "9"}, nil, 1},
	} {
		_, err := p.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{
			ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: tc.available, MustIncludeDeviceIDs: tc.must, AllocationSize: int32(tc.size)}},
		})
		if err == nil {
			t.Errorf("available %v, must %v, size %d: no error", tc.available, tc.must, tc.size)
		}
	}
}

func TestPreferredAllocationSpreadsReplicas(t *testing.T) {
	e := newEnv(t, false)
	p := e.plugin(t, Config{DeviceListStrategies: []string{StrategyEnvvar}, DeviceIDStrategy: IDStrategyIndex, Replicas: 2})
	r := func(gpu, replica int) string { return fmt.Sprintf("%d::%d", gpu, replica) }
	var all []string
	for g := range 8 {
		for k := range 2 {
			all = append(all, r(g, k))
		}
	}
	if got, want := preferred(t, p, all, nil, 4), []string{r(0, 0), r(1, 0), r(2, 0), r(3, 0)}; !slices.Equal(got, want) {
		t.Errorf("all free: got %v, want %v", got, want)
	}
	// GPU 0 fully and GPU 1 half in use elsewhere: the free GPUs come first.
	var avail []string
	for _, id := range all {
		if id != r(0, 0) && id != r(0, 1) && id != r(1, 0) {
			avail = append(avail, id)
		}
	}
	if got, want := preferred(t, p, avail, nil, 3), []string{r(2, 0), r(3, 0), r(4, 0)}; !slices.Equal(got, want) {
		t.Errorf("some in use: got %v, want %v", got, want)
	}
	// Must-include replicas count as used.
	if got, want := preferred(t, p, avail, []string{r(2, 1)}, 3), []string{r(2, 1), r(3, 0), r(4, 0)}; !slices.Equal(got, want) {
		t.Errorf("must-include: got %v, want %v", got, want)
	}
	// More replicas than GPUs: every GPU gets one before any gets two; the
	// half-used GPU 1 last.
	got := preferred(t, p, avail, nil, 8)
	want := []string{r(2, 0), r(3, 0), r(4, 0), r(5, 0), r(6, 0), r(7, 0), r(1, 1), r(2, 1)}
	if !slices.Equal(got, want) {
		t.Errorf("wrap-around: got %v, want %v", got, want)
	}
}

func BenchmarkGetPreferredAllocation(b *testing.B) {
	e := newEnv(b, false)
	p := e.plugin(b, Config{DeviceListStrategies: []string{StrategyEnvvar}})
	var all []string
	for i := range e.inv.Devices {
		all = append(all, e.uuid(i))
	}
	req := &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: all, AllocationSize: 4}},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.GetPreferredAllocation(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetPreferredAllocationReplicas(b *testing.B) {
	e := newEnv(b, false)
	p := e.plugin(b, Config{DeviceListStrategies: []string{StrategyEnvvar}, Replicas: 4})
	list, _ := p.deviceList()
	var all []string
	for _, d := range list.Devices {
		all = append(all, d.ID)
	}
	req := &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{{AvailableDeviceIDs: all, AllocationSize: 4}},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.GetPreferredAllocation(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

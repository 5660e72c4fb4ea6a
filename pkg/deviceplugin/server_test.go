package deviceplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2/ktesting"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fakeKubelet is the kubelet's Registration service on kubelet.sock.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	srv  *grpc.Server
	reqs chan *pluginapi.RegisterRequest
}

func startFakeKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{srv: grpc.NewServer(), reqs: make(chan *pluginapi.RegisterRequest, 10)}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(lis) }()
	t.Cleanup(k.srv.Stop)
	return k
}

func (k *fakeKubelet) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.reqs <- req
	return &pluginapi.Empty{}, nil
}

func (k *fakeKubelet) expectRegistration(t *testing.T, within time.Duration, want *pluginapi.RegisterRequest) {
	t.Helper()
	select {
	case req := <-k.reqs:
		got := &pluginapi.RegisterRequest{Version: req.Version, Endpoint: req.Endpoint, ResourceName: req.ResourceName, Options: req.Options}
		if got.Options != nil {
			got.Options = &pluginapi.DevicePluginOptions{PreStartRequired: got.Options.PreStartRequired, GetPreferredAllocationAvailable: got.Options.GetPreferredAllocationAvailable}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("registered %v, want %v", got, want)
		}
	case <-time.After(within):
		t.Fatalf("no registration within %v", within)
	}
}

// eventually polls cond until it holds (true) or timeout passes (false).
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// waitRegistrations waits until the plugin has seen n successful
// registrations (the fake kubelet gets the request before the plugin gets
// the answer).
func waitRegistrations(t *testing.T, p *Plugin, n int) {
	t.Helper()
	if !eventually(5*time.Second, func() bool { return p.Registrations() >= n }) {
		t.Fatalf("%d registrations, want %d", p.Registrations(), n)
	}
}

// waitChecks waits until the started plugin has checked its socket and
// kubelet.sock n times in all (Start checks once itself).
func waitChecks(t *testing.T, p *Plugin, n int) {
	t.Helper()
	checks := func() int {
		p.srv.mu.Lock()
		defer p.srv.mu.Unlock()
		return p.srv.checks
	}
	if !eventually(5*time.Second, func() bool { return checks() >= n }) {
		t.Fatalf("%d checks, want %d", checks(), n)
	}
}

// dialPlugin connects to the plugin's socket as the kubelet does.
func dialPlugin(t *testing.T, socket string) pluginapi.DevicePluginClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}

func recvList(t *testing.T, stream pluginapi.DevicePlugin_ListAndWatchClient) *pluginapi.ListAndWatchResponse {
	t.Helper()
	ch := make(chan *pluginapi.ListAndWatchResponse, 1)
	errc := make(chan error, 1)
	go func() {
		r, err := stream.Recv()
		if err != nil {
			errc <- err
			return
		}
		ch <- r
	}()
	select {
	case r := <-ch:
		return r
	case err := <-errc:
		t.Fatalf("ListAndWatch: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no ListAndWatch update within 5s")
	}
	return nil
}

func TestIntegrationRegistrationAndReregistration(t *testing.T) {
	e := newEnv(t, false)
	dir := t.TempDir()
	kubelet := startFakeKubelet(t, dir)
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p, err := New(ctx, Config{DevicePluginPath: dir, DeviceListStrategies: []string{StrategyEnvvar}}, e.inv, e.lib, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	want := &pluginapi.RegisterRequest{
		Version: "v1beta1", Endpoint: "gpudra-nvidia-gpu.sock", ResourceName: "nvidia.com/gpu",
		Options: &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	}
	kubelet.expectRegistration(t, 5*time.Second, want)
	waitRegistrations(t, p, 1)

	// The kubelet's calls on the plugin's socket.
	socket := filepath.Join(dir, "gpudra-nvidia-gpu.sock")
	client := dialPlugin(t, socket)
	opts, err := client.GetDevicePluginOptions(ctx, &pluginapi.Empty{})
	if err != nil || !opts.GetPreferredAllocationAvailable || opts.PreStartRequired {
		t.Fatalf("GetDevicePluginOptions: %v, %v", opts, err)
	}
	streamCtx, streamCancel := context.WithCancel(ctx)
	defer streamCancel()
	stream, err := client.ListAndWatch(streamCtx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	list := recvList(t, stream)
	if len(list.Devices) != 8 {
		t.Fatalf("%d devices listed, want 8", len(list.Devices))
	}
	for _, d := range list.Devices {
		if d.Health != pluginapi.Healthy || d.Topology == nil || len(d.Topology.Nodes) != 1 {
			t.Errorf("device %v", d)
		}
	}
	// A health change reaches the open stream.
	if err := p.SetHealth(e.uuid(3), false); err != nil {
		t.Fatal(err)
	}
	list = recvList(t, stream)
	if list.Devices[3].Health != pluginapi.Unhealthy || list.Devices[2].Health != pluginapi.Healthy {
		t.Errorf("after SetHealth: %v", list.Devices)
	}
	resp, err := client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{e.uuid(0), e.uuid(1)}}, {DevicesIds: []string{e.uuid(2)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 2 || resp.ContainerResponses[0].Envs["NVIDIA_VISIBLE_DEVICES"] != e.uuid(0)+","+e.uuid(1) ||
		resp.ContainerResponses[1].Envs["NVIDIA_VISIBLE_DEVICES"] != e.uuid(2) {
		t.Errorf("Allocate: %v", resp)
	}
	pref, err := client.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: []string{e.uuid(0), e.uuid(5), e.uuid(6)}, AllocationSize: 2},
	}})
	if err != nil || !reflect.DeepEqual(pref.ContainerResponses[0].DeviceIDs, []string{e.uuid(5), e.uuid(6)}) {
		t.Errorf("GetPreferredAllocation: %v, %v", pref, err)
	}
	if _, err := client.PreStartContainer(ctx, &pluginapi.PreStartContainerRequest{}); err != nil {
		t.Errorf("PreStartContainer: %v", err)
	}

	// Kubelet restart: kubelet.sock is re-created by a new kubelet. The
	// plugin tells kubelet.sock incarnations apart by inode and change
	// time; a file system reuses a freed inode at once, and with coarse
	// timestamps an immediate re-creation could look like the same file. A
	// second link keeps the old inode, so the new socket gets another one.
	kubeletSock := filepath.Join(dir, "kubelet.sock")
	if err := os.Link(kubeletSock, filepath.Join(t.TempDir(), "old-kubelet.sock")); err != nil {
		t.Fatal(err)
	}
	kubelet.srv.Stop()
	_ = os.Remove(kubeletSock)
	kubelet = startFakeKubelet(t, dir)
	kubelet.expectRegistration(t, 5*time.Second, want)
	waitRegistrations(t, p, 2)
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("plugin socket after kubelet restart: %v", err)
	}

	// The plugin's own socket removed (as a restarting kubelet does).
	if err := os.Remove(socket); err != nil {
		t.Fatal(err)
	}
	kubelet.expectRegistration(t, 5*time.Second, want)
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("plugin socket not re-created: %v", err)
	}
	// The new server answers, with the health it had.
	stream, err = dialPlugin(t, socket).ListAndWatch(streamCtx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if list := recvList(t, stream); len(list.Devices) != 8 || list.Devices[3].Health != pluginapi.Unhealthy {
		t.Errorf("ListAndWatch after re-creation: %v", list.Devices)
	}
	waitRegistrations(t, p, 3)
	select {
	case req := <-kubelet.reqs:
		t.Errorf("unexpected extra registration %v", req)
	default:
	}

	// Stop removes the socket.
	p.Stop()
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("socket after Stop: %v", err)
	}
}

func TestStartWaitsForKubelet(t *testing.T) {
	e := newEnv(t, false)
	dir := t.TempDir()
	_, ctx := ktesting.NewTestContext(t)
	p, err := New(ctx, Config{DevicePluginPath: dir, DeviceListStrategies: []string{StrategyEnvvar}, Replicas: 2, RenameResource: "nvidia.com/gpu.shared"}, e.inv, e.lib, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	// Start's own check and a periodic one, both without kubelet.sock.
	waitChecks(t, p, 2)
	kubelet := startFakeKubelet(t, dir)
	kubelet.expectRegistration(t, 5*time.Second, &pluginapi.RegisterRequest{
		Version: "v1beta1", Endpoint: "gpudra-nvidia-gpu.sock", ResourceName: "nvidia.com/gpu.shared",
		Options: &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	waitRegistrations(t, p, 1)
}

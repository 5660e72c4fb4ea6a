package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/plugin"
)

// newStoppedHarness prepares what newHarness starts: a mock DGX H100's
// driver files, a fake API server holding the node, and the plugin's
// configuration; tests that start the plugin themselves use it directly.
func newStoppedHarness(t *testing.T) *harness {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	root := t.TempDir()
	// The mock driver's files, so that the specs name paths that exist.
	_, inv := mockmachinetest.Machine(t, "dgxh100", nodeName)
	driverRoot := filepath.Join(root, "driver")
	mockmachinetest.Host(t, driverRoot, inv)
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, UID: "node-uid"}})
	h := &harness{t: t, ctx: ctx, client: client, cfg: plugin.Config{
		NodeName:   nodeName,
		DriverName: driverName,
		KubeClient: client,
		Node:       node.Flags{NVML: "mock:dgxh100", DriverRoot: driverRoot, CDIRoot: filepath.Join(root, "cdi"), HookPath: "/usr/bin/nvidia-cdi-hook"},
		Kubelet:    plugin.KubeletConfig{RegistrarDir: filepath.Join(root, "plugins_registry"), PluginsDir: filepath.Join(root, "plugins")},
		Health:     plugin.HealthConfig{ResendInterval: 200 * time.Millisecond},
	}}
	if err := os.MkdirAll(h.cfg.Kubelet.RegistrarDir, 0o750); err != nil {
		t.Fatal(err)
	}
	return h
}

// errAPIDown is what client-go returns while the API server does not answer.
var errAPIDown = errors.New(`Get "https://10.96.0.1:443/apis/resource.k8s.io/v1/resourceslices": dial tcp 10.96.0.1:443: connect: connection refused`)

// TestStartWaitsForTheAPIServer: the API server is unreachable when the
// plugin starts (every request fails as a refused connection does). The
// plugin must neither exit nor give up: it serves the kubelet, keeps
// retrying, and publishes its ResourceSlice once the API server answers.
func TestStartWaitsForTheAPIServer(t *testing.T) {
	h := newStoppedHarness(t)
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int32
	h.client.PrependReactor("*", "*", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		if down.Load() {
			refused.Add(1)
			return true, nil, errAPIDown
		}
		return false, nil, nil
	})
	h.client.PrependWatchReactor("*", func(k8stesting.Action) (bool, watch.Interface, error) {
		if down.Load() {
			refused.Add(1)
			return true, nil, errAPIDown
		}
		return false, nil, nil
	})

	type started struct {
		p   *plugin.Plugin
		err error
	}
	done := make(chan started, 1)
	ctx, cancel := context.WithCancel(h.ctx)
	go func() {
		p, err := plugin.Start(ctx, h.cfg)
		done <- started{p, err}
	}()
	var s started
	returned := false
	t.Cleanup(func() {
		// A Start still waiting for the API server returns once its
		// context is done.
		cancel()
		if !returned {
			select {
			case s = <-done:
			case <-time.After(60 * time.Second):
				buf := make([]byte, 1<<20)
				t.Errorf("Start did not return within 60s of its context's end; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
				return
			}
		}
		if s.p != nil {
			s.p.Stop()
		}
	})
	// checkStart notes Start's return: returning is fine (publishing goes
	// on in the background), failing is not.
	checkStart := func() {
		if returned {
			return
		}
		select {
		case s = <-done:
			returned = true
			if s.err != nil {
				t.Fatalf("Start failed while the API server was down: %v", s.err)
			}
		default:
		}
	}

	// While the API server is down: no exit, requests keep being retried,
	// and the kubelet can already register the plugin.
	deadline := time.Now().Add(20 * time.Second)
	for refused.Load() < 3 {
		checkStart()
		if time.Now().After(deadline) {
			t.Fatalf("the plugin did not retry the API server: %d requests", refused.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	reg := registerapi.NewRegistrationClient(h.dial(filepath.Join(h.cfg.Kubelet.RegistrarDir, driverName+"-reg.sock")))
	if _, err := reg.GetInfo(h.ctx, &registerapi.InfoRequest{}); err != nil {
		t.Errorf("registration socket while the API server is down: %v", err)
	}
	checkStart()
	if returned {
		select {
		case <-s.p.Done():
			t.Fatalf("plugin stopped while the API server was down: %v", s.p.Err())
		default:
		}
	}
	if slices, _ := h.client.Tracker().List(resourceapi.SchemeGroupVersion.WithResource("resourceslices"), resourceapi.SchemeGroupVersion.WithKind("ResourceSlice"), ""); slices != nil {
		if l, ok := slices.(*resourceapi.ResourceSliceList); ok && len(l.Items) != 0 {
			t.Fatalf("a ResourceSlice was written while the API server was down")
		}
	}

	down.Store(false)
	if !returned {
		select {
		case s = <-done:
			returned = true
		case <-time.After(60 * time.Second):
			t.Fatal("Start did not return within 60s after the API server came back")
		}
	}
	if s.err != nil {
		t.Fatalf("Start after the API server came back: %v", s.err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		slices, err := h.client.ResourceV1().ResourceSlices().List(h.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(slices.Items) == 1 && len(slices.Items[0].Spec.Devices) == 8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ResourceSlice 30s after the API server came back: %d slices", len(slices.Items))
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-s.p.Done():
		t.Fatalf("plugin stopped: %v", s.p.Err())
	default:
	}
}

// TestKubeletRestartReRegistersTheDRAPlugin: a restarted kubelet finds the
// registration socket (the kubelet does not delete it) and registers the
// plugin again; a failed registration does not stop the plugin; and the new
// kubelet's prepares work. (The classic device plugin's re-registration
// within 5 s is TestIntegrationRegistrationAndReregistration in
// pkg/deviceplugin.)
func TestKubeletRestartReRegistersTheDRAPlugin(t *testing.T) {
	h := newHarness(t)
	regSock := filepath.Join(h.cfg.Kubelet.RegistrarDir, driverName+"-reg.sock")
	register := func(registered bool) error {
		// Each "kubelet" has its own connection, as a new process does.
		conn := h.dial(regSock)
		defer conn.Close()
		reg := registerapi.NewRegistrationClient(conn)
		info, err := reg.GetInfo(h.ctx, &registerapi.InfoRequest{})
		if err != nil {
			return err
		}
		if info.Name != driverName || info.Type != registerapi.DRAPlugin {
			return fmt.Errorf("registration info %+v", info)
		}
		status := &registerapi.RegistrationStatus{PluginRegistered: registered}
		if !registered {
			status.Error = "kubelet restarting"
		}
		_, err = reg.NotifyRegistrationStatus(h.ctx, status)
		return err
	}
	if err := register(true); err != nil {
		t.Fatalf("first kubelet: %v", err)
	}
	// The kubelet dies in the middle of a registration and reports failure.
	if err := register(false); err == nil {
		t.Error("a failed registration was acknowledged as a success")
	}
	// Restarted kubelet.
	if err := register(true); err != nil {
		t.Fatalf("restarted kubelet: %v", err)
	}
	select {
	case <-h.plugin.Done():
		t.Fatalf("plugin stopped across kubelet restarts: %v", h.plugin.Err())
	default:
	}
	c := h.createClaim("after-restart", "gpu-3")
	resp, err := h.draClient().NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(c)}})
	if err != nil || resp.Claims[string(c.UID)].Error != "" {
		t.Fatalf("prepare from the restarted kubelet: %v %+v", err, resp)
	}
}

// TestCommandExitsNonZeroWhenNVMLFails builds gpu-kubelet-plugin and starts
// it on this machine (no NVIDIA driver) with the real NVML backend: it must
// exit at once with status 1 and a message that names NVML and the fix,
// leave no socket behind, and not crash-loop silently.
func TestCommandExitsNonZeroWhenNVMLFails(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	root := t.TempDir()
	bin := filepath.Join(root, "gpu-kubelet-plugin")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race") // reuses the test build's compiled packages
	}
	build := exec.Command("go", append(args, "github.com/gpudra/gpudra/cmd/gpu-kubelet-plugin")...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// A kubeconfig for an API server that is not there: the NVML failure
	// must come first and alone.
	kubeconfig := filepath.Join(root, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	registrar := filepath.Join(root, "registry")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--node-name=node-a", "--nvml=real", "--driver-root="+filepath.Join(root, "no-driver"),
		"--cdi-root="+filepath.Join(root, "cdi"), "--kubelet-registrar-directory-path="+registrar,
		"--kubelet-plugins-directory-path="+filepath.Join(root, "plugins"), "--kubeconfig="+kubeconfig, "--metrics-address=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v (want status 1)\n%s", err, out)
	}
	for _, want := range []string{"NVML", "mock"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not mention %q:\n%s", want, out)
		}
	}
	if entries, _ := os.ReadDir(registrar); len(entries) != 0 {
		t.Errorf("a failed start left %v in the registrar directory", names(entries))
	}
}

// timeSlicingConfig gives a claim settings of its own, so that its prepare
// writes a claim spec.
const timeSlicingConfig = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing"}}`

// TestPrepareFailsCleanlyWhenTheCDIDirIsReadOnly: a read-only CDI
// directory (a read-only bind mount; as root, file modes do not stop
// writes) makes the prepares of claims that need a spec of their own fail
// with an error that names the claim and the directory, leaves no
// temporary file and no checkpoint record, and the plugin recovers once the
// directory is writable again. Exclusive claims without settings of their
// own write nothing there and are prepared all along.
func TestPrepareFailsCleanlyWhenTheCDIDirIsReadOnly(t *testing.T) {
	h := newHarness(t)
	kept := h.createClaim("kept", "gpu-0")
	prepare(t, h, kept, "")

	dir := h.cfg.Node.CDIRoot
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount (needs root and CAP_SYS_ADMIN): %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(dir, 0); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount read-only: %v", err)
	}
	c := h.store(withConfig(allocated("ro", "uid-ro", "gpu-1"), driverName, timeSlicingConfig))
	prepare(t, h, c, "read-only file system")
	assertNothingLeft(t, h, c.UID, "kept", "k8s.gpu.nvidia.com-driver.json", "k8s.gpu.nvidia.com-device.json")
	// The claim prepared before still serves its pods, and an exclusive
	// claim is prepared.
	prepare(t, h, kept, "")
	prepare(t, h, h.createClaim("plain", "gpu-2"), "")

	unmount()
	prepare(t, h, c, "")
}

// TestPrepareFailsCleanlyWhenTheCDIDirIsGone: the CDI path is no longer a
// directory (replaced by a file); the variant of a read-only directory that
// needs no mount privileges.
func TestPrepareFailsCleanlyWhenTheCDIDirIsGone(t *testing.T) {
	h := newHarness(t)
	dir := h.cfg.Node.CDIRoot
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := h.createClaim("gone", "gpu-1")
	prepare(t, h, c, "not a directory")
	if recs, _ := os.ReadDir(filepath.Join(h.cfg.PluginDataDir(), "claims")); len(recs) != 0 {
		t.Errorf("checkpoint records after a failed prepare: %v", names(recs))
	}
}

// TestPrepareFailsCleanlyWhenTheCDIDirIsFull mounts a tiny tmpfs as the CDI
// directory and fills it.
func TestPrepareFailsCleanlyWhenTheCDIDirIsFull(t *testing.T) {
	h := newStoppedHarness(t)
	dir := h.cfg.Node.CDIRoot
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	h.start()
	kept := h.createClaim("kept", "gpu-0")
	prepare(t, h, kept, "")

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	_ = f.Close()
	c := h.store(withConfig(allocated("full", "uid-full", "gpu-1"), driverName, timeSlicingConfig))
	prepare(t, h, c, "no space left on device")
	assertNothingLeft(t, h, c.UID, "kept", "filler", "k8s.gpu.nvidia.com-driver.json", "k8s.gpu.nvidia.com-device.json")
	prepare(t, h, kept, "")

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	prepare(t, h, c, "")
}

// prepare prepares one claim through the DRA socket and checks the outcome:
// wantErr "" means success; otherwise the error must name the claim, the CDI
// directory and contain wantErr.
func prepare(t *testing.T, h *harness, c *resourceapi.ResourceClaim, wantErr string) {
	t.Helper()
	resp, err := h.draClient().NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{{Namespace: c.GetNamespace(), Name: c.GetName(), Uid: string(c.GetUID())}}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.Claims[string(c.GetUID())]
	if r == nil {
		t.Fatalf("no result for claim %s", c.GetName())
	}
	if wantErr == "" {
		if r.Error != "" || len(r.Devices) == 0 {
			t.Fatalf("prepare %s: %+v", c.GetName(), r)
		}
		return
	}
	for _, w := range []string{"default/" + c.GetName(), h.cfg.Node.CDIRoot, wantErr} {
		if !strings.Contains(r.Error, w) {
			t.Errorf("prepare %s: error %q does not say %q", c.GetName(), r.Error, w)
		}
	}
}

// assertNothingLeft checks that the failed claim left no spec, temporary
// file or record: only the files named in keep (claim names of prepared
// claims, or plain file names) remain in the CDI directory.
func assertNothingLeft(t *testing.T, h *harness, failed types.UID, keep ...string) {
	t.Helper()
	entries, err := os.ReadDir(h.cfg.Node.CDIRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			// The staging directory: no temporary file may stay there.
			staged, err := os.ReadDir(filepath.Join(h.cfg.Node.CDIRoot, e.Name()))
			if err != nil || len(staged) != 0 {
				t.Errorf("left in the CDI staging directory after the failed prepare: %v %v", names(staged), err)
			}
			continue
		}
		ok := false
		for _, k := range keep {
			if e.Name() == k || strings.Contains(e.Name(), "uid-"+k) {
				ok = true
			}
		}
		if !ok || durable.IsTemp(e.Name()) {
			t.Errorf("left in the CDI directory after the failed prepare: %s", e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(h.cfg.PluginDataDir(), "claims", string(failed)+".json")); !os.IsNotExist(err) {
		t.Errorf("checkpoint record of the failed claim %s: %v", failed, err)
	}
}

package mps

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/sharing"
)

type fixture struct {
	client  *fake.Clientset
	kubelet *kubelet
	opts    Options
	mgr     *Manager
	ctx     context.Context
}

func newFixture(t *testing.T, ready bool) *fixture {
	t.Helper()
	client := fake.NewClientset()
	f := &fixture{client: client, kubelet: startKubelet(t, client, ready)}
	f.opts = Options{
		Client: client, Namespace: testNamespace, NodeName: testNode, Image: "localhost/gpudra/gpudra:dev",
		BaseDir: t.TempDir(), Mock: true,
		// Generous: the fake kubelet marks pods ready within milliseconds.
		ReadyTimeout: 20 * time.Second, DeleteTimeout: 20 * time.Second, PollInterval: 5 * time.Millisecond,
	}
	f.mgr = f.newManager(t)
	_, ctx := ktesting.NewTestContext(t)
	f.ctx = ctx
	return f
}

func (f *fixture) newManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *fixture) pod(t *testing.T) (*corev1.Pod, bool) {
	t.Helper()
	p, err := f.client.CoreV1().Pods(testNamespace).Get(context.Background(), PodName(testClaimUID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return p, true
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// twoGPUClaim is a claim of two GPUs of the mock machine sharing one MPS
// config with all limits set.
func twoGPUClaim(t *testing.T) (sharing.Claim, []string) {
	inv := machine(t)
	cfg := &configapi.MpsConfig{
		DefaultActiveThreadPercentage:     ptr(50),
		DefaultPinnedDeviceMemoryLimit:    quantity("10Gi"),
		DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"1": *quantity("4Gi")},
	}
	d0 := gpuDevice(inv.Devices[0], mpsSharing(cfg))
	d1 := gpuDevice(inv.Devices[1], mpsSharing(cfg.DeepCopy()))
	return claimOf(d0, d1), []string{inv.Devices[0].UUID, inv.Devices[1].UUID}
}

func TestApplyCreatesPodAndDirsAndReturnsEdits(t *testing.T) {
	f := newFixture(t, true)
	claim, uuids := twoGPUClaim(t)

	edits, err := f.mgr.Apply(f.ctx, claim)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := f.pod(t)
	if !ok {
		t.Fatal("no daemon pod after Apply")
	}
	if p.Spec.NodeName != testNode || p.Labels[LabelClaimUID] != testClaimUID || p.Namespace != testNamespace {
		t.Errorf("pod node %q, claim label %q, namespace %q", p.Spec.NodeName, p.Labels[LabelClaimUID], p.Namespace)
	}
	ctr := p.Spec.Containers[0]
	if got := envValue(ctr, "CUDA_VISIBLE_DEVICES"); got != strings.Join(uuids, ",") {
		t.Errorf("CUDA_VISIBLE_DEVICES = %q, want %q", got, strings.Join(uuids, ","))
	}
	wantCmd := []string{mockDaemonBinary, "--active-thread-percentage=50",
		"--pinned-device-mem-limit=" + uuids[0] + "=10240M", "--pinned-device-mem-limit=" + uuids[1] + "=4096M"}
	if !slices.Equal(ctr.Command, wantCmd) {
		t.Errorf("command = %q, want %q", ctr.Command, wantCmd)
	}

	root := filepath.Join(f.opts.BaseDir, testClaimUID)
	for _, sub := range []string{"pipe", "log", "shm"} {
		if !exists(filepath.Join(root, sub)) {
			t.Errorf("directory %s/%s not created", root, sub)
		}
	}
	if len(edits.Claim.Env) != 0 || len(edits.Claim.Mounts) != 0 {
		t.Errorf("claim-wide edits %+v, want none (edits are per MPS device)", edits.Claim)
	}
	for _, name := range []string{"gpu-0", "gpu-1"} {
		e, ok := edits.Devices[name]
		if !ok {
			t.Fatalf("no edits for device %s: %v", name, edits.Devices)
		}
		if !slices.Contains(e.Env, "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps") || !slices.Contains(e.Env, "CUDA_MPS_LOG_DIRECTORY=/var/log/nvidia-mps") {
			t.Errorf("%s env = %v", name, e.Env)
		}
		mounts := map[string]string{}
		for _, m := range e.Mounts {
			mounts[m.ContainerPath] = m.HostPath
		}
		want := map[string]string{
			"/tmp/nvidia-mps":     filepath.Join(root, "pipe"),
			"/var/log/nvidia-mps": filepath.Join(root, "log"),
			"/dev/shm":            filepath.Join(root, "shm"),
		}
		if !reflect.DeepEqual(mounts, want) {
			t.Errorf("%s mounts = %v, want %v", name, mounts, want)
		}
	}
}

func TestApplyTwiceKeepsOnePodAndSameEdits(t *testing.T) {
	f := newFixture(t, true)
	claim, _ := twoGPUClaim(t)
	first, err := f.mgr.Apply(f.ctx, claim)
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.mgr.Apply(f.ctx, claim)
	if err != nil {
		t.Fatal(err)
	}
	if n := creates(f.client); n != 1 {
		t.Errorf("%d pod creations for two Applies, want 1", n)
	}
	if !reflect.DeepEqual(first, second) {
		t.Errorf("second Apply returned other edits:\n%+v\n%+v", first, second)
	}
}

func TestUndoRemovesPodAndDirs(t *testing.T) {
	f := newFixture(t, true)
	claim, _ := twoGPUClaim(t)
	if _, err := f.mgr.Apply(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // idempotent
		if err := f.mgr.Undo(f.ctx, claim); err != nil {
			t.Fatalf("Undo #%d: %v", i+1, err)
		}
		if _, ok := f.pod(t); ok {
			t.Errorf("daemon pod still there after Undo #%d", i+1)
		}
		if exists(filepath.Join(f.opts.BaseDir, testClaimUID)) {
			t.Errorf("claim directory still there after Undo #%d", i+1)
		}
	}
	if entries, _ := os.ReadDir(f.opts.BaseDir); len(entries) != 0 {
		t.Errorf("base directory not empty after Undo: %v", entries)
	}
}

func TestRestartedManagerKeepsDaemonAndUndoes(t *testing.T) {
	f := newFixture(t, true)
	claim, _ := twoGPUClaim(t)
	before, err := f.mgr.Apply(f.ctx, claim)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := f.pod(t)

	// A restarted plugin has a new Manager and the claim from its checkpoint.
	restarted := f.newManager(t)
	after, err := restarted.Apply(f.ctx, claim)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := f.pod(t)
	if creates(f.client) != 1 || p1.UID != p2.UID {
		t.Errorf("the restarted plugin replaced the running daemon (%d creations): its workloads would lose it", creates(f.client))
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("edits changed across the restart:\n%+v\n%+v", before, after)
	}
	// An upgrade that changes the image keeps the daemon too.
	f.opts.Image = "localhost/gpudra/gpudra:next"
	if _, err := f.newManager(t).Apply(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	if creates(f.client) != 1 {
		t.Error("a new image replaced the running daemon of a prepared claim")
	}

	if err := f.newManager(t).Undo(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.pod(t); ok {
		t.Error("daemon pod still there after Undo by a restarted manager")
	}
	if exists(filepath.Join(f.opts.BaseDir, testClaimUID)) {
		t.Error("claim directory still there after Undo by a restarted manager")
	}
}

func TestUndoAfterApplyTimedOut(t *testing.T) {
	f := newFixture(t, false) // the daemon never becomes ready
	f.opts.ReadyTimeout = 200 * time.Millisecond
	f.mgr = f.newManager(t)
	claim, _ := twoGPUClaim(t)

	_, err := f.mgr.Apply(f.ctx, claim)
	if err == nil {
		t.Fatal("Apply succeeded although the daemon never became ready")
	}
	for _, want := range []string{claim.Ref(), PodName(testClaimUID), "not ready after 200ms", "kubectl -n gpudra-system logs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, ok := f.pod(t); !ok {
		t.Fatal("test premise: the pod of the failed Apply should exist")
	}
	if err := f.mgr.Undo(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.pod(t); ok {
		t.Error("daemon pod left behind by Undo after a failed Apply")
	}
	if exists(filepath.Join(f.opts.BaseDir, testClaimUID)) {
		t.Error("claim directory left behind by Undo after a failed Apply")
	}
	if f.kubelet.marked.Load() != 0 {
		t.Error("the fake kubelet marked a pod ready although told not to")
	}
}

func TestApplyFailsFastWhenDaemonPodStops(t *testing.T) {
	f := newFixture(t, false)
	claim, _ := twoGPUClaim(t)
	// The kubelet reports the daemon container as failed.
	go func() {
		for {
			p, err := f.client.CoreV1().Pods(testNamespace).Get(context.Background(), PodName(testClaimUID), metav1.GetOptions{})
			if err == nil {
				p.Status.Phase = corev1.PodFailed
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: containerName, State: corev1.ContainerState{
					Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 1}}}}
				if _, err := f.client.CoreV1().Pods(testNamespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err == nil {
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	start := time.Now()
	_, err := f.mgr.Apply(f.ctx, claim)
	if err == nil || !strings.Contains(err.Error(), "stopped (phase Failed)") || !strings.Contains(err.Error(), "exit code 1") {
		t.Fatalf("Apply error = %v, want one saying the pod stopped with exit code 1", err)
	}
	if time.Since(start) >= f.opts.ReadyTimeout {
		t.Error("Apply waited for the whole timeout instead of failing when the pod stopped")
	}
	// A new Apply replaces the failed pod.
	f.kubelet.ready.Store(true)
	if _, err := f.mgr.Apply(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	if n := creates(f.client); n != 2 {
		t.Errorf("%d pod creations, want 2 (the failed pod replaced)", n)
	}
}

func TestApplyReplacesDaemonWithOtherLimits(t *testing.T) {
	f := newFixture(t, true)
	claim, _ := twoGPUClaim(t)
	if _, err := f.mgr.Apply(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	p1, _ := f.pod(t)
	for i := range claim.Devices {
		claim.Devices[i].MpsConfig().DefaultActiveThreadPercentage = ptr(20)
	}
	if _, err := f.mgr.Apply(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	p2, _ := f.pod(t)
	if p1.Annotations[annotationHash] == p2.Annotations[annotationHash] || creates(f.client) != 2 {
		t.Errorf("daemon not replaced for new limits (hash %s -> %s, %d creations)", p1.Annotations[annotationHash], p2.Annotations[annotationHash], creates(f.client))
	}
	if !slices.Contains(p2.Spec.Containers[0].Command, "--active-thread-percentage=20") {
		t.Errorf("new pod command %q lacks the new percentage", p2.Spec.Containers[0].Command)
	}
}

func TestClaimsWithoutMPSCostNothing(t *testing.T) {
	f := newFixture(t, false) // an idle fake kubelet makes no API calls
	inv := machine(t)
	claim := claimOf(
		gpuDevice(inv.Devices[0], nil),
		gpuDevice(inv.Devices[1], &configapi.GpuSharing{Strategy: configapi.TimeSlicingStrategy}),
	)
	edits, err := f.mgr.Apply(f.ctx, claim)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(edits, sharing.Edits{}) {
		t.Errorf("edits for a claim without MPS: %+v", edits)
	}
	if err := f.mgr.Undo(f.ctx, claim); err != nil {
		t.Fatal(err)
	}
	for _, a := range f.client.Actions() {
		t.Errorf("API call for a claim without MPS: %s %s", a.GetVerb(), a.GetResource().Resource)
	}
	if entries, _ := os.ReadDir(f.opts.BaseDir); len(entries) != 0 {
		t.Errorf("directories created for a claim without MPS: %v", entries)
	}
}

func TestApplyStopsWhenContextEnds(t *testing.T) {
	f := newFixture(t, false)
	claim, _ := twoGPUClaim(t)
	ctx, cancel := context.WithTimeout(f.ctx, 100*time.Millisecond)
	defer cancel()
	_, err := f.mgr.Apply(ctx, claim)
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("Apply error = %v, want it interrupted by the context", err)
	}
}

func TestNewRejectsIncompleteOptions(t *testing.T) {
	_, err := New(Options{BaseDir: "relative", HostDriverRoot: ""})
	if err == nil {
		t.Fatal("New accepted empty options")
	}
	for _, want := range []string{"client", "POD_NAMESPACE", "NODE_NAME", "MPS_DAEMON_IMAGE", "MPS_BASE_DIR", "host driver root"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestSweepRemovesDaemonsOfUnpreparedClaimsOnly(t *testing.T) {
	f := newFixture(t, true)
	kept, _ := twoGPUClaim(t)
	orphan := kept
	orphan.UID = "7d5c1e2a-0000-4000-8000-00000000beef"
	for _, c := range []sharing.Claim{kept, orphan} {
		if _, err := f.mgr.Apply(f.ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// A daemon of another node, and a directory without a pod.
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: PodName("other-node-claim"), Namespace: testNamespace,
		Labels:      map[string]string{LabelComponent: componentValue},
		Annotations: map[string]string{annotationClaimUID: "other-node-claim"}}, Spec: corev1.PodSpec{NodeName: "node-2"}}
	if _, err := f.client.CoreV1().Pods(testNamespace).Create(f.ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(f.opts.BaseDir, "5a5a5a5a-0000-4000-8000-000000000001", "pipe")
	if err := os.MkdirAll(stray, 0o755); err != nil {
		t.Fatal(err)
	}

	restarted := f.newManager(t)
	if err := restarted.Sweep(f.ctx, func(uid string) bool { return uid == kept.UID }); err != nil {
		t.Fatal(err)
	}
	get := func(name string) bool {
		_, err := f.client.CoreV1().Pods(testNamespace).Get(f.ctx, name, metav1.GetOptions{})
		return err == nil
	}
	if !get(PodName(kept.UID)) || !exists(filepath.Join(f.opts.BaseDir, kept.UID)) {
		t.Error("Sweep removed the daemon of a prepared claim")
	}
	if get(PodName(orphan.UID)) || exists(filepath.Join(f.opts.BaseDir, orphan.UID)) {
		t.Error("Sweep left the daemon of an unprepared claim")
	}
	if !get(other.Name) {
		t.Error("Sweep removed a daemon of another node")
	}
	if exists(filepath.Dir(stray)) {
		t.Error("Sweep left the directory of an unprepared claim")
	}
}

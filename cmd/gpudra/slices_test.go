package main

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func fakeCluster(t *testing.T, objs ...metav1.Object) *fake.Clientset {
	t.Helper()
	client := fake.NewClientset()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *resourceapi.ResourceSlice:
			_, err = client.ResourceV1().ResourceSlices().Create(context.Background(), o, metav1.CreateOptions{})
		case *corev1.Pod:
			_, err = client.CoreV1().Pods(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	old := newKubeClient
	newKubeClient = func(string) (kubernetes.Interface, error) { return client, nil }
	t.Cleanup(func() { newKubeClient = old })
	return client
}

func gpuSlice(name, driver string) *resourceapi.ResourceSlice {
	return &resourceapi.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       resourceapi.ResourceSliceSpec{Driver: driver, NodeName: ptr.To("node-a"), Pool: resourceapi.ResourcePool{Name: "node-a", ResourceSliceCount: 1}},
	}
}

func slicesLeft(t *testing.T, client kubernetes.Interface) []string {
	t.Helper()
	list, err := client.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
	}
	return names
}

// The chart's cleanup hook: wait until the plugin pods are gone, then
// delete the driver's slices and no other driver's.
func TestSlicesDeleteWaitsForThePluginPods(t *testing.T) {
	plugin := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plugin-x", Namespace: "gpudra-system", Labels: map[string]string{"app": "plugin"}}}
	client := fakeCluster(t, gpuSlice("a", "gpu.nvidia.com"), gpuSlice("b", "other.example.com"), plugin)
	// The command's pod lists are answered here, from the fake's tracker:
	// listed is closed once the first of them has been answered, so the
	// command has seen the plugin pod before the test deletes it.
	listed := make(chan struct{})
	var lists atomic.Int32
	var firstListed atomic.Int32
	client.PrependReactor("list", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		handled, obj, err := k8stesting.ObjectReaction(client.Tracker())(action)
		if lists.Add(1) == 1 {
			if l, ok := obj.(*corev1.PodList); ok {
				firstListed.Store(int32(len(l.Items)))
			}
			close(listed)
		}
		return handled, obj, err
	})
	// No slice may go while the plugin pod is there.
	var gone atomic.Bool
	client.PrependReactor("delete", "resourceslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !gone.Load() {
			t.Error("a ResourceSlice was deleted while the plugin pod was still there")
		}
		return false, nil, nil
	})
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-listed:
		case <-done:
			return
		}
		gone.Store(true)
		_ = client.CoreV1().Pods("gpudra-system").Delete(context.Background(), "plugin-x", metav1.DeleteOptions{})
	}()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"slices", "delete", "--driver=gpu.nvidia.com", "--namespace=gpudra-system", "--wait-for-pods=app=plugin", "--timeout=20s"}, &stdout, &stderr)
	if code != exitOK || !gone.Load() {
		t.Fatalf("exit %d (plugin pod gone: %v): %s", code, gone.Load(), stderr.String())
	}
	// It saw the pod, waited, and listed again until the pod was gone.
	if n, first := lists.Load(), firstListed.Load(); first != 1 || n < 2 {
		t.Errorf("%d pod lists, the first with %d pods; want the plugin pod seen first, then a list without it", n, first)
	}
	if !strings.Contains(stdout.String(), "deleted 1 ResourceSlice(s) of driver gpu.nvidia.com") {
		t.Errorf("stdout %q", stdout.String())
	}
	if left := slicesLeft(t, client); len(left) != 1 || left[0] != "b" {
		t.Errorf("slices left %v, want [b]", left)
	}
}

func TestSlicesDeleteGivesUpWhilePluginsRun(t *testing.T) {
	plugin := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plugin-x", Namespace: "gpudra-system", Labels: map[string]string{"app": "plugin"}}}
	client := fakeCluster(t, gpuSlice("a", "gpu.nvidia.com"), plugin)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"slices", "delete", "--namespace=gpudra-system", "--wait-for-pods=app=plugin", "--timeout=1s"}, &stdout, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), "plugin-x") {
		t.Fatalf("exit %d, stderr %q; want a failure naming the pod", code, stderr.String())
	}
	if left := slicesLeft(t, client); len(left) != 1 {
		t.Errorf("slices deleted although a plugin still runs: left %v", left)
	}
}

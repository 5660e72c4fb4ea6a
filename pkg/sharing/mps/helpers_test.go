package mps

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
	"github.com/gpudra/gpudra/pkg/sharing"
)

const (
	testNamespace = "gpudra-system"
	testNode      = "node-1"
	testClaimUID  = "0b8f6f5e-2c1a-4d0e-9a63-5b1c7e2f9d11"
)

// machine returns the GPUs of a go-nvml mock DGX H100.
func machine(t *testing.T) *inventory.Inventory {
	t.Helper()
	_, inv := mockmachinetest.Machine(t, "dgxh100", "mps-test")
	if len(inv.Devices) < 3 {
		t.Fatalf("mock machine has %d GPUs, want at least 3", len(inv.Devices))
	}
	return inv
}

// mpsDevice returns a device of the claim with the given GpuConfig sharing.
func gpuDevice(d inventory.Device, sharingCfg *configapi.GpuSharing) sharing.Device {
	cfg := configapi.DefaultGpuConfig()
	cfg.Sharing = sharingCfg
	cfg.Normalize()
	return sharing.Device{
		Name: devices.GPUName(d), Type: devices.KindGPU, UUID: d.UUID,
		Requests: []string{"gpu"}, Config: cfg,
	}
}

func mpsSharing(m *configapi.MpsConfig) *configapi.GpuSharing {
	return &configapi.GpuSharing{Strategy: configapi.MpsStrategy, MpsConfig: m}
}

func claimOf(devs ...sharing.Device) sharing.Claim {
	return sharing.Claim{UID: testClaimUID, Namespace: "team-a", Name: "mps-claim", Devices: devs}
}

func ptr[T any](v T) *T { return &v }

func quantity(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

// kubelet simulates the kubelet for the daemon pods in the fake clientset:
// while ready is true, it marks every daemon pod Running and Ready, the way
// the kubelet does once the readiness probe passes. Nothing becomes ready
// unless a test sets ready.
type kubelet struct {
	client *fake.Clientset
	ready  atomic.Bool
	marked atomic.Int32
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startKubelet(t *testing.T, client *fake.Clientset, ready bool) *kubelet {
	k := &kubelet{client: client, stop: make(chan struct{})}
	k.ready.Store(ready)
	k.wg.Add(1)
	go k.run()
	t.Cleanup(func() { close(k.stop); k.wg.Wait() })
	return k
}

func (k *kubelet) run() {
	defer k.wg.Done()
	ticker := time.NewTicker(5 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-ticker.C:
		}
		if !k.ready.Load() {
			continue
		}
		pods, err := k.client.CoreV1().Pods(testNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: LabelComponent + "=" + componentValue})
		if err != nil {
			continue
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if podReady(p) || podFinished(p) { // a failed pod stays failed
				continue
			}
			p.Status.Phase = corev1.PodRunning
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
			if _, err := k.client.CoreV1().Pods(testNamespace).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err == nil {
				k.marked.Add(1)
			}
		}
	}
}

// creates counts the pod creations the client saw.
func creates(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "pods" {
			n++
		}
	}
	return n
}

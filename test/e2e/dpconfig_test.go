//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// dpConfigMap is the ConfigMap hack/e2e.sh names in devicePlugin.config.name
// (default config ts2) for GPUDRA_E2E_MODE=device-plugin-config.
const dpConfigMap = "gpudra-e2e-dp-config"

var dpConfigs = map[string]string{
	"ts2":  "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n",
	"ts4":  "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n",
	"mps2": "version: v1\nsharing:\n  mps:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 2\n",
	// gpudra refuses device lists in sharing: the plugin keeps its config.
	"bad": "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 3\n      devices: [0]\n",
}

// TestDevicePluginConfigFile runs in device-plugin mode with
// devicePlugin.config.name=gpudra-e2e-dp-config, default ts2
// (GPUDRA_E2E_MODE=device-plugin-config): the node label
// nvidia.com/device-plugin.config selects a config of the ConfigMap,
// allocatable nvidia.com/gpu and the feature labels follow every switch,
// a running pod keeps running, an unusable config keeps the current one;
// the MPS config runs the daemon pods with NVIDIA's limits and refuses a
// request of two replicas.
func TestDevicePluginConfigFile(t *testing.T) {
	if os.Getenv("GPUDRA_E2E_MODE") != "device-plugin-config" {
		t.Skip("the chart is not in device-plugin mode with devicePlugin.config.name=" + dpConfigMap + " (GPUDRA_E2E_MODE)")
	}
	ctx := context.Background()
	c := client(t)
	node := nodeName(t, c)
	const ns = "gpudra-e2e-dpconfig"
	t.Cleanup(func() {
		kubectl(t, "label", "node", node, "nvidia.com/device-plugin.config-")
		kubectl(t, "delete", "ns", ns, "--ignore-not-found", "--wait=true", "--timeout=2m")
		kubectl(t, "-n", releaseNamespace, "delete", "configmap", dpConfigMap, "--ignore-not-found")
	})
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: dpConfigMap, Namespace: releaseNamespace}, Data: dpConfigs}
	if _, err := c.CoreV1().ConfigMaps(releaseNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expect := func(what string, gpus int64, replicas, sharing string) {
		t.Helper()
		eventually(t, 2*time.Minute, what, func() (bool, string) {
			n, l := allocatable(t, c, node, "nvidia.com/gpu"), nodeLabels(t, c, node)
			got := fmt.Sprintf("allocatable %d, gpu.replicas %s, gpu.sharing-strategy %s", n, l["nvidia.com/gpu.replicas"], l["nvidia.com/gpu.sharing-strategy"])
			return n == gpus && l["nvidia.com/gpu.replicas"] == replicas && l["nvidia.com/gpu.sharing-strategy"] == sharing, got
		})
	}
	expect("the default config ts2", 16, "2", "time-slicing")
	running := gpuPod(t, c, ns, "running", 1)
	waitRunning(t, c, ns, running.Name)

	kubectl(t, "label", "node", node, "nvidia.com/device-plugin.config=ts4", "--overwrite")
	expect("the labeled config ts4", 32, "4", "time-slicing")

	// An unusable config: logged with its key, the plugins keep ts4.
	kubectl(t, "label", "node", node, "nvidia.com/device-plugin.config=bad", "--overwrite")
	eventually(t, time.Minute, "the plugin logs the unusable config", func() (bool, string) {
		out, _ := exec.Command("kubectl", "-n", releaseNamespace, "logs", "-l", "app.kubernetes.io/component=device-plugin", "--tail=-1").CombinedOutput()
		return strings.Contains(string(out), `"Device plugin config not usable; keeping the current one"`) && strings.Contains(string(out), `key="bad"`), "no log of key bad"
	})
	expect("ts4 kept", 32, "4", "time-slicing")

	kubectl(t, "label", "node", node, "nvidia.com/device-plugin.config=mps2", "--overwrite")
	expect("the MPS config mps2", 16, "2", "mps")
	eventually(t, 2*time.Minute, "the MPS daemon pods ready", func() (bool, string) {
		pods, err := c.CoreV1().Pods(releaseNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, "gpudra-mps-dp-") && podReady(&p) {
				ready++
			}
		}
		return ready == 8, fmt.Sprintf("%d of 8 ready", ready)
	})
	mpsPod := gpuPod(t, c, ns, "mps", 1)
	waitRunning(t, c, ns, mpsPod.Name)
	// NVIDIA's per-replica limits are the daemons' defaults: 100/2 percent
	// of the threads, memory/2.
	mib, _ := strconv.Atoi(nodeLabels(t, c, node)["nvidia.com/gpu.memory"])
	pods, err := c.CoreV1().Pods(releaseNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Name, "gpudra-mps-dp-") {
			continue
		}
		args := strings.Join(append(p.Spec.Containers[0].Command, p.Spec.Containers[0].Args...), " ")
		for _, want := range []string{"--active-thread-percentage=50", fmt.Sprintf("=%dM", mib/2)} {
			if !strings.Contains(args, want) {
				t.Errorf("MPS daemon %s lacks %s: %s", p.Name, want, args)
			}
		}
	}
	two := gpuPod(t, c, ns, "two-replicas", 2)
	eventually(t, 2*time.Minute, "a request of 2 MPS replicas refused", func() (bool, string) {
		p, err := c.CoreV1().Pods(ns).Get(ctx, two.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodFailed, fmt.Sprintf("%s %s %s", p.Status.Phase, p.Status.Reason, p.Status.Message)
	})

	// The first pod ran through every switch: never restarted.
	p, err := c.CoreV1().Pods(ns).Get(ctx, running.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != running.UID || p.Status.Phase != corev1.PodRunning || len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("the pod started under ts2 did not keep running: phase %s, statuses %+v", p.Status.Phase, p.Status.ContainerStatuses)
	}

	// Back to time-slicing once no pod holds a replica: the MPS daemons go
	// (while pods held nvidia.com/gpu, which mps2 shared, they had to stay).
	for _, name := range []string{running.Name, mpsPod.Name, two.Name} {
		if err := c.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	eventually(t, 2*time.Minute, "the test's pods gone", func() (bool, string) {
		pods, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(pods.Items) == 0, fmt.Sprintf("%d pods left", len(pods.Items))
	})
	kubectl(t, "label", "node", node, "nvidia.com/device-plugin.config=ts2", "--overwrite")
	expect("ts2 again", 16, "2", "time-slicing")
	eventually(t, 2*time.Minute, "the MPS daemon pods removed", func() (bool, string) {
		pods, err := c.CoreV1().Pods(releaseNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		left := 0
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, "gpudra-mps-dp-") {
				left++
			}
		}
		return left == 0, fmt.Sprintf("%d daemon pods left", left)
	})
}

// gpuPod creates a busybox pod asking for n nvidia.com/gpu that prints its
// environment and sleeps.
func gpuPod(t *testing.T, c kubernetes.Interface, ns, name string, n int64) *corev1.Pod {
	t.Helper()
	grace := int64(1)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "ctr", Image: "localhost/e2e/busybox:1", ImagePullPolicy: corev1.PullNever,
				Command:   []string{"sh", "-c", "env | sort; echo ENV-END; sleep 3600"},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(n, resource.DecimalSI)}},
			}},
		},
	}
	p, err := c.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitRunning(t *testing.T, c kubernetes.Interface, ns, name string) {
	t.Helper()
	eventually(t, 2*time.Minute, "pod "+name+" running", func() (bool, string) {
		p, err := c.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase) + " " + p.Status.Message
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

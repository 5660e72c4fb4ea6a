//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The mock dgxh100's GPU feature labels (README, "GPU feature labels").
const (
	mockProduct = "NVIDIA-H100-80GB-HBM3"
	mockCount   = "8"
)

// TestFeatureLabels runs in the default install (DRA) and in device-plugin
// mode: the seed-style verify `kubectl get nodes -L nvidia.com/gpu.product,...`
// shows the mock machine's GPUs, and the plugin's service account may change
// the nvidia.com/ labels of its own node only (the admission policy).
func TestFeatureLabels(t *testing.T) {
	mode := os.Getenv("GPUDRA_E2E_MODE")
	component := "kubelet-plugin"
	switch mode {
	case "":
	case "device-plugin":
		component = "device-plugin"
	default:
		t.Skip("labels are checked in the default install and in device-plugin mode (GPUDRA_E2E_MODE)")
	}
	c := client(t)
	node := nodeName(t, c)
	eventually(t, 2*time.Minute, "the feature labels in kubectl get nodes", func() (bool, string) {
		out := kubectl(t, "get", "nodes", "--no-headers", "-L", "nvidia.com/gpu.product,nvidia.com/gpu.count,nvidia.com/gpu.present")
		f := strings.Fields(out)
		return len(f) >= 3 && strings.Join(f[len(f)-3:], " ") == mockProduct+" "+mockCount+" true", out
	})
	labels := nodeLabels(t, c, node)
	for k, v := range map[string]string{"nvidia.com/gpu.memory": "81920", "nvidia.com/gpu.family": "hopper",
		"nvidia.com/gpu.compute.major": "9", "nvidia.com/gpu.compute.minor": "0", "nvidia.com/mig.capable": "true",
		"nvidia.com/gpu.replicas": "1", "nvidia.com/gpu.sharing-strategy": "none"} {
		if labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, labels[k], v)
		}
	}

	sa := componentServiceAccount(t, c, component)
	as := []string{"--as=system:serviceaccount:" + releaseNamespace + ":" + sa}
	try := func(nodeExtra string, args ...string) error {
		a := append(append([]string{}, as...), "--as-user-extra=authentication.kubernetes.io/node-name="+nodeExtra, "--dry-run=server")
		out, err := exec.Command("kubectl", append(a, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := try(node, "label", "node", node, "nvidia.com/gpudra-e2e=x"); err != nil {
		t.Errorf("the plugin's service account may not set an nvidia.com/ label of its own node: %v", err)
	}
	if err := try(node, "label", "node", node, "example.com/gpudra-e2e=x"); err == nil || !strings.Contains(err.Error(), "only change nvidia.com/ labels") {
		t.Errorf("the plugin's service account set a non-nvidia.com/ label: %v", err)
	}
	// Only one node here: a plugin of another node labels this one.
	if err := try("other-node", "label", "node", node, "nvidia.com/gpudra-e2e=x"); err == nil || !strings.Contains(err.Error(), "may only label its own node") {
		t.Errorf("the plugin of another node labeled node %s: %v", node, err)
	}
}

func nodeLabels(t *testing.T, c kubernetes.Interface, node string) map[string]string {
	t.Helper()
	n, err := c.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Labels
}

// componentServiceAccount is the service account of the release's pods of
// component (kubelet-plugin, device-plugin).
func componentServiceAccount(t *testing.T, c kubernetes.Interface, component string) string {
	t.Helper()
	pods, err := c.CoreV1().Pods(releaseNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=" + component})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("no %s pod: %v", component, err)
	}
	return pods.Items[0].Spec.ServiceAccountName
}

// allocatable is the node's allocatable of resource.
func allocatable(t *testing.T, c kubernetes.Interface, node, resource string) int64 {
	t.Helper()
	n, err := c.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q := n.Status.Allocatable[corev1.ResourceName(resource)]
	return q.Value()
}

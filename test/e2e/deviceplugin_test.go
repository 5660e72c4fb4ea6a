//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestDevicePluginServesExtendedResource runs when the chart is installed in
// device-plugin mode (hack/e2e.sh switches the release and sets
// GPUDRA_E2E_MODE=device-plugin): a pod asking for nvidia.com/gpu: 1 runs and
// sees exactly one mock GPU, injected through the cdi-cri strategy.
func TestDevicePluginServesExtendedResource(t *testing.T) {
	if os.Getenv("GPUDRA_E2E_MODE") != "device-plugin" {
		t.Skip("the chart is not in device-plugin mode (GPUDRA_E2E_MODE)")
	}
	ctx := context.Background()
	c := client(t)
	eventually(t, 2*time.Minute, "nvidia.com/gpu allocatable", func() (bool, string) {
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			return false, "no node"
		}
		q := nodes.Items[0].Status.Allocatable[corev1.ResourceName("nvidia.com/gpu")]
		return q.Value() == 8, "allocatable nvidia.com/gpu = " + q.String()
	})
	t.Cleanup(func() { kubectl(t, "delete", "ns", "gpudra-demo", "gpudra-demo-admin", "--wait=true", "--timeout=2m") })
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "10-device-plugin.yaml"))
	eventually(t, 2*time.Minute, "device-plugin pod Running", func() (bool, string) {
		p, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, "device-plugin-gpu", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
	})
	var v gpuView
	eventually(t, time.Minute, "the pod's GPU view", func() (bool, string) {
		logs := kubectl(t, "-n", "gpudra-demo", "logs", "device-plugin-gpu")
		if !strings.Contains(logs, "GPU-VIEW-END") {
			return false, logs
		}
		v = viewOf(t, "gpudra-demo", "device-plugin-gpu", "ctr")
		return true, ""
	})
	if len(v.minors) != 1 || !v.control {
		t.Errorf("device-plugin pod sees GPUs %v (nvidiactl %v), want exactly one GPU and the control node", v.minors, v.control)
	}
	if !containsPrefix(v.libs, "libcuda.so.") {
		t.Errorf("driver libraries not injected: %v", v.libs)
	}
	if files, _ := filepath.Glob(filepath.Join(cdiRoot, "k8s.device-plugin.nvidia.com-gpu.json")); len(files) != 1 {
		t.Errorf("the device plugin's CDI spec is missing from %s", cdiRoot)
	}
	// The DRA plugin's slices went with it (the chart's cleanup hook): the
	// scheduler must not offer the same GPUs through DRA as well.
	if n := driverSlices(t, c); n != 0 {
		t.Errorf("%d ResourceSlices of %s left in device-plugin mode", n, driverName)
	}
}

// TestUninstallRemovesTheSlices runs after `helm uninstall` (hack/e2e.sh
// sets GPUDRA_E2E_MODE=uninstalled): no ResourceSlice of the driver is left
// to offer GPUs that no plugin prepares.
func TestUninstallRemovesTheSlices(t *testing.T) {
	if os.Getenv("GPUDRA_E2E_MODE") != "uninstalled" {
		t.Skip("the chart is installed (GPUDRA_E2E_MODE)")
	}
	c := client(t)
	eventually(t, time.Minute, "no ResourceSlice of the driver", func() (bool, string) {
		n := driverSlices(t, c)
		return n == 0, fmt.Sprintf("%d left", n)
	})
}

func driverSlices(t *testing.T, c kubernetes.Interface) int {
	t.Helper()
	list, err := c.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range list.Items {
		if s.Spec.Driver == driverName {
			n++
		}
	}
	return n
}

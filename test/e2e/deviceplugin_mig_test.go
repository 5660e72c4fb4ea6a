//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDevicePluginMIGMixed runs with the chart in device-plugin mode on the
// mock dgxh100-mig with devicePlugin.migStrategy=mixed
// (GPUDRA_E2E_MODE=device-plugin-mixed): the node advertises 6 whole GPUs
// and one resource per MIG profile, and demo/20 gets one 1g.10gb MIG device
// with its parent's device node and its capability nodes.
func TestDevicePluginMIGMixed(t *testing.T) {
	if os.Getenv("GPUDRA_E2E_MODE") != "device-plugin-mixed" {
		t.Skip("the chart is not in device-plugin mode with migStrategy=mixed on dgxh100-mig (GPUDRA_E2E_MODE)")
	}
	ctx := context.Background()
	c := client(t)
	want := map[string]int64{"nvidia.com/gpu": 6, "nvidia.com/mig-1g.10gb": 2, "nvidia.com/mig-2g.20gb": 1, "nvidia.com/mig-3g.40gb": 1, "nvidia.com/mig-7g.80gb": 1}
	eventually(t, 2*time.Minute, "mixed-strategy allocatable", func() (bool, string) {
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil || len(nodes.Items) != 1 {
			return false, "no node"
		}
		var got []string
		ok := true
		for name, n := range want {
			q := nodes.Items[0].Status.Allocatable[corev1.ResourceName(name)]
			got = append(got, name+"="+q.String())
			ok = ok && q.Value() == n
		}
		return ok, strings.Join(got, " ")
	})
	t.Cleanup(func() { kubectl(t, "delete", "ns", "gpudra-demo", "gpudra-demo-admin", "--wait=true", "--timeout=2m") })
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "20-device-plugin-mig-mixed.yaml"))
	// Its logs can be read once it runs (kubectl fails the test before).
	waitPodRunning(t, c, "gpudra-demo", "device-plugin-mig")
	eventually(t, 2*time.Minute, "MIG pod output", func() (bool, string) {
		logs := kubectl(t, "-n", "gpudra-demo", "logs", "device-plugin-mig")
		return strings.Contains(logs, "GPU-VIEW-END"), logs
	})
	logs := kubectl(t, "-n", "gpudra-demo", "logs", "device-plugin-mig")
	if !strings.Contains(logs, "/dev/nvidia0") || !strings.Contains(logs, "nvidia-cap") {
		t.Errorf("MIG pod lacks its parent GPU node or capability nodes:\n%s", logs)
	}
}

// TestDRAMIGProfileExtendedResource runs with the chart in DRA mode on the
// mock dgxh100-mig with deviceClasses.migProfiles.enabled
// (GPUDRA_E2E_MIG_PROFILES=1): demo/21, a pod that only asks for
// nvidia.com/mig-1g.10gb: 1, runs with a MIG device through DRA.
func TestDRAMIGProfileExtendedResource(t *testing.T) {
	if os.Getenv("GPUDRA_E2E_MIG_PROFILES") != "1" {
		t.Skip("deviceClasses.migProfiles is not enabled on a MIG mock machine (GPUDRA_E2E_MIG_PROFILES)")
	}
	ctx := context.Background()
	c := client(t)
	t.Cleanup(func() { kubectl(t, "delete", "ns", "gpudra-demo", "gpudra-demo-admin", "--wait=true", "--timeout=2m") })
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "21-dra-mig-extended-resource.yaml"))
	eventually(t, 2*time.Minute, "pod Running", func() (bool, string) {
		p, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, "dra-mig-extended", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase)
	})
	p, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, "dra-mig-extended", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.ExtendedResourceClaimStatus == nil {
		t.Errorf("pod has no extended resource claim: DRAExtendedResource did not handle nvidia.com/mig-1g.10gb")
	}
}

//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

const (
	attrCliqueID resourceapi.QualifiedName = "cliqueID"
	attrNUMANode resourceapi.QualifiedName = "resource.kubernetes.io/numaNode"
)

// nodeDevice returns the device of this driver named name in the slices of
// node (other slices, such as those of simulated nodes, are not looked at),
// nil when none.
func nodeDevice(t *testing.T, c kubernetes.Interface, node, name string) *resourceapi.Device {
	t.Helper()
	slices, err := c.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slices.Items {
		if s.Spec.Driver != driverName || s.Spec.NodeName == nil || *s.Spec.NodeName != node {
			continue
		}
		for i := range s.Spec.Devices {
			if s.Spec.Devices[i].Name == name {
				return &s.Spec.Devices[i]
			}
		}
	}
	return nil
}

// applyTopologyClaimPod creates, in the demo namespace, a ResourceClaimTemplate
// for count GPUs matching cel (none: any), constrained to one value of the
// attribute match (none: unconstrained), and a pod using it.
func applyTopologyClaimPod(t *testing.T, name string, count int, cel, match string) {
	t.Helper()
	var selectors, constraints string
	if cel != "" {
		selectors = fmt.Sprintf("\n          selectors:\n          - cel: {expression: '%s'}", cel)
	}
	if match != "" {
		constraints = fmt.Sprintf("\n      constraints:\n      - matchAttribute: %s", match)
	}
	applyYAML(t, name, fmt.Sprintf(`apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: %[1]s, namespace: gpudra-demo}
spec:
  spec:
    devices:
      requests:
      - name: gpus
        exactly:
          deviceClassName: gpu.nvidia.com
          allocationMode: ExactCount
          count: %[2]d%[3]s%[4]s
`, name, count, selectors, constraints))
	applyClaimPod(t, "gpudra-demo", name, "gpus", name, "sleep 3600")
}

// TestNVLinkDomainAndNUMA runs demo/19-nvlink-domain.yaml on the default mock
// machine (a DGX H100: NVLink cliques and NUMA nodes of GPUs 0-3 and 4-7)
// with GPUs 0-2 taken, so that two GPUs of one NVLink domain exist only in
// clique 2, and checks that the claim's GPUs share their cliqueID, that the
// NUMA selector got a GPU of node 1, and that five GPUs of one clique are
// not to be had.
func TestNVLinkDomainAndNUMA(t *testing.T) {
	draMode(t)
	c := client(t)
	t.Cleanup(func() {
		_ = exec.Command("kubectl", "delete", "ns", "gpudra-demo", "gpudra-demo-admin", "--wait=true", "--timeout=2m").Run()
	})
	node := nodeName(t, c)
	gpu0 := nodeDevice(t, c, node, "gpu-0")
	if gpu0 == nil {
		t.Fatal("gpu-0 is not published")
	}
	clique1 := ptr.Deref(gpu0.Attributes[attrCliqueID].StringValue, "")
	if clique1 == "" {
		t.Skipf("the mock machine %s has no NVLink fabric (no cliqueID on gpu-0)", mockMachine)
	}
	if n := gpu0.Attributes[attrNUMANode].IntValue; n == nil || *n != 0 {
		t.Errorf("gpu-0: numaNode %v, want 0", n)
	}

	kubectl(t, "apply", "-f", repoRoot+"/demo/00-namespace.yaml")
	applyTopologyClaimPod(t, "topology-blocker", 3, `device.attributes["gpu.nvidia.com"].index < 3`, "")
	blocker := waitPodRunning(t, c, "gpudra-demo", "topology-blocker")
	if devs := claimDevices(t, c, blocker); fmt.Sprint(devs) != "[gpus gpu-0 gpus gpu-1 gpus gpu-2]" {
		t.Fatalf("blocker got %v, want gpu-0..gpu-2", devs)
	}

	views := runWave(t, c, "topology", "19")
	if got := len(views["nvlink-domain/ctr"].minors); got != 2 {
		t.Errorf("nvlink-domain sees %d GPUs, want 2", got)
	}
	pod := waitPodRunning(t, c, "gpudra-demo", "nvlink-domain")
	var cliques []string
	for _, d := range claimDevices(t, c, pod) {
		_, name, _ := strings.Cut(d, " ")
		d := nodeDevice(t, c, node, name)
		if d == nil {
			t.Fatalf("device %s of the claim is not published on %s", name, node)
		}
		cliques = append(cliques, ptr.Deref(d.Attributes[attrCliqueID].StringValue, ""))
	}
	if len(cliques) != 2 || cliques[0] == "" || cliques[0] != cliques[1] {
		t.Errorf("nvlink-domain's GPUs %v have cliqueIDs %v, want one NVLink domain", claimDevices(t, c, pod), cliques)
	}
	if len(cliques) > 0 && cliques[0] == clique1 {
		t.Errorf("nvlink-domain got GPUs of clique %s, where only gpu-3 was free", clique1)
	}
	_, numaDev := allocatedDevice(t, c, waitPodRunning(t, c, "gpudra-demo", "numa-node-1"))
	if d := nodeDevice(t, c, node, numaDev); d == nil || d.Attributes[attrNUMANode].IntValue == nil || *d.Attributes[attrNUMANode].IntValue != 1 {
		t.Errorf("numa-node-1 got %s, which is not on NUMA node 1: %v", numaDev, d)
	}
	deletePod(t, "gpudra-demo", "topology-blocker")
	deleteWave(t, c, "topology")

	// All eight GPUs free: still no clique of five.
	applyTopologyClaimPod(t, "five-of-one-clique", 5, "", "gpu.nvidia.com/cliqueID")
	expectUnschedulable(t, c, "gpudra-demo", "five-of-one-clique")
	deletePod(t, "gpudra-demo", "five-of-one-clique")
}

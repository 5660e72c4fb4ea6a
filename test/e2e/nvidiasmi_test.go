//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// smiGPU is a GPU line of `nvidia-smi -L`: index, name, UUID.
var smiGPU = regexp.MustCompile(`^GPU (\d+): (.+) \(UUID: (GPU-[0-9a-f-]+)\)$`)

// smiGPUs returns the GPU lines that `nvidia-smi -L` printed in logs, in
// order, as "<name> <UUID>"; it fails the test unless they are numbered from 0.
func smiGPUs(t *testing.T, logs string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		m := smiGPU.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if m[1] != strconv.Itoa(len(out)) {
			t.Errorf("nvidia-smi -L numbers GPU %d as %s, want the container's GPUs numbered from 0:\n%s", len(out), m[1], logs)
		}
		out = append(out, m[2]+" "+m[3])
	}
	return out
}

// runsNvidiaSMI tells whether a container of the demos runs `nvidia-smi -L`.
func runsNvidiaSMI(ctr corev1.Container) bool {
	return strings.Contains(strings.Join(append(append([]string(nil), ctr.Command...), ctr.Args...), " "), "nvidia-smi -L")
}

// wantSMIGPUs returns what `nvidia-smi -L` must list for the GPUs of the
// given minors (mock GPU "gpu-N" has minor N): "<name> <UUID>" of each, from
// the published devices, in minor order.
func wantSMIGPUs(t *testing.T, c kubernetes.Interface, minors []string) []string {
	t.Helper()
	sorted := append([]string(nil), minors...)
	sort.Slice(sorted, func(a, b int) bool {
		x, _ := strconv.Atoi(sorted[a])
		y, _ := strconv.Atoi(sorted[b])
		return x < y
	})
	var out []string
	for _, m := range sorted {
		out = append(out, deviceAttr(t, c, "gpu-"+m, "productName")+" "+deviceAttr(t, c, "gpu-"+m, "uuid"))
	}
	return out
}

// TestQuickstartPodsListTheirGPUsWithNvidiaSMI runs NVIDIA's quickstart pods
// (demo/14-quickstart.yaml): each runs `nvidia-smi -L`, which must list
// exactly the GPU of its claim, by name and UUID.
func TestQuickstartPodsListTheirGPUsWithNvidiaSMI(t *testing.T) {
	draMode(t)
	ctx := context.Background()
	c := client(t)
	t.Cleanup(func() {
		_ = exec.Command("kubectl", "delete", "ns", "gpudra-demo", "--wait=true", "--timeout=2m", "--ignore-not-found").Run()
	})
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "14-quickstart.yaml"))
	var pods []corev1.Pod
	eventually(t, 3*time.Minute, "quickstart pods Running", func() (bool, string) {
		list, err := c.CoreV1().Pods("gpudra-demo").List(ctx, metav1.ListOptions{LabelSelector: "gpudra.demo/wave=quickstart"})
		if err != nil {
			return false, err.Error()
		}
		pods = list.Items
		var phases []string
		running := len(pods) == 2
		for _, p := range pods {
			phases = append(phases, fmt.Sprintf("%s %s", p.Name, p.Status.Phase))
			running = running && p.Status.Phase == corev1.PodRunning
		}
		return running, fmt.Sprint(phases)
	})
	seen := map[string]string{}
	for i := range pods {
		p := &pods[i]
		want := wantSMIGPUs(t, c, allocatedMinors(t, c, p)["gpu"])
		if len(want) != 1 {
			t.Fatalf("%s: allocated %v, want one GPU", p.Name, want)
		}
		var logs string
		eventually(t, 30*time.Second, p.Name+" printing nvidia-smi -L", func() (bool, string) {
			logs = kubectl(t, "-n", p.Namespace, "logs", p.Name, "-c", "ctr")
			return strings.HasSuffix(logs, "\n"), fmt.Sprintf("log %q", logs)
		})
		got := smiGPUs(t, logs)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: nvidia-smi -L lists %v, want exactly its GPU %v; log:\n%s", p.Name, got, want, logs)
		}
		for _, g := range got {
			if other, ok := seen[g]; ok {
				t.Errorf("%s and %s both list %s", other, p.Name, g)
			}
			seen[g] = p.Name
		}
	}
	deleteWave(t, c, "quickstart")
}

//go:build e2e

// Package e2e checks the driver on a real cluster: the local cluster of
// hack/local-cluster.sh with the chart installed in mock mode (hack/e2e.sh
// sets that up and runs these tests). It applies the demos of demo/ and
// asserts what every container sees.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	nodedevices "github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

const driverName = "gpu.nvidia.com"

var (
	repoRoot    = filepath.Join("..", "..")
	cdiRoot     = envOr("GPUDRA_E2E_CDI_ROOT", "/var/run/cdi")
	mockMachine = envOr("GPUDRA_MOCK_MACHINE", "dgxh100")
	devNode     = regexp.MustCompile(`/dev/nvidia(\d+)$`)
)

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func client(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatalf("KUBECONFIG: %v (run through hack/e2e.sh)", err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("kubectl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, msg := f()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, last)
		}
		time.Sleep(time.Second)
	}
}

func TestResourceSlicesMatchTheMockMachine(t *testing.T) {
	node := nodeName(t, client(t))
	expectSlicesOf(t, mockMachine, node, node)
}

// nodeName returns the name of the cluster's one node.
func nodeName(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	nodes, err := c.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	return nodes.Items[0].Name
}

// expectSlicesOf checks that the node's ResourceSlices publish exactly the
// GPUs of the mock machine with the UUIDs of seed, with their product and
// memory, and returns that machine's inventory.
func expectSlicesOf(t *testing.T, machine, seed, node string) *inventory.Inventory {
	t.Helper()
	ctx := context.Background()
	c := client(t)
	lib, err := mockmachine.New(machine, seed)
	if err != nil {
		t.Fatal(err)
	}
	want, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	var devices []resourceapi.Device
	eventually(t, time.Minute, "ResourceSlices", func() (bool, string) {
		slices, err := c.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		devices = nil
		for _, s := range slices.Items {
			if s.Spec.Driver == driverName && s.Spec.NodeName != nil && *s.Spec.NodeName == node {
				if s.Spec.Pool.Name != node {
					t.Errorf("slice %s in pool %s, want the node's pool %s", s.Name, s.Spec.Pool.Name, node)
				}
				devices = append(devices, s.Spec.Devices...)
			}
		}
		return len(devices) == len(want.Devices), fmt.Sprintf("%d devices published, want %d", len(devices), len(want.Devices))
	})
	byName := map[string]resourceapi.Device{}
	for _, d := range devices {
		byName[d.Name] = d
	}
	for _, g := range want.Devices {
		d, ok := byName[nodedevices.GPUName(g)]
		if !ok {
			t.Errorf("GPU %d (%s) is not published", g.Index, g.UUID)
			continue
		}
		if got := d.Attributes["uuid"].StringValue; got == nil || *got != g.UUID {
			t.Errorf("%s uuid %v, want %s", d.Name, got, g.UUID)
		}
		if got := d.Attributes["productName"].StringValue; got == nil || *got != g.ProductName {
			t.Errorf("%s productName %v, want %s", d.Name, got, g.ProductName)
		}
		mem := d.Capacity["memory"].Value
		if mem.Cmp(*resource.NewQuantity(int64(g.MemoryBytes), resource.BinarySI)) != 0 {
			t.Errorf("%s memory %s, want %d bytes", d.Name, mem.String(), g.MemoryBytes)
		}
	}
	return want
}

// gpuView is what one container printed between the demo's markers.
type gpuView struct {
	minors  []string
	control bool
	env     []string
	libs    []string
	smi     []string // the GPUs of `nvidia-smi -L`, "<name> <UUID>"
}

func viewOf(t *testing.T, ns, pod, container string) gpuView {
	t.Helper()
	logs := kubectl(t, "-n", ns, "logs", pod, "-c", container)
	start, end := strings.Index(logs, "GPU-VIEW-BEGIN"), strings.Index(logs, "GPU-VIEW-END")
	if start < 0 || end < start {
		t.Fatalf("%s/%s[%s]: no GPU view in the log:\n%s", ns, pod, container, logs)
	}
	var v gpuView
	v.smi = smiGPUs(t, logs[start:end])
	for _, line := range strings.Split(logs[start:end], "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		last := fields[len(fields)-1]
		switch {
		case devNode.MatchString(last):
			if !strings.HasPrefix(fields[0], "c") {
				t.Errorf("%s/%s[%s]: %s is not a character device: %s", ns, pod, container, last, line)
			}
			v.minors = append(v.minors, devNode.FindStringSubmatch(last)[1])
		case last == "/dev/nvidiactl":
			v.control = true
		case strings.HasPrefix(line, "NVIDIA_"):
			v.env = append(v.env, line)
		case strings.HasPrefix(line, "lib"):
			v.libs = append(v.libs, line)
		}
	}
	sort.Strings(v.minors)
	return v
}

// allocatedMinors returns, per pod claim name, the minors of the GPUs the
// scheduler allocated (mock GPU "gpu-N" has minor N).
func allocatedMinors(t *testing.T, c kubernetes.Interface, pod *corev1.Pod) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for name, claim := range podClaims(t, c, pod, false) {
		if claim.Status.Allocation == nil {
			t.Fatalf("claim %s of running pod %s is not allocated", claim.Name, pod.Name)
		}
		for _, r := range claim.Status.Allocation.Devices.Results {
			if r.Driver == driverName {
				out[name] = append(out[name], strings.TrimPrefix(r.Device, "gpu-"))
			}
		}
		sort.Strings(out[name])
	}
	return out
}

// specFiles lists the claim specs of this driver in cdiRoot: those of the
// prepared claims with settings of their own (see checkClaimCDI).
func specFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(cdiRoot)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "k8s."+driverName+"-claim_") {
			out = append(out, e.Name())
		}
	}
	return out
}

func runWave(t *testing.T, c kubernetes.Interface, wave string, files ...string) map[string]gpuView {
	t.Helper()
	ctx := context.Background()
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	for _, f := range files {
		matches, _ := filepath.Glob(filepath.Join(repoRoot, "demo", f+"-*.yaml"))
		if len(matches) != 1 {
			t.Fatalf("demo %s: %v", f, matches)
		}
		kubectl(t, "apply", "-f", matches[0])
	}
	selector := "gpudra.demo/wave=" + wave
	var pods []corev1.Pod
	eventually(t, 3*time.Minute, "wave "+wave+" pods Running", func() (bool, string) {
		list, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error()
		}
		pods = list.Items
		var notReady []string
		for _, p := range pods {
			ready := p.Status.Phase == corev1.PodRunning
			for _, cs := range p.Status.ContainerStatuses {
				ready = ready && cs.Ready
			}
			if !ready {
				notReady = append(notReady, fmt.Sprintf("%s (%s)", p.Name, p.Status.Phase))
			}
		}
		if len(notReady) > 0 {
			msg := kubectl(t, "get", "events", "-A", "--field-selector", "type=Warning", "-o", "custom-columns=OBJ:.involvedObject.name,REASON:.reason,MSG:.message")
			return false, fmt.Sprintf("not ready: %v\n%s", notReady, msg)
		}
		return len(pods) > 0, "no pods"
	})

	views := map[string]gpuView{}
	for i := range pods {
		p := &pods[i]
		alloc := allocatedMinors(t, c, p)
		for _, ctr := range p.Spec.Containers {
			v := viewOf(t, p.Namespace, p.Name, ctr.Name)
			views[p.Name+"/"+ctr.Name] = v
			var want []string
			for _, rc := range ctr.Resources.Claims {
				want = append(want, alloc[rc.Name]...)
			}
			sort.Strings(want)
			if strings.Join(v.minors, ",") != strings.Join(want, ",") {
				t.Errorf("%s/%s[%s] sees GPUs %v, want exactly its allocated %v", p.Namespace, p.Name, ctr.Name, v.minors, want)
			}
			if runsNvidiaSMI(ctr) {
				if wantSMI := wantSMIGPUs(t, c, want); strings.Join(v.smi, ",") != strings.Join(wantSMI, ",") {
					t.Errorf("%s/%s[%s]: nvidia-smi -L lists %v, want exactly its allocated %v", p.Namespace, p.Name, ctr.Name, v.smi, wantSMI)
				}
			}
			if !v.control {
				t.Errorf("%s[%s]: no /dev/nvidiactl", p.Name, ctr.Name)
			}
			if !contains(v.env, "NVIDIA_VISIBLE_DEVICES=void") {
				t.Errorf("%s[%s]: env %v lacks NVIDIA_VISIBLE_DEVICES=void", p.Name, ctr.Name, v.env)
			}
			if !containsPrefix(v.libs, "libcuda.so.") {
				t.Errorf("%s[%s]: driver libraries not injected: %v", p.Name, ctr.Name, v.libs)
			}
		}
	}
	// How each claim was prepared for CDI: a claim spec only for the claims
	// with settings of their own, the static device spec for the others;
	// no claim spec of another claim.
	store := claimStore(t)
	checked := map[string]bool{}
	withSpec := 0
	for i := range pods {
		for _, claim := range podClaims(t, c, &pods[i], false) {
			if checked[string(claim.UID)] {
				continue // shared by pods
			}
			checked[string(claim.UID)] = true
			if checkClaimCDI(t, c, store, claim) {
				withSpec++
			}
		}
	}
	if files := specFiles(t); len(files) != withSpec {
		t.Errorf("claim specs %v in %s while the pods run, want those of the %d claims with settings of their own", files, cdiRoot, withSpec)
	}
	return views
}

// deleteWave deletes the pods of wave and waits until their claims are
// unprepared: their records gone from the plugin's checkpoint (a claim
// without settings of its own has nothing else), and no claim spec left.
func deleteWave(t *testing.T, c kubernetes.Interface, wave string) {
	t.Helper()
	uids := waveClaimUIDs(t, c, wave)
	kubectl(t, "delete", "pods", "-A", "-l", "gpudra.demo/wave="+wave, "--wait=true", "--timeout=2m")
	kubectl(t, "-n", "gpudra-demo", "delete", "resourceclaim", "shared-gpu", "--ignore-not-found", "--wait=true")
	store := claimStore(t)
	eventually(t, 2*time.Minute, "claims unprepared and specs removed", func() (bool, string) {
		var recorded []string
		for _, uid := range uids {
			if rec, err := store.Get(string(uid)); err != nil || rec != nil {
				recorded = append(recorded, fmt.Sprintf("%s (%v)", uid, err))
			}
		}
		files := specFiles(t)
		return len(files)+len(recorded) == 0, fmt.Sprintf("specs left: %v; claims still recorded: %v", files, recorded)
	})
}

func TestDemoWorkloadsGetExactlyTheirGPUs(t *testing.T) {
	c := client(t)
	t.Cleanup(func() {
		_ = exec.Command("kubectl", "delete", "ns", "gpudra-demo", "gpudra-demo-admin", "--wait=true", "--timeout=2m").Run()
	})

	views := runWave(t, c, "1", "01", "02", "03", "04")
	if got := len(views["two-gpus/ctr"].minors); got != 2 {
		t.Errorf("two-gpus sees %d GPUs, want 2", got)
	}
	if a, b := views["shared-by-containers/ctr0"].minors, views["shared-by-containers/ctr1"].minors; fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 1 {
		t.Errorf("containers sharing a claim see %v and %v, want the same one GPU", a, b)
	}
	if a, b := views["shared-by-pods-0/ctr"].minors, views["shared-by-pods-1/ctr"].minors; fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 1 {
		t.Errorf("pods sharing a claim see %v and %v, want the same one GPU", a, b)
	}
	deleteWave(t, c, "1")

	views = runWave(t, c, "2", "05", "06", "07", "08", "09")
	if got := views["admin-access/ctr"].minors; fmt.Sprint(got) != "[0]" {
		t.Errorf("admin access pod sees %v, want GPU 0 (its selector)", got)
	}
	deleteWave(t, c, "2")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsPrefix(list []string, p string) bool {
	for _, x := range list {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}

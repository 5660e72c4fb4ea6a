//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// Dynamic MIG (chart dynamicMIG.enabled=true on the mock dgxh100, set by
// hack/e2e.sh's dynamic MIG phase): every GPU is partitionable, published
// whole, as one device per MIG profile and placement, and with a counter
// set; preparing a partition creates the MIG device on the mock machine,
// whose MIG state the plugin keeps in <hostStateDir>/mock/mig-state.json.
//
// The sub-tests run one after the other and each cleans up after itself;
// those that pin their claims to GPUs use GPUs of their own: 3 (two
// 3g.40gb partitions fill it), 5 (whole GPU against partitions), 6 and 7
// (health). The unpinned demos run when nothing else holds a GPU.

// dynamicMIGMode skips a test unless hack/e2e.sh runs the dynamic MIG phase.
func dynamicMIGMode(t *testing.T) {
	t.Helper()
	if os.Getenv("GPUDRA_E2E_MODE") != "dynamic-mig" {
		t.Skip("the chart does not run with dynamicMIG.enabled (GPUDRA_E2E_MODE=dynamic-mig)")
	}
}

// dynMIGDevice is the name of a partition, "gpu-<i>-mig-<profile without
// dots>-<GI profile ID>-<placement start>".
var dynMIGDevice = regexp.MustCompile(`^gpu-(\d+)-mig-[0-9a-z-]+-(\d+)-(\d+)$`)

// mockMIGState is the part of the mock machine's MIG state file that the
// tests read (see pkg/mockmachine/migstate.go).
type mockMIGState struct {
	Machine string `json:"machine"`
	GPUs    []struct {
		Index          int `json:"index"`
		MIGMode        int `json:"migMode"`
		PendingMIGMode int `json:"pendingMigMode"`
		GPUInstances   []struct {
			ID               uint32            `json:"id"`
			ProfileID        uint32            `json:"profileId"`
			Start            uint32            `json:"start"`
			ComputeInstances []json.RawMessage `json:"computeInstances"`
		} `json:"gpuInstances"`
	} `json:"gpus"`
}

func migStatePath() string { return filepath.Join(hostStateDir, "mock", "mig-state.json") }

// readMIGState reads the mock MIG state file; no file is a machine on
// which nothing was ever changed.
func readMIGState(t *testing.T) mockMIGState {
	t.Helper()
	var st mockMIGState
	data, err := os.ReadFile(migStatePath())
	if os.IsNotExist(err) {
		return st
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("mock MIG state %s: %v\n%s", migStatePath(), err, data)
	}
	return st
}

// hasGPUInstance tells whether the mock machine holds the GPU instance of
// partition device (its GPU, GI profile ID and placement start), with a
// compute instance in it.
func hasGPUInstance(t *testing.T, device string) (bool, string) {
	t.Helper()
	m := dynMIGDevice.FindStringSubmatch(device)
	if m == nil {
		t.Fatalf("%s is not a partition's name", device)
	}
	gpu, _ := strconv.Atoi(m[1])
	profile, _ := strconv.Atoi(m[2])
	start, _ := strconv.Atoi(m[3])
	st := readMIGState(t)
	for _, g := range st.GPUs {
		if g.Index != gpu {
			continue
		}
		for _, gi := range g.GPUInstances {
			if int(gi.ProfileID) == profile && int(gi.Start) == start {
				return len(gi.ComputeInstances) == 1, fmt.Sprintf("GPU %d: GPU instance %d (profile %d at %d) with %d compute instances",
					gpu, gi.ID, gi.ProfileID, gi.Start, len(gi.ComputeInstances))
			}
		}
		return false, fmt.Sprintf("GPU %d (MIG mode %d) has no GPU instance of profile %d at %d: %+v", gpu, g.MIGMode, profile, start, g.GPUInstances)
	}
	return false, fmt.Sprintf("GPU %d not in the state file (%d GPUs)", gpu, len(st.GPUs))
}

// migModeOf returns the current MIG mode of mock GPU gpu (0 without a
// state file) and its number of GPU instances.
func migModeOf(t *testing.T, gpu int) (int, int) {
	t.Helper()
	for _, g := range readMIGState(t).GPUs {
		if g.Index == gpu {
			return g.MIGMode, len(g.GPUInstances)
		}
	}
	return 0, 0
}

// ourSlices returns this driver's ResourceSlices.
func ourSlices(t *testing.T, c kubernetes.Interface) []resourceapi.ResourceSlice {
	t.Helper()
	list, err := c.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []resourceapi.ResourceSlice
	for _, s := range list.Items {
		if s.Spec.Driver == driverName {
			out = append(out, s)
		}
	}
	return out
}

// applyYAML applies a manifest.
func applyYAML(t *testing.T, name, manifest string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", f)
}

// applyClaimTemplate creates namespace ns (if missing) and a
// ResourceClaimTemplate named name whose one request "dev" asks for a device
// of class with the CEL selector cel.
func applyClaimTemplate(t *testing.T, ns, name, class, cel string) {
	t.Helper()
	applyYAML(t, ns+"-"+name, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  spec:
    devices:
      requests:
      - name: dev
        exactly:
          deviceClassName: %[3]s
          selectors:
          - cel: {expression: '%[4]s'}
`, ns, name, class, cel))
}

// applyTemplatePod creates a pod named pod in ns whose claim comes from the
// ResourceClaimTemplate template and that lists its device nodes.
func applyTemplatePod(t *testing.T, ns, pod, template string) {
	t.Helper()
	applyClaimPod(t, ns, pod, "dev", template, `echo GPU-VIEW-BEGIN; ls -l /dev/nvidia* /dev/nvidia-caps 2>/dev/null; echo GPU-VIEW-END; sleep 3600`)
}

// applyClaimPod creates a busybox pod named pod in ns that runs command
// (a sh script) with a claim named claim from the ResourceClaimTemplate
// template.
func applyClaimPod(t *testing.T, ns, pod, claim, template, command string) {
	t.Helper()
	script, err := json.Marshal(command)
	if err != nil {
		t.Fatal(err)
	}
	applyYAML(t, ns+"-"+pod, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: ctr
    image: localhost/e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", %[5]s]
    resources: {claims: [{name: %[4]s}]}
  resourceClaims: [{name: %[4]s, resourceClaimTemplateName: %[3]s}]
`, ns, pod, template, claim, script))
}

// waitPodRunning waits until the pod runs and returns it.
func waitPodRunning(t *testing.T, c kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 2*time.Minute, "pod "+ns+"/"+name+" Running", func() (bool, string) {
		p, err := c.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		pod = p
		if p.Status.Phase == corev1.PodRunning {
			return true, ""
		}
		return false, fmt.Sprintf("phase %s, conditions %+v\n%s", p.Status.Phase, p.Status.Conditions, warningEvents(t, ns))
	})
	return pod
}

func warningEvents(t *testing.T, ns string) string {
	t.Helper()
	return kubectl(t, "-n", ns, "get", "events", "--field-selector", "type=Warning",
		"-o", "custom-columns=OBJ:.involvedObject.name,REASON:.reason,MSG:.message")
}

// expectUnschedulable waits until the scheduler has tried the pod and found
// no devices for it (PodScheduled False, reason Unschedulable), and checks
// that its claim got no allocation and that it is not bound to the node.
func expectUnschedulable(t *testing.T, c kubernetes.Interface, ns, name string) {
	t.Helper()
	eventually(t, time.Minute, "pod "+ns+"/"+name+" unschedulable", func() (bool, string) {
		p, err := c.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Spec.NodeName != "" {
			t.Fatalf("pod %s/%s was scheduled (phase %s) although no device is free for it; claim: %v", ns, name, p.Status.Phase, claimDevices(t, c, p))
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
				return true, ""
			}
		}
		return false, fmt.Sprintf("conditions %+v", p.Status.Conditions)
	})
	p, err := c.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
		t.Fatalf("pod %s/%s: node %q, phase %s; want it Pending", ns, name, p.Spec.NodeName, p.Status.Phase)
	}
	if devs := claimDevices(t, c, p); len(devs) != 0 {
		t.Fatalf("claim of unschedulable pod %s/%s is allocated %v", ns, name, devs)
	}
}

// podClaim returns the pod's one ResourceClaim (generated from its
// template), or nil while there is none.
func podClaim(t *testing.T, c kubernetes.Interface, p *corev1.Pod) *resourceapi.ResourceClaim {
	t.Helper()
	for _, st := range p.Status.ResourceClaimStatuses {
		if st.ResourceClaimName == nil {
			continue
		}
		claim, err := c.ResourceV1().ResourceClaims(p.Namespace).Get(context.Background(), *st.ResourceClaimName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return claim
	}
	return nil
}

// claimDevices returns "<request> <device>" of each of this driver's
// allocation results of the pod's claim.
func claimDevices(t *testing.T, c kubernetes.Interface, p *corev1.Pod) []string {
	t.Helper()
	claim := podClaim(t, c, p)
	if claim == nil || claim.Status.Allocation == nil {
		return nil
	}
	var out []string
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver == driverName {
			out = append(out, r.Request+" "+r.Device)
		}
	}
	sort.Strings(out)
	return out
}

// allocatedDevice returns the one device allocated to the running pod's
// claim and the request it was allocated for.
func allocatedDevice(t *testing.T, c kubernetes.Interface, p *corev1.Pod) (request, device string) {
	t.Helper()
	devs := claimDevices(t, c, p)
	if len(devs) != 1 {
		t.Fatalf("claim of pod %s/%s is allocated %v, want one device", p.Namespace, p.Name, devs)
	}
	request, device, _ = strings.Cut(devs[0], " ")
	return request, device
}

// migView is what a container printed of its device nodes: the minors of
// its /dev/nvidia<minor> nodes and the names of its MIG capability nodes.
func migView(t *testing.T, ns, pod string) (minors []string, caps []string) {
	t.Helper()
	eventually(t, 30*time.Second, ns+"/"+pod+"'s view", func() (bool, string) {
		logs := kubectl(t, "-n", ns, "logs", pod)
		return strings.Contains(logs, "GPU-VIEW-END"), logs
	})
	v := viewOf(t, ns, pod, "ctr")
	logs := kubectl(t, "-n", ns, "logs", pod)
	seen := map[string]bool{} // ls lists /dev/nvidia-caps twice (the glob has it too)
	for _, line := range strings.Split(logs, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "c") && strings.HasPrefix(f[len(f)-1], "nvidia-cap") && !seen[f[len(f)-1]] {
			seen[f[len(f)-1]] = true
			caps = append(caps, f[len(f)-1])
		}
	}
	sort.Strings(caps)
	return v.minors, caps
}

func deleteNamespace(t *testing.T, ns string) {
	t.Helper()
	kubectl(t, "delete", "ns", ns, "--wait=true", "--timeout=2m", "--ignore-not-found")
}

func deletePod(t *testing.T, ns, pod string) {
	t.Helper()
	kubectl(t, "-n", ns, "delete", "pod", pod, "--wait=true", "--timeout=2m")
}

// expectInstanceGone waits until the mock machine no longer holds the GPU
// instance of partition device and, when no other GPU instance is left on
// its GPU, until the GPU has left MIG mode.
func expectInstanceGone(t *testing.T, device string) {
	t.Helper()
	gpu, _ := strconv.Atoi(dynMIGDevice.FindStringSubmatch(device)[1])
	eventually(t, time.Minute, "MIG device "+device+" destroyed and GPU "+strconv.Itoa(gpu)+" out of MIG mode", func() (bool, string) {
		if ok, msg := hasGPUInstance(t, device); ok {
			return false, "still there: " + msg
		}
		mode, gis := migModeOf(t, gpu)
		return mode == 0 && gis == 0, fmt.Sprintf("GPU %d: MIG mode %d, %d GPU instances", gpu, mode, gis)
	})
}

// gpuUUIDOf returns the UUID of the published whole GPU gpu-<i>.
func gpuUUIDOf(t *testing.T, c kubernetes.Interface, gpu int) string {
	t.Helper()
	uuid := deviceAttr(t, c, "gpu-"+strconv.Itoa(gpu), resourceslice.AttrUUID)
	if uuid == "" {
		t.Fatalf("gpu-%d has no uuid", gpu)
	}
	return uuid
}

func TestDynamicMIG(t *testing.T) {
	dynamicMIGMode(t)
	c := client(t)
	eventually(t, 2*time.Minute, "partitions published", func() (bool, string) {
		d := publishedDevice(t, c, "gpu-7-mig-1g20gb-15-6")
		return d != nil, "gpu-7-mig-1g20gb-15-6 not published yet"
	})
	t.Run("Slices", func(t *testing.T) { testDynamicMIGSlices(t, c) })
	t.Run("Demo15", func(t *testing.T) { testDynamicMIGDemo(t, c) })
	t.Run("PartitionsFillOneGPU", func(t *testing.T) { testDynamicMIGPartitionsFillGPU(t, c) })
	t.Run("WholeGPUAgainstPartitions", func(t *testing.T) { testDynamicMIGWholeGPU(t, c) })
	t.Run("HealthTaintsPartitions", func(t *testing.T) { testDynamicMIGHealth(t, c) })
	t.Run("Demo16FirstAvailable", func(t *testing.T) { testDynamicMIGFirstAvailable(t, c) })
}

// testDynamicMIGSlices: one counter set per GPU, the whole GPU consuming all
// of its set, a partition its profile's share and its memory slice.
func testDynamicMIGSlices(t *testing.T, c kubernetes.Interface) {
	slices := ourSlices(t, c)
	sets := map[string]resourceapi.CounterSet{}
	devs := map[string]resourceapi.Device{}
	gpus := 0
	for _, s := range slices {
		if len(s.Spec.SharedCounters) > 0 && len(s.Spec.Devices) > 0 {
			t.Errorf("slice %s has counter sets and devices; want counter sets in slices of their own", s.Name)
		}
		for _, cs := range s.Spec.SharedCounters {
			if _, dup := sets[cs.Name]; dup {
				t.Errorf("counter set %s published twice", cs.Name)
			}
			sets[cs.Name] = cs
		}
		for _, d := range s.Spec.Devices {
			devs[d.Name] = d
			if ptr.Deref(d.Attributes[resourceslice.AttrType].StringValue, "") == "gpu" {
				gpus++
			}
		}
	}
	if gpus != 8 || len(sets) != 8 {
		t.Errorf("%d whole GPUs and %d counter sets published, want 8 of each", gpus, len(sets))
	}
	for i := 0; i < 8; i++ {
		name := fmt.Sprintf("gpu-%d-counter-set", i)
		cs, ok := sets[name]
		if !ok {
			t.Errorf("no counter set %s (have %v)", name, keys(sets))
			continue
		}
		for _, counter := range []string{"memory", "multiprocessors", "memory-slice-0", "memory-slice-7"} {
			if _, ok := cs.Counters[counter]; !ok {
				t.Errorf("counter set %s lacks counter %s: %v", name, counter, cs.Counters)
			}
		}
	}

	whole, ok := devs["gpu-0"]
	set := sets["gpu-0-counter-set"]
	switch {
	case !ok:
		t.Error("gpu-0 is not published whole")
	case len(whole.ConsumesCounters) != 1 || whole.ConsumesCounters[0].CounterSet != "gpu-0-counter-set":
		t.Errorf("gpu-0 consumes %+v, want the counters of gpu-0-counter-set", whole.ConsumesCounters)
	default:
		got := whole.ConsumesCounters[0].Counters
		if len(got) != len(set.Counters) {
			t.Errorf("gpu-0 consumes %d counters of its set, want all %d", len(got), len(set.Counters))
		}
		for k, v := range set.Counters {
			if g, ok := got[k]; !ok || g.Value.Cmp(v.Value) != 0 {
				t.Errorf("gpu-0 consumes %s = %v, want all of it (%s)", k, got[k], v.Value.String())
			}
		}
	}

	const part = "gpu-0-mig-1g10gb-19-0"
	d, ok := devs[part]
	if !ok {
		t.Fatalf("%s is not published", part)
	}
	if typ := ptr.Deref(d.Attributes[resourceslice.AttrType].StringValue, ""); typ != "mig" {
		t.Errorf("%s type %q, want mig", part, typ)
	}
	if p := ptr.Deref(d.Attributes[resourceslice.AttrProfile].StringValue, ""); p != "1g.10gb" {
		t.Errorf("%s profile %q, want 1g.10gb", part, p)
	}
	if parent := ptr.Deref(d.Attributes[resourceslice.AttrParentUUID].StringValue, ""); parent == "" || parent != ptr.Deref(whole.Attributes[resourceslice.AttrUUID].StringValue, "") {
		t.Errorf("%s parentUUID %q, want gpu-0's uuid", part, parent)
	}
	if _, has := d.Attributes[resourceslice.AttrUUID]; has {
		t.Errorf("%s has a uuid before it exists: %+v", part, d.Attributes[resourceslice.AttrUUID])
	}
	if len(d.ConsumesCounters) != 1 || d.ConsumesCounters[0].CounterSet != "gpu-0-counter-set" {
		t.Fatalf("%s consumes %+v, want counters of gpu-0-counter-set", part, d.ConsumesCounters)
	}
	got := d.ConsumesCounters[0].Counters
	if _, ok := got["memory-slice-0"]; !ok {
		t.Errorf("%s does not consume memory-slice-0 (its placement): %v", part, keys(got))
	}
	if _, ok := got["memory-slice-1"]; ok {
		t.Errorf("%s consumes memory-slice-1, outside its placement", part)
	}
	if m, all := got["memory"].Value, set.Counters["memory"].Value; m.Sign() <= 0 || m.Cmp(all) >= 0 {
		t.Errorf("%s consumes memory %s, want a part of the GPU's %s", part, m.String(), all.String())
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// testDynamicMIGDemo runs demo 15: a 1g.10gb partition made when the claim
// is prepared and destroyed when it is unprepared.
func testDynamicMIGDemo(t *testing.T, c kubernetes.Interface) {
	t.Cleanup(func() { deleteNamespace(t, "gpudra-demo") })
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "15-dynamic-mig.yaml"))
	p := waitPodRunning(t, c, "gpudra-demo", "dynamic-mig")
	req, device := allocatedDevice(t, c, p)
	if req != "mig" || !regexp.MustCompile(`^gpu-\d+-mig-1g10gb-19-\d$`).MatchString(device) {
		t.Fatalf("demo 15's claim is allocated %s for request %s, want a 1g.10gb partition (gpu-<i>-mig-1g10gb-19-<start>) for request mig", device, req)
	}
	t.Logf("demo 15's claim: %s", device)
	gpu := dynMIGDevice.FindStringSubmatch(device)[1]
	minors, caps := migView(t, "gpudra-demo", "dynamic-mig")
	if fmt.Sprint(minors) != "["+gpu+"]" {
		t.Errorf("demo 15's pod sees GPUs %v, want only its parent gpu-%s (/dev/nvidia%s)", minors, gpu, gpu)
	}
	if len(caps) != 2 {
		t.Errorf("demo 15's pod sees MIG capability nodes %v, want 2 (its GPU instance and compute instance)", caps)
	}
	if ok, msg := hasGPUInstance(t, device); !ok {
		t.Errorf("mock machine while %s is prepared: %s", device, msg)
	}
	if mode, _ := migModeOf(t, mustAtoi(gpu)); mode != 1 {
		t.Errorf("gpu-%s MIG mode %d while its partition is prepared, want 1", gpu, mode)
	}

	kubectl(t, "delete", "-f", filepath.Join(repoRoot, "demo", "15-dynamic-mig.yaml"), "--wait=true", "--timeout=2m")
	expectInstanceGone(t, device)
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// testDynamicMIGPartitionsFillGPU: two 3g.40gb partitions fill gpu-3 (its
// two placements); a third waits until one of them is released.
func testDynamicMIGPartitionsFillGPU(t *testing.T, c kubernetes.Interface) {
	const ns = "gpudra-dynmig-fill"
	t.Cleanup(func() { deleteNamespace(t, ns) })
	uuid := gpuUUIDOf(t, c, 3)
	applyClaimTemplate(t, ns, "mig-3g-gpu3", "mig.nvidia.com",
		fmt.Sprintf(`device.attributes["%s"].parentUUID == "%s" && device.attributes["%s"].profile == "3g.40gb"`, driverName, uuid, driverName))
	applyTemplatePod(t, ns, "a", "mig-3g-gpu3")
	applyTemplatePod(t, ns, "b", "mig-3g-gpu3")
	pods := map[string]string{}
	for _, name := range []string{"a", "b"} {
		_, pods[name] = allocatedDevice(t, c, waitPodRunning(t, c, ns, name))
	}
	if got := []string{pods["a"], pods["b"]}; !sameSet(got, []string{"gpu-3-mig-3g40gb-9-0", "gpu-3-mig-3g40gb-9-4"}) {
		t.Fatalf("two 3g.40gb pods on gpu-3 got %v, want its two placements gpu-3-mig-3g40gb-9-0 and -9-4", got)
	}
	t.Logf("pods a and b run on %s and %s", pods["a"], pods["b"])
	for name, dev := range pods {
		if ok, msg := hasGPUInstance(t, dev); !ok {
			t.Errorf("pod %s runs, its %s on the mock machine: %s", name, dev, msg)
		}
		if minors, caps := migView(t, ns, name); fmt.Sprint(minors) != "[3]" || len(caps) != 2 {
			t.Errorf("pod %s sees GPUs %v and MIG capability nodes %v, want gpu-3 and 2", name, minors, caps)
		}
	}

	applyTemplatePod(t, ns, "c", "mig-3g-gpu3")
	expectUnschedulable(t, c, ns, "c")

	deletePod(t, ns, "a")
	_, dev := allocatedDevice(t, c, waitPodRunning(t, c, ns, "c"))
	if dev != pods["a"] {
		t.Errorf("third pod got %s, want %s, released by the first", dev, pods["a"])
	}
	if ok, msg := hasGPUInstance(t, dev); !ok {
		t.Errorf("third pod runs, its %s on the mock machine: %s", dev, msg)
	}
	deleteNamespace(t, ns)
	expectInstanceGone(t, pods["a"])
	expectInstanceGone(t, pods["b"])
}

func sameSet(a, b []string) bool {
	a, b = append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(a)
	sort.Strings(b)
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// testDynamicMIGWholeGPU: gpu-5 whole and its partitions exclude each other.
func testDynamicMIGWholeGPU(t *testing.T, c kubernetes.Interface) {
	const ns = "gpudra-dynmig-whole"
	t.Cleanup(func() { deleteNamespace(t, ns) })
	uuid := gpuUUIDOf(t, c, 5)
	applyClaimTemplate(t, ns, "whole-gpu5", "gpu.nvidia.com", fmt.Sprintf(`device.attributes["%s"].uuid == "%s"`, driverName, uuid))
	applyClaimTemplate(t, ns, "mig-gpu5", "mig.nvidia.com",
		fmt.Sprintf(`device.attributes["%s"].parentUUID == "%s" && device.attributes["%s"].profile == "1g.10gb"`, driverName, uuid, driverName))

	applyTemplatePod(t, ns, "mig", "mig-gpu5")
	_, part := allocatedDevice(t, c, waitPodRunning(t, c, ns, "mig"))
	if !strings.HasPrefix(part, "gpu-5-mig-1g10gb-19-") {
		t.Fatalf("MIG pod pinned to gpu-5 got %s", part)
	}
	applyTemplatePod(t, ns, "whole", "whole-gpu5")
	expectUnschedulable(t, c, ns, "whole")

	deletePod(t, ns, "mig")
	p := waitPodRunning(t, c, ns, "whole")
	if _, dev := allocatedDevice(t, c, p); dev != "gpu-5" {
		t.Fatalf("whole-GPU pod got %s, want gpu-5", dev)
	}
	expectInstanceGone(t, part)
	if minors, caps := migView(t, ns, "whole"); fmt.Sprint(minors) != "[5]" || len(caps) != 0 {
		t.Errorf("whole-GPU pod sees GPUs %v and MIG capability nodes %v, want gpu-5 and none", minors, caps)
	}

	applyTemplatePod(t, ns, "mig2", "mig-gpu5")
	expectUnschedulable(t, c, ns, "mig2")
	if mode, gis := migModeOf(t, 5); mode != 0 || gis != 0 {
		t.Errorf("gpu-5 in MIG mode %d with %d GPU instances while it is allocated whole", mode, gis)
	}
}

// testDynamicMIGHealth: a critical XID on gpu-6 taints it whole and all of
// its partitions, and none of gpu-7's devices; the taints go once it
// recovers (hack/e2e.sh sets health.recoveryPeriod), or else the test
// restarts the plugin so that the GPU is healthy again for what follows.
func testDynamicMIGHealth(t *testing.T, c kubernetes.Interface) {
	uuid := gpuUUIDOf(t, c, 6)
	// tainted returns the names of gpu-<i>'s devices (whole and partitions)
	// with the unhealthy taint, and those without.
	tainted := func(gpu int) (with, without []string) {
		prefix := "gpu-" + strconv.Itoa(gpu)
		for _, s := range ourSlices(t, c) {
			for _, d := range s.Spec.Devices {
				if d.Name != prefix && !strings.HasPrefix(d.Name, prefix+"-mig-") {
					continue
				}
				found := false
				for _, tt := range d.Taints {
					if tt.Key == driverName+"/unhealthy" {
						found = true
						if tt.Value != "xid-48" || tt.Effect != resourceapi.DeviceTaintEffectNoSchedule {
							t.Errorf("%s taint %+v, want %s/unhealthy=xid-48:NoSchedule", d.Name, tt, driverName)
						}
					}
				}
				if found {
					with = append(with, d.Name)
				} else {
					without = append(without, d.Name)
				}
			}
		}
		return with, without
	}
	t.Cleanup(func() {
		if with, _ := tainted(6); len(with) == 0 {
			return
		}
		if period := recoveryPeriod(t, c); period != "" && period != "0s" && period != "0" {
			eventually(t, 2*time.Minute, "gpu-6 recovered (taints gone)", func() (bool, string) {
				with, _ := tainted(6)
				return len(with) == 0, fmt.Sprintf("still tainted: %v", with)
			})
			return
		}
		t.Log("health.recoveryPeriod is 0: restarting the plugin so that gpu-6 is healthy again")
		restartPlugin(t, c)
		eventually(t, 2*time.Minute, "gpu-6 untainted after the restart", func() (bool, string) {
			with, without := tainted(6)
			return len(with) == 0 && len(without) > 0, fmt.Sprintf("tainted %v", with)
		})
	})

	injectXIDUntil(t, uuid, "taints on gpu-6 and its partitions", func() (bool, string) {
		with, without := tainted(6)
		return len(with) > 0 && len(without) == 0, fmt.Sprintf("tainted %d devices, untainted %d", len(with), len(without))
	})
	with, _ := tainted(6)
	if !contains(with, "gpu-6") || !contains(with, "gpu-6-mig-1g10gb-19-0") || !contains(with, "gpu-6-mig-7g80gb-0-0") || len(with) < 20 {
		t.Errorf("tainted devices %v, want gpu-6 and all its partitions", with)
	}
	if other, clean := tainted(7); len(other) != 0 || len(clean) < 20 {
		t.Errorf("gpu-7's devices tainted too: %v (untainted: %d)", other, len(clean))
	}
}

// recoveryPeriod returns the kubelet plugin's HEALTH_RECOVERY_PERIOD.
func recoveryPeriod(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	for _, p := range pluginPods(t, c) {
		for _, ctr := range p.Spec.Containers {
			for _, e := range ctr.Env {
				if e.Name == "HEALTH_RECOVERY_PERIOD" {
					return e.Value
				}
			}
		}
	}
	return ""
}

// testDynamicMIGFirstAvailable runs demo 16: of its prioritized list, the
// first alternative (a 1g.10gb partition) is allocated.
func testDynamicMIGFirstAvailable(t *testing.T, c kubernetes.Interface) {
	t.Cleanup(func() { deleteNamespace(t, "gpudra-demo") })
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "16-first-available.yaml"))
	p := waitPodRunning(t, c, "gpudra-demo", "first-available")
	req, device := allocatedDevice(t, c, p)
	t.Logf("demo 16's claim: %s for request %s", device, req)
	if req != "gpu/mig" || !regexp.MustCompile(`^gpu-\d+-mig-1g10gb-19-\d$`).MatchString(device) {
		t.Fatalf("demo 16's claim is allocated %s for request %q, want a 1g.10gb partition for subrequest gpu/mig", device, req)
	}
	d := publishedDevice(t, c, device)
	if d == nil || ptr.Deref(d.Attributes[resourceslice.AttrType].StringValue, "") != "mig" {
		t.Errorf("allocated %s is not a published MIG device: %+v", device, d)
	}
	gpu := dynMIGDevice.FindStringSubmatch(device)[1]
	if minors, caps := migView(t, "gpudra-demo", "first-available"); fmt.Sprint(minors) != "["+gpu+"]" || len(caps) != 2 {
		t.Errorf("demo 16's pod sees GPUs %v and MIG capability nodes %v, want gpu-%s and 2", minors, caps, gpu)
	}
	if ok, msg := hasGPUInstance(t, device); !ok {
		t.Errorf("mock machine while %s is prepared: %s", device, msg)
	}
	kubectl(t, "delete", "-f", filepath.Join(repoRoot, "demo", "16-first-available.yaml"), "--wait=true", "--timeout=2m")
	expectInstanceGone(t, device)
}

//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/gpudra/gpudra/pkg/resourceslice"
	"github.com/gpudra/gpudra/pkg/sharing/mps"
)

// GPU shares (DRA consumable capacity, KEP-5075), in hack/e2e.sh's shares
// phases on the mock dgxh100 (8 GPUs of 80Gi):
//
//   - GPUDRA_E2E_MODE=shares: consumableCapacity=memory with MPS
//     (TestGPUSharesByMemory);
//   - GPUDRA_E2E_MODE=shares-4: consumableCapacity=4 with MPS
//     (TestGPUComputeShares);
//   - GPUDRA_E2E_MODE=shares-unenforced: consumableCapacity=4 with
//     mps.enabled=false (TestGPUSharesNotEnforced).
//
// The claims are pinned by GPU index (demos 17 and 18: index 0) so that
// every placement is forced: gpu-0 takes the shares, gpu-1 what no longer
// fits on gpu-0.

const sharesNS = "gpudra-shares"

func sharesMode(t *testing.T, mode string) {
	t.Helper()
	if m := os.Getenv("GPUDRA_E2E_MODE"); m != mode {
		t.Skipf("the chart is not in the %s phase (GPUDRA_E2E_MODE=%q)", mode, m)
	}
}

// mib is n MiB as a quantity.
func mib(n int64) resource.Quantity { return *resource.NewQuantity(n<<20, resource.BinarySI) }

// expectShareableSlices waits until every whole GPU is published shareable
// as mode says ("memory" or a share count "4") and checks its policies.
func expectShareableSlices(t *testing.T, c kubernetes.Interface, mode string) {
	t.Helper()
	gpuMem := resource.MustParse("80Gi") // the mock H100's framebuffer
	check := func(d resourceapi.Device) string {
		if !ptr.Deref(d.AllowMultipleAllocations, false) {
			return d.Name + " without allowMultipleAllocations"
		}
		m, ok := d.Capacity[resourceslice.CapacityMemory]
		if !ok || m.RequestPolicy == nil || m.RequestPolicy.ValidRange == nil {
			return fmt.Sprintf("%s: memory capacity %+v without a request policy", d.Name, m)
		}
		p, r := m.RequestPolicy, m.RequestPolicy.ValidRange
		wantDefault, wantMin := gpuMem, mib(1)
		if mode != "memory" {
			wantDefault, wantMin = resource.Quantity{}, resource.Quantity{}
		}
		switch {
		case m.Value.Cmp(gpuMem) != 0:
			return fmt.Sprintf("%s: memory %s, want %s", d.Name, m.Value.String(), gpuMem.String())
		case p.Default == nil || p.Default.Cmp(wantDefault) != 0:
			return fmt.Sprintf("%s: memory default %v, want %s", d.Name, p.Default, wantDefault.String())
		case r.Min == nil || r.Min.Cmp(wantMin) != 0 || r.Max == nil || r.Max.Cmp(gpuMem) != 0 || r.Step == nil || r.Step.Cmp(mib(1)) != 0:
			return fmt.Sprintf("%s: memory valid range %v..%v step %v, want %s..%s step 1Mi", d.Name, r.Min, r.Max, r.Step, wantMin.String(), gpuMem.String())
		}
		s, hasShares := d.Capacity[resourceslice.CapacityShares]
		if mode == "memory" {
			if hasShares {
				return d.Name + " has a shares capacity with consumableCapacity=memory"
			}
			return ""
		}
		one := *resource.NewQuantity(1, resource.DecimalSI)
		switch {
		case !hasShares || s.Value.Cmp(resource.MustParse(mode)) != 0:
			return fmt.Sprintf("%s: shares %+v, want %s", d.Name, s, mode)
		case s.RequestPolicy == nil || s.RequestPolicy.Default == nil || s.RequestPolicy.Default.Cmp(one) != 0:
			return fmt.Sprintf("%s: shares policy %+v, want default 1", d.Name, s.RequestPolicy)
		}
		return ""
	}
	eventually(t, time.Minute, "whole GPUs published shareable ("+mode+")", func() (bool, string) {
		n := 0
		for _, s := range ourSlices(t, c) {
			for _, d := range s.Spec.Devices {
				if ptr.Deref(d.Attributes[resourceslice.AttrType].StringValue, "") != "gpu" {
					continue
				}
				n++
				if why := check(d); why != "" {
					return false, why
				}
			}
		}
		return n == 8, fmt.Sprintf("%d whole GPUs published, want 8", n)
	})
}

// expectPluginRuns waits until the one kubelet plugin pod is ready and runs
// with the chart values of the phase: CONSUMABLE_CAPACITY=consumable, and
// MPS_DAEMON_IMAGE set exactly when mps.enabled.
func expectPluginRuns(t *testing.T, c kubernetes.Interface, consumable string, withMPS bool) {
	t.Helper()
	eventually(t, 2*time.Minute, fmt.Sprintf("the plugin running with consumableCapacity=%s, MPS %v", consumable, withMPS), func() (bool, string) {
		pods := pluginPods(t, c)
		if len(pods) != 1 || pods[0].DeletionTimestamp != nil {
			return false, fmt.Sprintf("%d plugin pods", len(pods))
		}
		env := map[string]string{}
		for _, ctr := range pods[0].Spec.Containers {
			for _, e := range ctr.Env {
				env[e.Name] = e.Value
			}
		}
		_, hasMPS := env["MPS_DAEMON_IMAGE"]
		if env["CONSUMABLE_CAPACITY"] != consumable || hasMPS != withMPS {
			return false, fmt.Sprintf("plugin pod %s: CONSUMABLE_CAPACITY=%q, MPS %v", pods[0].Name, env["CONSUMABLE_CAPACITY"], hasMPS)
		}
		for _, cond := range pods[0].Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		return false, "plugin pod " + pods[0].Name + " not ready"
	})
}

// applyShareTemplate creates a ResourceClaimTemplate in sharesNS (and the
// namespace) whose request "gpu" asks a GPU of class gpu.nvidia.com that cel
// selects with the capacity requests (none: the defaults).
func applyShareTemplate(t *testing.T, name, cel string, requests map[string]string) {
	t.Helper()
	capacity := ""
	if len(requests) > 0 {
		var names []string
		for k := range requests {
			names = append(names, k)
		}
		sort.Strings(names)
		capacity = "\n          capacity:\n            requests:"
		for _, k := range names {
			capacity += fmt.Sprintf("\n              %s: %q", k, requests[k])
		}
	}
	applyYAML(t, "template-"+name, fmt.Sprintf(`apiVersion: v1
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
      - name: gpu
        exactly:
          deviceClassName: gpu.nvidia.com
          selectors:
          - cel: {expression: '%[3]s'}%[4]s
`, sharesNS, name, cel, capacity))
}

// applySharePod creates pod name in sharesNS with a claim from template
// that prints its GPU view and MPS view as demos 17 and 18 do.
func applySharePod(t *testing.T, name, template string) {
	t.Helper()
	applyClaimPod(t, sharesNS, name, "gpu", template, `echo GPU-VIEW-BEGIN; ls -l /dev/nvidia*; env | grep ^NVIDIA | sort; echo GPU-VIEW-END; `+
		`echo MPS-VIEW-BEGIN; env | grep ^CUDA_MPS_ | sort; [ -n "$CUDA_MPS_PIPE_DIRECTORY" ] && ls -l $CUDA_MPS_PIPE_DIRECTORY; echo MPS-VIEW-END; sleep 3600`)
}

// shareEnv is what a share's container saw: its CUDA_MPS_* variables and
// whether the daemon's control pipe was in its pipe directory.
type shareEnv struct {
	env  []string
	pipe bool
}

func shareEnvOf(t *testing.T, ns, pod string) shareEnv {
	t.Helper()
	eventually(t, 30*time.Second, ns+"/"+pod+"'s MPS view", func() (bool, string) {
		logs := kubectl(t, "-n", ns, "logs", pod)
		return strings.Contains(logs, "MPS-VIEW-END"), logs
	})
	var v shareEnv
	for _, line := range strings.Split(mpsView(t, ns, pod, "ctr"), "\n") {
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "CUDA_MPS_"):
			v.env = append(v.env, line)
		case len(f) > 0 && strings.HasPrefix(f[0], "p") && f[len(f)-1] == "control":
			v.pipe = true
		}
	}
	return v
}

// expectShareEnv checks that pod's container got exactly the MPS client
// settings of a share: the pipe directory with the daemon's control pipe
// and the limits want (e.g. CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=20480M).
func expectShareEnv(t *testing.T, ns, pod string, want ...string) {
	t.Helper()
	v := shareEnvOf(t, ns, pod)
	want = append([]string{"CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps"}, want...)
	sort.Strings(want)
	if strings.Join(v.env, " ") != strings.Join(want, " ") {
		t.Errorf("%s/%s: CUDA_MPS_* environment %v, want exactly %v", ns, pod, v.env, want)
	}
	if !v.pipe {
		t.Errorf("%s/%s: no MPS control pipe in its pipe directory", ns, pod)
	}
}

// shareOf returns the device, share ID and consumed capacity of the
// running pod's one allocated share.
func shareOf(t *testing.T, c kubernetes.Interface, p *corev1.Pod) (string, string, map[resourceapi.QualifiedName]resource.Quantity) {
	t.Helper()
	claim := podClaim(t, c, p)
	if claim == nil || claim.Status.Allocation == nil || len(claim.Status.Allocation.Devices.Results) != 1 {
		t.Fatalf("pod %s/%s: claim %+v, want one allocated device", p.Namespace, p.Name, claim)
	}
	r := claim.Status.Allocation.Devices.Results[0]
	if r.ShareID == nil {
		t.Fatalf("pod %s/%s: allocation of %s has no share ID (consumed %v)", p.Namespace, p.Name, r.Device, r.ConsumedCapacity)
	}
	return r.Device, string(*r.ShareID), r.ConsumedCapacity
}

// gpuDaemons returns the MPS daemon pods of shared GPUs by GPU UUID.
func gpuDaemons(t *testing.T, c kubernetes.Interface) map[string][]corev1.Pod {
	t.Helper()
	list, err := c.CoreV1().Pods(releaseNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: mps.LabelGPUUUID})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out[p.Annotations[mps.LabelGPUUUID]] = append(out[p.Annotations[mps.LabelGPUUUID]], p)
		}
	}
	return out
}

// expectOneDaemon checks that exactly one MPS daemon pod, running, serves the
// GPU with this UUID, under its deterministic name, and that its host
// directory exists; it returns the pod.
func expectOneDaemon(t *testing.T, c kubernetes.Interface, uuid string) corev1.Pod {
	t.Helper()
	ds := gpuDaemons(t, c)[uuid]
	if len(ds) != 1 {
		t.Fatalf("%d MPS daemon pods for GPU %s, want 1 (all: %v)", len(ds), uuid, keys(gpuDaemons(t, c)))
	}
	if ds[0].Name != mps.GPUPodName(uuid) || ds[0].Status.Phase != corev1.PodRunning {
		t.Errorf("MPS daemon of GPU %s: %s (%s), want %s running", uuid, ds[0].Name, ds[0].Status.Phase, mps.GPUPodName(uuid))
	}
	if _, err := os.Stat(gpuMPSDir(uuid)); err != nil {
		t.Errorf("MPS directory of shared GPU %s: %v", uuid, err)
	}
	return ds[0]
}

func gpuMPSDir(uuid string) string { return filepath.Join(hostStateDir, "mps", "gpu-"+uuid) }

// expectNoDaemon waits until the GPU with this UUID has no MPS daemon pod
// (none at all, even terminating) and no MPS host directory.
func expectNoDaemon(t *testing.T, c kubernetes.Interface, uuid string) {
	t.Helper()
	eventually(t, 2*time.Minute, "MPS daemon and directory of GPU "+uuid+" gone", func() (bool, string) {
		if _, err := c.CoreV1().Pods(releaseNamespace).Get(context.Background(), mps.GPUPodName(uuid), metav1.GetOptions{}); err == nil {
			return false, "daemon pod " + mps.GPUPodName(uuid) + " still there"
		}
		if _, err := os.Stat(gpuMPSDir(uuid)); err == nil {
			return false, gpuMPSDir(uuid) + " still there"
		}
		return true, ""
	})
}

// cleanupShares deletes the test's namespaces and waits until no MPS daemon
// of a shared GPU and no such directory is left, so that the next phase
// starts clean.
func cleanupShares(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	kubectl(t, "delete", "ns", sharesNS, "gpudra-demo", "gpudra-demo-admin", "--wait=true", "--timeout=2m", "--ignore-not-found")
	eventually(t, 2*time.Minute, "no MPS daemon of a shared GPU left", func() (bool, string) {
		if ds := gpuDaemons(t, c); len(ds) > 0 {
			return false, fmt.Sprintf("daemons of %v", keys(ds))
		}
		dirs, _ := filepath.Glob(filepath.Join(hostStateDir, "mps", "gpu-*"))
		return len(dirs) == 0, fmt.Sprintf("directories left: %v", dirs)
	})
}

func podUIDs(t *testing.T, c kubernetes.Interface, ns string, names ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range names {
		p, err := c.CoreV1().Pods(ns).Get(context.Background(), n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out[n] = string(p.UID)
	}
	return out
}

// TestGPUSharesByMemory (consumableCapacity=memory, MPS on): demo 17's three
// 20Gi shares run on gpu-0 with one daemon; a 30Gi share that may take gpu-0
// or gpu-1 gets gpu-1 (gpu-0 has 20Gi of its 80Gi left); a claim of the
// whole gpu-0 waits; a plugin restart leaves the daemon and the shares
// alone and a new share still gets its limits; the last share's end stops
// the daemon and the whole-GPU claim runs, without MPS.
func TestGPUSharesByMemory(t *testing.T) {
	sharesMode(t, "shares")
	c := client(t)
	ctx := context.Background()
	t.Cleanup(func() { cleanupShares(t, c) })
	start := time.Now()
	expectPluginRuns(t, c, "memory", true)
	expectShareableSlices(t, c, "memory")
	uuid0, uuid1 := gpuUUIDOf(t, c, 0), gpuUUIDOf(t, c, 1)
	if ds := gpuDaemons(t, c); len(ds) != 0 {
		t.Fatalf("MPS daemons of shared GPUs before any share: %v", keys(ds))
	}

	// (b) Demo 17: three 20Gi shares of gpu-0, one daemon.
	views := runWave(t, c, "gpu-shares", "17")
	shareIDs := map[string]string{}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("gpu-share-%d", i)
		if got := views[name+"/ctr"].minors; fmt.Sprint(got) != "[0]" {
			t.Errorf("%s sees GPUs %v, want gpu-0 only", name, got)
		}
		p, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dev, id, consumed := shareOf(t, c, p)
		if mem := consumed[resourceslice.CapacityMemory]; dev != "gpu-0" || mem.Cmp(resource.MustParse("20Gi")) != 0 {
			t.Errorf("%s's claim: %s consuming %v, want gpu-0 consuming memory 20Gi", name, dev, consumed)
		}
		if other, dup := shareIDs[id]; dup {
			t.Errorf("%s and %s have the same share ID %s", name, other, id)
		}
		shareIDs[id] = name
		expectShareEnv(t, "gpudra-demo", name, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=20480M")
	}
	daemon0 := expectOneDaemon(t, c, uuid0)
	if n := len(gpuDaemons(t, c)); n != 1 {
		t.Errorf("MPS daemons for %d GPUs with shares of gpu-0 only, want 1: %v", n, keys(gpuDaemons(t, c)))
	}
	t.Logf("demo 17: three shares of gpu-0, daemon %s (%v)", daemon0.Name, time.Since(start).Round(time.Second))

	// A 30Gi share that gpu-0 or gpu-1 may give: gpu-0 has 20Gi left.
	applyShareTemplate(t, "gpu0-or-gpu1-30gi", `device.attributes["gpu.nvidia.com"].index == 0 || device.attributes["gpu.nvidia.com"].index == 1`,
		map[string]string{"memory": "30Gi"})
	applySharePod(t, "big", "gpu0-or-gpu1-30gi")
	big := waitPodRunning(t, c, sharesNS, "big")
	if dev, _, consumed := shareOf(t, c, big); dev != "gpu-1" {
		t.Errorf("30Gi share got %s (consumed %v), want gpu-1: gpu-0 has only 20Gi left", dev, consumed)
	}
	expectShareEnv(t, sharesNS, "big", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=30720M")
	daemon1 := expectOneDaemon(t, c, uuid1)

	// (c) A claim without capacity requests takes all of gpu-0: it waits.
	applyShareTemplate(t, "gpu0-whole", `device.attributes["gpu.nvidia.com"].index == 0`, nil)
	applySharePod(t, "whole", "gpu0-whole")
	expectUnschedulable(t, c, sharesNS, "whole")

	// (e) A plugin restart leaves the daemons and the shares alone.
	pods := podUIDs(t, c, "gpudra-demo", "gpu-share-0", "gpu-share-1", "gpu-share-2")
	restartPlugin(t, c)
	for uuid, before := range map[string]corev1.Pod{uuid0: daemon0, uuid1: daemon1} {
		after := expectOneDaemon(t, c, uuid)
		if after.UID != before.UID {
			t.Errorf("MPS daemon of GPU %s replaced by the plugin restart (uid %s -> %s)", uuid, before.UID, after.UID)
		}
		for _, cs := range after.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("MPS daemon %s restarted %d times", after.Name, cs.RestartCount)
			}
		}
	}
	for name, uid := range pods {
		p, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("share %s after a plugin restart: %v", name, err)
		}
		if string(p.UID) != uid || p.Status.Phase != corev1.PodRunning || p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Fatalf("share %s after a plugin restart: uid %s -> %s, phase %s, %+v; want the same pod running", name, uid, p.UID, p.Status.Phase, p.Status.ContainerStatuses)
		}
	}
	applyShareTemplate(t, "gpu0-10gi", `device.attributes["gpu.nvidia.com"].index == 0`, map[string]string{"memory": "10Gi"})
	applySharePod(t, "late", "gpu0-10gi")
	late := waitPodRunning(t, c, sharesNS, "late")
	if dev, _, _ := shareOf(t, c, late); dev != "gpu-0" {
		t.Errorf("10Gi share after the restart got %s, want gpu-0", dev)
	}
	expectShareEnv(t, sharesNS, "late", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=10240M")
	if d := expectOneDaemon(t, c, uuid0); d.UID != daemon0.UID {
		t.Errorf("a new share after the restart replaced gpu-0's daemon (uid %s -> %s)", daemon0.UID, d.UID)
	}
	if p, err := c.CoreV1().Pods(sharesNS).Get(ctx, "whole", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if p.Spec.NodeName != "" {
		t.Fatalf("whole-GPU pod scheduled (phase %s) while gpu-0 has shares", p.Status.Phase)
	}
	t.Logf("after the plugin restart: daemons kept, new share served (%v)", time.Since(start).Round(time.Second))

	// (d) The last share of gpu-0 stops its daemon; the whole GPU is free.
	kubectl(t, "delete", "pods", "-n", "gpudra-demo", "-l", "gpudra.demo/wave=gpu-shares", "--wait=true", "--timeout=2m")
	deletePod(t, sharesNS, "late")
	expectNoDaemon(t, c, uuid0)
	whole := waitPodRunning(t, c, sharesNS, "whole")
	dev, _, consumed := shareOf(t, c, whole)
	if mem := consumed[resourceslice.CapacityMemory]; dev != "gpu-0" || mem.Cmp(resource.MustParse("80Gi")) != 0 {
		t.Errorf("whole-GPU claim got %s consuming %v, want gpu-0 consuming all its memory", dev, consumed)
	}
	if v := shareEnvOf(t, sharesNS, "whole"); len(v.env) != 0 || v.pipe {
		t.Errorf("whole-GPU pod got MPS settings %v (pipe %v), want none: it has the GPU alone", v.env, v.pipe)
	}
	if ds := gpuDaemons(t, c)[uuid0]; len(ds) != 0 {
		t.Errorf("gpu-0 held whole has an MPS daemon: %s", ds[0].Name)
	}
	// gpu-1's share is untouched by gpu-0's last share going.
	if d := expectOneDaemon(t, c, uuid1); d.UID != daemon1.UID {
		t.Errorf("gpu-1's daemon replaced (uid %s -> %s)", daemon1.UID, d.UID)
	}
	deletePod(t, sharesNS, "big")
	expectNoDaemon(t, c, uuid1)
	t.Logf("daemons gone with their last shares (%v)", time.Since(start).Round(time.Second))
}

// TestGPUComputeShares (consumableCapacity=4, MPS on): demo 18's two claims
// of 2 shares and 40Gi fill gpu-0's 4 shares, each client with 50% of the
// threads; a further share of gpu-0 waits.
func TestGPUComputeShares(t *testing.T) {
	sharesMode(t, "shares-4")
	c := client(t)
	t.Cleanup(func() { cleanupShares(t, c) })
	expectPluginRuns(t, c, "4", true)
	expectShareableSlices(t, c, "4")
	uuid0 := gpuUUIDOf(t, c, 0)
	views := runWave(t, c, "compute-shares", "18")
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("compute-share-%d", i)
		if got := views[name+"/ctr"].minors; fmt.Sprint(got) != "[0]" {
			t.Errorf("%s sees GPUs %v, want gpu-0 only", name, got)
		}
		p, err := c.CoreV1().Pods("gpudra-demo").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dev, _, consumed := shareOf(t, c, p)
		s, m := consumed[resourceslice.CapacityShares], consumed[resourceslice.CapacityMemory]
		if dev != "gpu-0" || s.Cmp(resource.MustParse("2")) != 0 || m.Cmp(resource.MustParse("40Gi")) != 0 {
			t.Errorf("%s's claim: %s consuming %v, want gpu-0 consuming 2 shares and 40Gi", name, dev, consumed)
		}
		expectShareEnv(t, "gpudra-demo", name, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=40960M")
	}
	expectOneDaemon(t, c, uuid0)
	// gpu-0's 4 shares are taken: one more (the default, 1 share) waits.
	applyShareTemplate(t, "gpu0-one-share", `device.attributes["gpu.nvidia.com"].index == 0`, nil)
	applySharePod(t, "fifth", "gpu0-one-share")
	expectUnschedulable(t, c, sharesNS, "fifth")
	kubectl(t, "delete", "pods", "-n", "gpudra-demo", "-l", "gpudra.demo/wave=compute-shares", "--wait=true", "--timeout=2m")
	// The waiting share gets gpu-0 once the others are gone: its one share
	// of 4 is 25% of the threads and no memory limit (it requested none).
	if dev, _, _ := shareOf(t, c, waitPodRunning(t, c, sharesNS, "fifth")); dev != "gpu-0" {
		t.Errorf("one-share claim got %s, want gpu-0", dev)
	}
	expectShareEnv(t, sharesNS, "fifth", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25")
	deletePod(t, sharesNS, "fifth")
	expectNoDaemon(t, c, uuid0)
}

// TestGPUSharesNotEnforced (consumableCapacity=4, mps.enabled=false): demo
// 18's shares run on gpu-0 without a daemon or MPS settings, and each pod
// gets the GPUShareNotEnforced warning.
func TestGPUSharesNotEnforced(t *testing.T) {
	sharesMode(t, "shares-unenforced")
	c := client(t)
	t.Cleanup(func() { cleanupShares(t, c) })
	expectPluginRuns(t, c, "4", false)
	expectShareableSlices(t, c, "4")
	views := runWave(t, c, "compute-shares", "18")
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("compute-share-%d", i)
		if got := views[name+"/ctr"].minors; fmt.Sprint(got) != "[0]" {
			t.Errorf("%s sees GPUs %v, want gpu-0 only", name, got)
		}
		if v := shareEnvOf(t, "gpudra-demo", name); len(v.env) != 0 || v.pipe {
			t.Errorf("%s got MPS settings %v (pipe %v) without MPS", name, v.env, v.pipe)
		}
		eventually(t, time.Minute, "GPUShareNotEnforced event on "+name, func() (bool, string) {
			evs, err := c.CoreV1().Events("gpudra-demo").List(context.Background(), metav1.ListOptions{
				FieldSelector: "involvedObject.name=" + name + ",reason=GPUShareNotEnforced"})
			if err != nil {
				return false, err.Error()
			}
			for _, e := range evs.Items {
				if e.Type == corev1.EventTypeWarning && e.InvolvedObject.Kind == "Pod" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%d events; warnings:\n%s", len(evs.Items), warningEvents(t, "gpudra-demo"))
		})
	}
	if ds := gpuDaemons(t, c); len(ds) != 0 {
		t.Errorf("MPS daemons without MPS: %v", keys(ds))
	}
}

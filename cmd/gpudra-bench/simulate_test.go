package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

func TestSimNodeIsReadyTaintedAndLabelled(t *testing.T) {
	n := newSimNode(7, time.Unix(1000, 0))
	if n.Name != "gpudra-sim-7" || !isSimNode(n) {
		t.Fatalf("node %s with labels %v is not a simulated node", n.Name, n.Labels)
	}
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0] != simTaint() {
		t.Errorf("taints %v, want only %v", n.Spec.Taints, simTaint())
	}
	if tol := simToleration(); !tol.ToleratesTaint(klog.Background(), &n.Spec.Taints[0], false) {
		t.Error("the pods' toleration does not tolerate the nodes' taint")
	}
	if !nodeUsable(n) {
		t.Error("a fresh simulated node is not usable")
	}
	if _, ok := n.Status.Allocatable[simExtendedResource]; ok {
		t.Error("a fresh simulated node advertises the extended resource")
	}
	// The TaintNodesByCondition admission plugin's taint makes it unusable.
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule})
	if nodeUsable(n) {
		t.Error("a node tainted not-ready is usable")
	}
	n = newSimNode(1, time.Unix(1000, 0))
	n.Status.Conditions[len(n.Status.Conditions)-1].Status = corev1.ConditionUnknown
	if nodeUsable(n) {
		t.Error("a node whose Ready condition is Unknown is usable")
	}
	if isSimNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpudra-sim-1"}}) {
		t.Error("a node without the label counts as simulated")
	}
	if isSimNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "vm", Labels: map[string]string{simLabel: simLabelValue}}}) {
		t.Error("a node without the prefix counts as simulated")
	}
}

func TestSimLease(t *testing.T) {
	n := newSimNode(3, time.Unix(1000, 0))
	n.UID = "uid-3"
	now := time.Unix(2000, 0)
	l := newSimLease(n, now)
	if l.Namespace != corev1.NamespaceNodeLease || l.Name != n.Name {
		t.Errorf("lease %s/%s, want %s/%s", l.Namespace, l.Name, corev1.NamespaceNodeLease, n.Name)
	}
	if ptr.Deref(l.Spec.HolderIdentity, "") != n.Name || ptr.Deref(l.Spec.LeaseDurationSeconds, 0) != 40 || !l.Spec.RenewTime.Time.Equal(now) {
		t.Errorf("lease spec %+v", l.Spec)
	}
	if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != "uid-3" || l.OwnerReferences[0].Kind != "Node" {
		t.Errorf("owner references %v, want the node", l.OwnerReferences)
	}
	if l.Labels[simLabel] != simLabelValue {
		t.Errorf("labels %v", l.Labels)
	}
}

func TestHeartbeatAndExtendedPatches(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	created := time.Unix(1000, 0)
	n, err := cs.CoreV1().Nodes().Create(ctx, newSimNode(0, created), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, newSimLease(n, created), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	beat := time.Unix(5000, 0)
	if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, nodeHeartbeatPatch(beat, created), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Patch(ctx, n.Name, types.MergePatchType, leaseRenewPatch(beat), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if len(got.Status.Conditions) != 4 || !nodeUsable(got) {
		t.Fatalf("conditions after the heartbeat: %+v", got.Status.Conditions)
	}
	for _, c := range got.Status.Conditions {
		if !c.LastHeartbeatTime.Time.Equal(beat) || !c.LastTransitionTime.Time.Equal(created) {
			t.Errorf("condition %s: heartbeat %v transition %v, want %v and %v", c.Type, c.LastHeartbeatTime, c.LastTransitionTime, beat, created)
		}
	}
	lease, _ := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, n.Name, metav1.GetOptions{})
	if !lease.Spec.RenewTime.Time.Equal(beat) {
		t.Errorf("lease renewed at %v, want %v", lease.Spec.RenewTime, beat)
	}

	if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, extendedResourcePatch(8), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	got, _ = cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if q := got.Status.Allocatable[simExtendedResource]; q.Value() != 8 {
		t.Errorf("allocatable %s = %v, want 8", simExtendedResource, q.String())
	}
	if q := got.Status.Capacity[corev1.ResourceCPU]; q.Value() != 224 {
		t.Errorf("the patch changed the CPU capacity to %v", q.String())
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.StrategicMergePatchType, extendedResourcePatch(0), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	got, _ = cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if _, ok := got.Status.Allocatable[simExtendedResource]; ok {
		t.Errorf("allocatable still has %s after its removal: %v", simExtendedResource, got.Status.Allocatable)
	}
	if _, ok := got.Status.Capacity[simExtendedResource]; ok {
		t.Errorf("capacity still has %s after its removal", simExtendedResource)
	}
}

func TestBuildSimResources(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		machine, layout           string
		gpus, minDevices, nSlices int
	}{
		{"dgxh100", layoutStatic, 8, 8, 1},
		{"dgxh100", layoutPerDevice, 8, 8, 8},
		{"dgxh100", layoutConsumable, 8, 8, 1},
		{"dgxh100", layoutDynamicMIG, 8, 9 * 8, -1},
		// GPUs 0 and 1 in MIG mode: published as MIG devices only.
		{"dgxh100-mig", layoutStatic, 6, 7, 1},
	} {
		t.Run(tc.machine+"/"+tc.layout, func(t *testing.T) {
			a, err := buildSimResources(ctx, tc.machine, tc.layout, "gpu.nvidia.com", "gpudra-sim-0")
			if err != nil {
				t.Fatal(err)
			}
			if a.gpus != tc.gpus || a.devices < tc.minDevices || (tc.nSlices > 0 && a.slices != tc.nSlices) {
				t.Errorf("gpus %d, devices %d, slices %d; want %d, >= %d, %d", a.gpus, a.devices, a.slices, tc.gpus, tc.minDevices, tc.nSlices)
			}
			pool, ok := a.resources.Pools["gpudra-sim-0"]
			if !ok || len(a.resources.Pools) != 1 {
				t.Fatalf("pools %v, want one named after the node", a.resources.Pools)
			}
			if len(pool.Slices) != a.slices {
				t.Errorf("%d slices counted, pool has %d", a.slices, len(pool.Slices))
			}
			if tc.layout == layoutDynamicMIG && len(pool.Slices[0].SharedCounters) == 0 {
				t.Error("dynamic MIG: the pool has no counter sets first")
			}
			// Another node's devices have other UUIDs.
			b, err := buildSimResources(ctx, tc.machine, tc.layout, "gpu.nvidia.com", "gpudra-sim-1")
			if err != nil {
				t.Fatal(err)
			}
			uuid := func(r simResources, node string) string {
				for _, s := range r.resources.Pools[node].Slices {
					for _, d := range s.Devices {
						if v := d.Attributes["uuid"].StringValue; v != nil {
							return *v
						}
					}
				}
				return ""
			}
			if ua, ub := uuid(a, "gpudra-sim-0"), uuid(b, "gpudra-sim-1"); ua == "" || ua == ub {
				t.Errorf("UUIDs of two nodes' first devices: %q and %q, want distinct", ua, ub)
			}
		})
	}
}

// newFake is a fake clientset that, like the API server, fills in the
// names of created objects that have only a generateName.
func newFake(objs ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset(objs...)
	var n atomic.Int64
	cs.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if m, err := meta.Accessor(a.(k8stesting.CreateAction).GetObject()); err == nil && m.GetName() == "" && m.GetGenerateName() != "" {
			m.SetName(fmt.Sprintf("%s%05d", m.GetGenerateName(), n.Add(1)))
		}
		return false, nil, nil
	})
	return cs
}

func TestPublishSimSlices(t *testing.T) {
	ctx := context.Background()
	cs := newFake()
	n, err := createSimNode(ctx, cs, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := buildSimResources(ctx, "dgxh100", layoutPerDevice, "gpu.nvidia.com", n.Name)
	if err != nil {
		t.Fatal(err)
	}
	created, err := publishSimSlices(ctx, cs, "gpu.nvidia.com", n.Name, r)
	if err != nil || created != r.slices {
		t.Fatalf("created %d slices (%v), want %d", created, err, r.slices)
	}
	l, _ := cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	for _, s := range l.Items {
		if ptr.Deref(s.Spec.NodeName, "") != n.Name || s.Spec.Pool.Name != n.Name || s.Spec.Pool.ResourceSliceCount != int64(r.slices) {
			t.Errorf("slice %s: node %v pool %+v", s.Name, s.Spec.NodeName, s.Spec.Pool)
		}
		if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Name != n.Name {
			t.Errorf("slice %s owner references %v, want node %s", s.Name, s.OwnerReferences, n.Name)
		}
	}
}

// seedForeign creates objects the cleanup must leave alone: a real node
// with its slice and lease, a node that has the prefix but not the label, a
// node that has the label but not the prefix, and a pod elsewhere.
func seedForeign(t *testing.T, cs *fake.Clientset) {
	t.Helper()
	ctx := context.Background()
	for _, n := range []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "vm"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "gpudra-sim-unlabelled"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "labelled", Labels: map[string]string{simLabel: simLabelValue}}},
	} {
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		slice := &resourceapi.ResourceSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "slice-" + n.Name},
			Spec:       resourceapi.ResourceSliceSpec{Driver: "gpu.nvidia.com", NodeName: ptr.To(n.Name), Pool: resourceapi.ResourcePool{Name: n.Name, ResourceSliceCount: 1}},
		}
		if _, err := cs.ResourceV1().ResourceSlices().Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Namespace: corev1.NamespaceNodeLease}}
		if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "default", Labels: map[string]string{simLabel: simLabelValue}}}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestSimSliceAndNodeSelection(t *testing.T) {
	nodes := []corev1.Node{*newSimNode(0, time.Now()), *newSimNode(1, time.Now()),
		{ObjectMeta: metav1.ObjectMeta{Name: "vm"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "gpudra-sim-9"}}, // no label
	}
	slice := func(name, driver, node string) resourceapi.ResourceSlice {
		s := resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: resourceapi.ResourceSliceSpec{Driver: driver}}
		if node != "" {
			s.Spec.NodeName = ptr.To(node)
		}
		return s
	}
	got := simSliceNames([]resourceapi.ResourceSlice{
		slice("b", "gpu.nvidia.com", "gpudra-sim-1"),
		slice("a", "gpu.nvidia.com", "gpudra-sim-0"),
		slice("real", "gpu.nvidia.com", "vm"),
		slice("unlabelled", "gpu.nvidia.com", "gpudra-sim-9"),
		slice("other-driver", "other.example.com", "gpudra-sim-0"),
		slice("no-node", "gpu.nvidia.com", ""),
	}, nodes, "gpu.nvidia.com")
	if strings.Join(got, ",") != "a,b" {
		t.Errorf("selected slices %v, want [a b]", got)
	}
	if got := simNodeNames(nodes); strings.Join(got, ",") != "gpudra-sim-0,gpudra-sim-1" {
		t.Errorf("selected nodes %v", got)
	}
}

func TestCleanupSimRemovesOnlyItsOwn(t *testing.T) {
	ctx := context.Background()
	cs := newFake()
	seedForeign(t, cs)
	s := &simulation{cs: cs, o: &simOptions{class: "gpu.nvidia.com", machine: "dgxh100", layout: layoutStatic, concurrency: 4, timeout: time.Minute}, driver: "gpu.nvidia.com", runID: "r", hb: newHeartbeater(cs, 2)}
	if _, err := cs.CoreV1().ServiceAccounts(simNamespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: simNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.setupNamespace(ctx); err != nil {
		t.Fatal(err)
	}
	if err := checkNoLeftovers(ctx, cs, "gpu.nvidia.com"); err == nil || !strings.Contains(err.Error(), "--simulate-cleanup") {
		t.Errorf("leftover check with the namespace there: %v, want an error naming --simulate-cleanup", err)
	}
	if err := s.ensureNodes(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.publishSlices(ctx, 3); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		p := newSimPod(simNodeName(i), pathDRA, "r", "dra-n3-r0")
		if _, err := cs.CoreV1().Pods(simNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	if err := cleanupSim(ctx, cs, "gpu.nvidia.com", 4); err != nil {
		t.Fatal(err)
	}
	nodes, _ := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	if strings.Join(sortedCopy(names), ",") != "gpudra-sim-unlabelled,labelled,vm" {
		t.Errorf("nodes after the cleanup: %v", names)
	}
	slices, _ := cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
	if len(slices.Items) != 3 {
		t.Errorf("%d slices after the cleanup, want the 3 foreign ones", len(slices.Items))
	}
	leases, _ := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{})
	if len(leases.Items) != 3 {
		t.Errorf("%d leases after the cleanup, want the 3 foreign ones", len(leases.Items))
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, simNamespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s after the cleanup: %v", simNamespace, err)
	}
	if pods, _ := cs.CoreV1().Pods(simNamespace).List(ctx, metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Errorf("%d pods left in %s", len(pods.Items), simNamespace)
	}
	if _, err := cs.CoreV1().Pods("default").Get(ctx, "other", metav1.GetOptions{}); err != nil {
		t.Errorf("the foreign pod: %v", err)
	}
	if err := checkNoLeftovers(ctx, cs, "gpu.nvidia.com"); err != nil {
		t.Errorf("leftovers after the cleanup: %v", err)
	}
	// Idempotent.
	if err := cleanupSim(ctx, cs, "gpu.nvidia.com", 4); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

func TestCleanupLeavesAForeignNamespace(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: simNamespace}})
	if err := cleanupSim(ctx, cs, "gpu.nvidia.com", 2); err == nil {
		t.Error("no error for a namespace of the same name without the label")
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, simNamespace, metav1.GetOptions{}); err != nil {
		t.Errorf("the foreign namespace was deleted: %v", err)
	}
	if err := checkNoLeftovers(ctx, cs, "gpu.nvidia.com"); err == nil {
		t.Error("a run would start in a foreign namespace")
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sortStrings(out)
	return out
}

func TestSimPods(t *testing.T) {
	d := newSimPod("p", pathDRA, "r", "ph")
	if len(d.Spec.ResourceClaims) != 1 || ptr.Deref(d.Spec.ResourceClaims[0].ResourceClaimTemplateName, "") != simTemplateName ||
		len(d.Spec.Containers[0].Resources.Claims) != 1 || len(d.Spec.Containers[0].Resources.Limits) != 0 {
		t.Errorf("DRA pod spec %+v", d.Spec)
	}
	e := newSimPod("p", pathExtended, "r", "ph")
	if q := e.Spec.Containers[0].Resources.Limits[simExtendedResource]; q.Value() != 1 || len(e.Spec.ResourceClaims) != 0 {
		t.Errorf("extended pod spec %+v", e.Spec)
	}
	for _, p := range []*corev1.Pod{d, e} {
		if p.Spec.NodeSelector[simLabel] != simLabelValue || len(p.Spec.Tolerations) != 1 || p.Labels[simPhaseLabel] != "ph" || p.Labels[simRunLabel] != "r" {
			t.Errorf("pod %+v", p)
		}
	}
	tmpl := newSimTemplate("gpu.nvidia.com")
	if r := tmpl.Spec.Spec.Devices.Requests; len(r) != 1 || r[0].Exactly == nil || r[0].Exactly.DeviceClassName != "gpu.nvidia.com" || r[0].Exactly.Count != 1 {
		t.Errorf("template requests %+v", r)
	}
}

func TestPodLatenciesAndPercentiles(t *testing.T) {
	t0 := time.Unix(100, 0)
	starts, bound := map[string]time.Time{}, map[string]time.Time{}
	for i := 0; i < 100; i++ {
		name := string(rune('a'+i%26)) + string(rune('a'+i/26))
		starts[name] = t0.Add(time.Duration(i) * time.Millisecond)
		if i < 99 { // one pod never bound
			bound[name] = starts[name].Add(time.Duration(i+1) * time.Millisecond)
		}
	}
	lat, wall := podLatencies(starts, bound)
	if len(lat) != 99 {
		t.Fatalf("%d latencies, want 99", len(lat))
	}
	// First start t0, last bind t0 + 98 ms + 99 ms.
	if wall != 197*time.Millisecond {
		t.Errorf("wall %v, want 197ms", wall)
	}
	s := summarize(lat)
	// Nearest rank over 1..99 ms: p50 = 50th value, p99 = 99th (ceil(98.01)).
	if s.p50 != 50*time.Millisecond || s.p99 != 99*time.Millisecond || s.max != 99*time.Millisecond {
		t.Errorf("p50 %v p99 %v max %v", s.p50, s.p99, s.max)
	}
	if l, w := podLatencies(starts, nil); len(l) != 0 || w != 0 {
		t.Errorf("nothing bound: %v %v", l, w)
	}
	r := &phaseResult{bound: 99, wall: wall, cpu: map[string]time.Duration{"kube-scheduler": 990 * time.Millisecond}}
	if got := r.cpuMsPerPod("kube-scheduler"); got != 10 {
		t.Errorf("CPU per pod %v, want 10 ms", got)
	}
}

func TestSimRatiosWithinARepeat(t *testing.T) {
	mk := func(path string, rep int, wall time.Duration, p50 time.Duration, cpu time.Duration) *phaseResult {
		return &phaseResult{path: path, nodes: 100, pods: 10, bound: 10, rep: rep, wall: wall,
			latencies: []time.Duration{p50, p50, p50}, cpu: map[string]time.Duration{"kube-scheduler": cpu}}
	}
	got := simRatios([]*phaseResult{
		mk(pathDRA, 0, 2*time.Second, 20*time.Millisecond, 400*time.Millisecond),
		mk(pathExtended, 0, time.Second, 10*time.Millisecond, 100*time.Millisecond),
		mk(pathDRA, 1, 4*time.Second, 30*time.Millisecond, 300*time.Millisecond),
		mk(pathExtended, 1, 4*time.Second, 10*time.Millisecond, 100*time.Millisecond),
		mk(pathDRA, 2, 3*time.Second, 10*time.Millisecond, 200*time.Millisecond),
		mk(pathExtended, 2, time.Second, 10*time.Millisecond, 100*time.Millisecond),
	})
	want := "N=100 DRA/extended (median of 3): pods/s 0.50x, p50 2.00x, p99 2.00x, scheduler CPU per pod 3.00x"
	if len(got) != 1 || got[0] != want {
		t.Errorf("ratios %q, want %q", got, want)
	}
}

func TestUnschedulableReason(t *testing.T) {
	cond := func(msg string) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: msg}}}}
	}
	got := unschedulableReason(map[string]*corev1.Pod{
		"a": cond("0/5 nodes are available"), "b": cond("0/5 nodes are available"), "c": cond("other"),
		"d": {Spec: corev1.PodSpec{NodeName: "n"}},
	})
	if got != "2 pods: Unschedulable: 0/5 nodes are available" {
		t.Errorf("reason %q", got)
	}
}

func TestPodWatcherSeesBinds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := fake.NewClientset()
	w, err := newPodWatcher(ctx, cs, simNamespace, simPhaseLabel+"=ph")
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	p := newSimPod("p0", pathExtended, "r", "ph")
	if _, err := cs.CoreV1().Pods(simNamespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !w.waitFor(ctx, time.Minute, func() bool { return len(w.present) == 1 }) {
		t.Fatal("the watcher did not see the pod")
	}
	p.Spec.NodeName = "gpudra-sim-0"
	if _, err := cs.CoreV1().Pods(simNamespace).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !w.waitFor(ctx, time.Minute, func() bool { return len(w.bound) == 1 }) {
		t.Fatal("the watcher did not see the bind")
	}
	if err := deleteSimPods(ctx, cs, simPhaseLabel+"=ph", 2); err != nil {
		t.Fatal(err)
	}
	if !w.waitFor(ctx, time.Minute, func() bool { return len(w.present) == 0 }) {
		t.Fatal("the watcher did not see the deletion")
	}
}

func TestSimulateFlags(t *testing.T) {
	o, err := parseFlags([]string{"--simulate-nodes", "500,100,100", "--simulate-pods", "50", "--simulate-machine", "dgxh100-mig"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.sim.active() || len(o.sim.nodes) != 2 || o.sim.nodes[0] != 100 || o.sim.nodes[1] != 500 || o.sim.pods != 50 {
		t.Errorf("sim options %+v", o.sim)
	}
	if o, err := parseFlags(nil); err != nil || o.sim.active() {
		t.Errorf("no --simulate-nodes: active %v, err %v", o.sim.active(), err)
	}
	if o, err := parseFlags([]string{"--simulate-cleanup"}); err != nil || !o.sim.active() {
		t.Errorf("--simulate-cleanup: err %v", err)
	}
	for _, bad := range [][]string{
		{"--simulate-nodes", "0"},
		{"--simulate-nodes", "10", "--simulate-machine", "nope"},
		{"--simulate-nodes", "10", "--simulate-layout", "nope"},
		{"--simulate-nodes", "10", "--simulate-paths", "dra,nope"},
		{"--simulate-nodes", "10", "--simulate-pods", "0"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

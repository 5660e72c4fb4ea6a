package main

// The scheduling benchmark at cluster scale (--simulate-nodes): simulated
// nodes without kubelets (simnodes.go) in the running cluster, the
// ResourceSlices our builder makes for them, and pods scheduled by the
// cluster's own kube-scheduler, through DRA (a ResourceClaimTemplate for one
// GPU) and, as the baseline, through the extended resource nvidia.com/gpu
// (the device plugin's path), on the same nodes in the same run.
//
// Contract of a run: it refuses to start when objects of an earlier run are
// left (--simulate-cleanup removes them); everything it creates carries the
// label gpudra.dev/simulated=true (nodes also the name prefix gpudra-sim-),
// and it deletes all of it on success, on error and on SIGINT/SIGTERM. A pod
// bound to a node (spec.nodeName set) is the end of its path: nothing runs.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/gpudra/gpudra/pkg/mockmachine"
)

const (
	simNamespace    = "gpudra-sim"
	simTemplateName = "sim-gpu"
	simRunLabel     = "gpudra.dev/sim-run"
	simPhaseLabel   = "gpudra.dev/sim-phase"
	simPauseImage   = "registry.k8s.io/pause:3.10"
	pathDRA         = "dra"
	pathExtended    = "extended"
	// simCleanupTimeout bounds the cleanup after a run (or interruption).
	simCleanupTimeout = 5 * time.Minute
)

// simOptions are the --simulate-* flags.
type simOptions struct {
	nodes       []int // ascending
	pods        int
	machine     string
	layout      string
	class       string
	concurrency int
	createQPS   float64
	repeat      int
	timeout     time.Duration
	cleanupOnly bool
	paths       []string
}

// active tells whether the flags ask for the simulation (or its cleanup)
// instead of the prepare/unprepare benchmark.
func (s *simOptions) active() bool { return s != nil && (len(s.nodes) > 0 || s.cleanupOnly) }

// addSimulateFlags defines the --simulate-* flags on fs; the returned
// function, called after fs.Parse, validates them.
func addSimulateFlags(fs *flag.FlagSet) func() (*simOptions, error) {
	s := &simOptions{}
	nodes := fs.String("simulate-nodes", "", "scheduling benchmark: simulated node counts, e.g. 100,500 (each level adds nodes to the previous ones); empty: the prepare/unprepare benchmark")
	fs.IntVar(&s.pods, "simulate-pods", 500, "pods per path and node level (each asks for one GPU)")
	fs.StringVar(&s.machine, "simulate-machine", "dgxh100", "mock machine of every simulated node: "+strings.Join(append(mockmachine.Names(), mockmachine.MIGNames()...), ", "))
	fs.StringVar(&s.layout, "simulate-layout", layoutStatic, "slice layout: "+strings.Join(simLayouts, ", ")+" (see simnodes.go)")
	fs.StringVar(&s.class, "simulate-device-class", "gpu.nvidia.com", "DeviceClass of the pods' claims")
	fs.IntVar(&s.concurrency, "simulate-concurrency", 16, "pod creations in flight (also the parallelism of node and slice set-up)")
	fs.Float64Var(&s.createQPS, "simulate-create-qps", 0, "pod creations per second at most (0: as fast as --simulate-concurrency allows)")
	fs.IntVar(&s.repeat, "simulate-repeat", 1, "run both paths this many times per node level and print the medians")
	fs.DurationVar(&s.timeout, "simulate-timeout", 10*time.Minute, "how long the pods of one path may take to be bound")
	fs.BoolVar(&s.cleanupOnly, "simulate-cleanup", false, "only delete what an aborted simulation left (by label gpudra.dev/simulated=true) and exit")
	paths := fs.String("simulate-paths", pathDRA+","+pathExtended, "paths to measure, in order: dra, extended")
	return func() (*simOptions, error) {
		for _, f := range strings.Split(*nodes, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("--simulate-nodes: %q is not a positive integer", f)
			}
			s.nodes = append(s.nodes, n)
		}
		slices.Sort(s.nodes)
		s.nodes = slices.Compact(s.nodes)
		for _, p := range strings.Split(*paths, ",") {
			switch p = strings.TrimSpace(p); p {
			case pathDRA, pathExtended:
				s.paths = append(s.paths, p)
			case "":
			default:
				return nil, fmt.Errorf("--simulate-paths: %q is neither %s nor %s", p, pathDRA, pathExtended)
			}
		}
		switch {
		case !mockmachine.Known(s.machine):
			return nil, fmt.Errorf("--simulate-machine: unknown mock machine %q: use one of %v or %v", s.machine, mockmachine.Names(), mockmachine.MIGNames())
		case !slices.Contains(simLayouts, s.layout):
			return nil, fmt.Errorf("--simulate-layout: %q is not one of %v", s.layout, simLayouts)
		case s.pods < 1:
			return nil, errors.New("--simulate-pods must be at least 1")
		case s.concurrency < 1:
			return nil, errors.New("--simulate-concurrency must be at least 1")
		case s.createQPS < 0:
			return nil, errors.New("--simulate-create-qps must not be negative")
		case s.repeat < 1:
			return nil, errors.New("--simulate-repeat must be at least 1")
		case len(s.paths) == 0:
			return nil, errors.New("--simulate-paths: no path given")
		}
		return s, nil
	}
}

// simulation is one run's state.
type simulation struct {
	cs     kubernetes.Interface
	o      *simOptions
	driver string
	runID  string
	hb     *heartbeater
	// created are the simulated nodes, by index, with what was built for them.
	created   []*corev1.Node
	resources []simResources
}

// runSimulate runs the scheduling benchmark (or, with --simulate-cleanup,
// only the cleanup).
func runSimulate(ctx context.Context, o *options) (retErr error) {
	logger := klog.FromContext(ctx)
	// Hundreds of nodes, heartbeats and pods: client-side throttling must not
	// be what is measured.
	cs, err := newClientset(o.kubeconfig, "gpudra-bench-simulate", 1000, 2000)
	if err != nil {
		return err
	}
	if o.sim.cleanupOnly {
		return cleanupSim(ctx, cs, o.driver, o.sim.concurrency)
	}
	if err := checkNoLeftovers(ctx, cs, o.driver); err != nil {
		return err
	}
	if _, err := cs.ResourceV1().DeviceClasses().Get(ctx, o.sim.class, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("DeviceClass %s: %w (install the driver's chart, or name another class with --simulate-device-class)", o.sim.class, err)
	}
	s := &simulation{cs: cs, o: o.sim, driver: o.driver, runID: uuid.NewString()[:8], hb: newHeartbeater(cs, max(o.sim.concurrency, 16))}
	defer func() {
		s.hb.stop()
		cctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), logger), simCleanupTimeout)
		defer cancel()
		logger.Info("Cleaning up the simulation")
		if err := cleanupSim(cctx, cs, o.driver, o.sim.concurrency); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("cleanup (run gpudra-bench --simulate-cleanup to retry): %w", err))
		}
	}()
	if err := s.setupNamespace(ctx); err != nil {
		return err
	}
	s.hb.start(ctx)

	var results []*phaseResult
	for _, n := range s.o.nodes {
		if err := s.ensureNodes(ctx, n); err != nil {
			return err
		}
		for rep := 0; rep < s.o.repeat; rep++ {
			for _, path := range s.o.paths {
				r, err := s.runPath(ctx, path, n, rep)
				if r != nil {
					results = append(results, r)
					fmt.Println(r.jsonLine())
				}
				if err != nil {
					printSimResults(s, results)
					return err
				}
			}
		}
	}
	printSimResults(s, results)
	var failed []string
	for _, r := range results {
		if r.bound < r.pods {
			failed = append(failed, fmt.Sprintf("N=%d %s: %d of %d pods bound (%s)", r.nodes, r.path, r.bound, r.pods, r.failure))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("not every pod was bound: %s", strings.Join(failed, "; "))
	}
	return nil
}

// checkNoLeftovers fails when an earlier run left simulated objects.
func checkNoLeftovers(ctx context.Context, cs kubernetes.Interface, driver string) error {
	nodes, err := listSimNodes(ctx, cs)
	if err != nil {
		return err
	}
	var left []string
	if len(nodes) > 0 {
		left = append(left, fmt.Sprintf("%d simulated nodes", len(nodes)))
	}
	if ns, err := cs.CoreV1().Namespaces().Get(ctx, simNamespace, metav1.GetOptions{}); err == nil {
		if ns.Labels[simLabel] != simLabelValue {
			return fmt.Errorf("namespace %s exists and is not the simulation's (no label %s=%s): delete it or run elsewhere", simNamespace, simLabel, simLabelValue)
		}
		left = append(left, "namespace "+simNamespace)
	} else if !apierrors.IsNotFound(err) {
		return fmt.Errorf("get namespace %s: %w", simNamespace, err)
	}
	if len(left) > 0 {
		return fmt.Errorf("an earlier simulation left %s: run gpudra-bench --simulate-cleanup first", strings.Join(left, " and "))
	}
	return nil
}

// newSimTemplate is the pods' claim template: one device of class.
func newSimTemplate(class string) *resourceapi.ResourceClaimTemplate {
	return &resourceapi.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: simTemplateName, Namespace: simNamespace, Labels: map[string]string{simLabel: simLabelValue}},
		Spec: resourceapi.ResourceClaimTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{simLabel: simLabelValue}},
			Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{
				Requests: []resourceapi.DeviceRequest{{
					Name: "gpu",
					Exactly: &resourceapi.ExactDeviceRequest{
						DeviceClassName: class,
						AllocationMode:  resourceapi.DeviceAllocationModeExactCount,
						Count:           1,
					},
				}},
			}},
		},
	}
}

func (s *simulation) setupNamespace(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: simNamespace, Labels: map[string]string{simLabel: simLabelValue}}}
	if _, err := s.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", simNamespace, err)
	}
	// The namespace's default service account: pods are rejected by the
	// ServiceAccount admission plugin until the controller has made it.
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := s.cs.CoreV1().ServiceAccounts(simNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the default service account of namespace %s did not appear (is kube-controller-manager running?): %w", simNamespace, err)
	}
	if _, err := s.cs.ResourceV1().ResourceClaimTemplates(simNamespace).Create(ctx, newSimTemplate(s.o.class), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ResourceClaimTemplate %s/%s: %w", simNamespace, simTemplateName, err)
	}
	return nil
}

// ensureNodes creates simulated nodes up to n, builds their slices (not
// published yet) and waits until every node is usable.
func (s *simulation) ensureNodes(ctx context.Context, n int) error {
	logger := klog.FromContext(ctx)
	from := len(s.created)
	if n <= from {
		return nil
	}
	start := time.Now()
	s.created = append(s.created, make([]*corev1.Node, n-from)...)
	s.resources = append(s.resources, make([]simResources, n-from)...)
	err := parallel(ctx, n-from, max(s.o.concurrency, 16), func(ctx context.Context, j int) error {
		i := from + j
		r, err := buildSimResources(ctx, s.o.machine, s.o.layout, s.driver, simNodeName(i))
		if err != nil {
			return err
		}
		node, err := createSimNode(ctx, s.cs, i)
		if node != nil {
			s.created[i], s.resources[i] = node, r
			s.hb.add(node.Name, node.CreationTimestamp.Time)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("creating simulated nodes %d-%d: %w", from, n-1, err)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		nodes, err := listSimNodes(ctx, s.cs)
		if err != nil {
			return false, nil
		}
		usable := 0
		for i := range nodes {
			if nodeUsable(&nodes[i]) {
				usable++
			}
		}
		logger.V(2).Info("Waiting for the simulated nodes to be usable", "usable", usable, "want", n)
		return usable >= n, nil
	})
	if err != nil {
		return fmt.Errorf("the simulated nodes did not all become Ready without the node.kubernetes.io taints within 3 minutes (is kube-controller-manager's node lifecycle controller running?): %w", err)
	}
	r := s.resources[0]
	logger.Info("Simulated nodes ready", "nodes", n, "added", n-from, "took", time.Since(start).Round(time.Millisecond),
		"machine", s.o.machine, "layout", s.o.layout, "devicesPerNode", r.devices, "slicesPerNode", r.slices, "gpusPerNode", r.gpus)
	return nil
}

// publishSlices publishes the slices of the first n simulated nodes and
// waits until the API server lists them all.
func (s *simulation) publishSlices(ctx context.Context, n int) error {
	err := parallel(ctx, n, max(s.o.concurrency, 16), func(ctx context.Context, i int) error {
		_, err := publishSimSlices(ctx, s.cs, s.driver, s.created[i].Name, s.resources[i])
		return err
	})
	if err != nil {
		return fmt.Errorf("publishing the simulated nodes' ResourceSlices: %w", err)
	}
	want := 0
	for i := 0; i < n; i++ {
		want += s.resources[i].slices
	}
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		names, err := listSimSlices(ctx, s.cs, s.driver)
		return err == nil && len(names) >= want, nil
	})
}

// deleteSlices deletes the simulated nodes' slices and waits until none is
// listed.
func (s *simulation) deleteSlices(ctx context.Context) error {
	names, err := listSimSlices(ctx, s.cs, s.driver)
	if err != nil {
		return err
	}
	if err := deleteSlicesNamed(ctx, s.cs, names, max(s.o.concurrency, 16)); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		names, err := listSimSlices(ctx, s.cs, s.driver)
		return err == nil && len(names) == 0, nil
	})
}

func deleteSlicesNamed(ctx context.Context, cs kubernetes.Interface, names []string, workers int) error {
	return parallel(ctx, len(names), workers, func(ctx context.Context, i int) error {
		err := cs.ResourceV1().ResourceSlices().Delete(ctx, names[i], metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete ResourceSlice %s: %w", names[i], err)
		}
		return nil
	})
}

// setExtended advertises the machine's GPU count as nvidia.com/gpu on the
// first n simulated nodes (on: true) or removes it, and waits until the API
// server shows it so.
func (s *simulation) setExtended(ctx context.Context, n int, on bool) error {
	err := parallel(ctx, n, max(s.o.concurrency, 16), func(ctx context.Context, i int) error {
		count := 0
		if on {
			count = s.resources[i].gpus
		}
		_, err := s.cs.CoreV1().Nodes().Patch(ctx, s.created[i].Name, types.StrategicMergePatchType, extendedResourcePatch(count), metav1.PatchOptions{}, "status")
		if err != nil {
			return fmt.Errorf("patch %s on node %s: %w", simExtendedResource, s.created[i].Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		nodes, err := listSimNodes(ctx, s.cs)
		if err != nil {
			return false, nil
		}
		ok := 0
		for _, nd := range nodes {
			if _, has := nd.Status.Allocatable[simExtendedResource]; has == on {
				ok++
			}
		}
		return ok >= n, nil
	})
}

// phaseResult is what one path measured at one node level.
type phaseResult struct {
	path           string
	nodes, pods    int
	bound          int
	rep            int
	machine        string
	layout         string
	devicesPerNode int
	slicesPerNode  int
	// wall is from the first pod creation to the last bind observed;
	// createWall to the last creation's return.
	wall, createWall time.Duration
	// latencies are creation to bound (observed by the watch), per bound pod.
	latencies []time.Duration
	// cpu is the CPU time by process label over the phase (creation to
	// last bind); cpuNotes what limits it.
	cpu      map[string]time.Duration
	cpuNotes map[string]string
	failure  string // why not all pods were bound
}

// simCPULabels are the processes whose CPU time a phase reports.
var simCPULabels = []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"}

// sampleSimCPU reads the CPU time of simCPULabels' processes and of this
// one (selfLabel) from /proc (the kernel's comm holds at most 15 bytes:
// "kube-controller", so argv[0] counts too).
func sampleSimCPU() cpuSample {
	return sampleProcs(func(_, comm, argv0 string) string {
		for _, l := range simCPULabels {
			if isProcess(comm, argv0, l) {
				return l
			}
		}
		return ""
	})
}

// simCPU converts a cpuDelta into durations by label, with notes (a label
// of simCPULabels without any process is noted missing: not on this host).
func simCPU(d map[string]cpuUse, hz int64) (map[string]time.Duration, map[string]string) {
	out, notes := map[string]time.Duration{}, map[string]string{}
	for label, u := range d {
		if label != selfLabel && !slices.Contains(simCPULabels, label) {
			continue // cpuDelta notes the prepare benchmark's processes missing
		}
		out[label] = time.Duration(float64(u.ticks) * float64(time.Second) / float64(hz))
		if u.note != "" && u.note != "missing" {
			notes[label] = u.note
		}
	}
	for _, l := range simCPULabels {
		if _, ok := d[l]; !ok {
			notes[l] = "missing (not a process of this host)"
		}
	}
	return out, notes
}

// podsPerSec is bound pods over the wall time.
func (r *phaseResult) podsPerSec() float64 {
	if r.wall <= 0 {
		return 0
	}
	return float64(r.bound) / r.wall.Seconds()
}

// cpuMsPerPod is label's CPU time per bound pod in milliseconds.
func (r *phaseResult) cpuMsPerPod(label string) float64 {
	if r.bound == 0 {
		return 0
	}
	return ms(r.cpu[label]) / float64(r.bound)
}

// podLatencies returns, for every pod in bound that has a start, bound
// minus start, sorted, and the span from the first start to the last bind.
func podLatencies(starts, bound map[string]time.Time) ([]time.Duration, time.Duration) {
	var out []time.Duration
	var first, last time.Time
	for name, t0 := range starts {
		if first.IsZero() || t0.Before(first) {
			first = t0
		}
		t1, ok := bound[name]
		if !ok {
			continue
		}
		if t1.After(last) {
			last = t1
		}
		out = append(out, max(0, t1.Sub(t0)))
	}
	slices.Sort(out)
	if last.IsZero() {
		return out, 0
	}
	return out, last.Sub(first)
}

// podWatcher follows the pods of one phase through an informer: when each
// was first seen bound, and which exist.
type podWatcher struct {
	mu      sync.Mutex
	bound   map[string]time.Time
	present map[string]*corev1.Pod
	changed chan struct{} // gets a value after every change (capacity 1)
	stop    chan struct{}
}

func newPodWatcher(ctx context.Context, cs kubernetes.Interface, namespace, selector string) (*podWatcher, error) {
	w := &podWatcher{bound: map[string]time.Time{}, present: map[string]*corev1.Pod{}, changed: make(chan struct{}, 1), stop: make(chan struct{})}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	inf := f.Core().V1().Pods().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.observe(obj, false) },
		UpdateFunc: func(_, obj any) { w.observe(obj, false) },
		DeleteFunc: func(obj any) { w.observe(obj, true) },
	})
	if err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	f.Start(w.stop)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		close(w.stop)
		return nil, fmt.Errorf("the pod informer of namespace %s did not sync: %w", namespace, ctx.Err())
	}
	return w, nil
}

// observe records obj (a pod, or a tombstone when deleted).
func (w *podWatcher) observe(obj any, deleted bool) {
	now := time.Now()
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	w.mu.Lock()
	if deleted {
		delete(w.present, p.Name)
	} else {
		w.present[p.Name] = p
		if _, seen := w.bound[p.Name]; !seen && p.Spec.NodeName != "" {
			w.bound[p.Name] = now
		}
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// waitFor returns once cond (called under the lock) holds, ctx ends or
// timeout passes; it reports whether cond held.
func (w *podWatcher) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok := cond()
		w.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-w.changed:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (w *podWatcher) close() { close(w.stop) }

// newSimPod returns pod i of a phase on path: pause container, the
// simulated nodes' toleration and node selector, one GPU through the claim
// template (dra) or the extended resource (extended).
func newSimPod(name, path, runID, phase string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: simNamespace,
			Labels:    map[string]string{simLabel: simLabelValue, simRunLabel: runID, simPhaseLabel: phase},
		},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{simLabel: simLabelValue},
			Tolerations:                   []corev1.Toleration{simToleration()},
			TerminationGracePeriodSeconds: ptr.To(int64(0)),
			AutomountServiceAccountToken:  ptr.To(false),
			Containers:                    []corev1.Container{{Name: "c", Image: simPauseImage}},
		},
	}
	switch path {
	case pathDRA:
		p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu", ResourceClaimTemplateName: ptr.To(simTemplateName)}}
		p.Spec.Containers[0].Resources.Claims = []corev1.ResourceClaim{{Name: "gpu"}}
	case pathExtended:
		one := corev1.ResourceList{simExtendedResource: *resource.NewQuantity(1, resource.DecimalSI)}
		p.Spec.Containers[0].Resources.Limits = one
		p.Spec.Containers[0].Resources.Requests = one
	}
	return p
}

// runPath measures path at n nodes: it makes the nodes offer GPUs the
// path's way, creates the pods, waits until all are bound (or the timeout),
// then deletes them and takes the GPUs back.
func (s *simulation) runPath(ctx context.Context, path string, n, rep int) (*phaseResult, error) {
	logger := klog.FromContext(ctx).WithValues("path", path, "nodes", n, "repeat", rep+1)
	ctx = klog.NewContext(ctx, logger)
	switch path {
	case pathDRA:
		if err := s.publishSlices(ctx, n); err != nil {
			return nil, err
		}
		defer func() {
			if err := s.deleteSlices(ctx); err != nil && ctx.Err() == nil {
				logger.Error(err, "Deleting the simulated nodes' ResourceSlices failed")
			}
		}()
	case pathExtended:
		if err := s.setExtended(ctx, n, true); err != nil {
			return nil, err
		}
		defer func() {
			if err := s.setExtended(ctx, n, false); err != nil && ctx.Err() == nil {
				logger.Error(err, "Removing nvidia.com/gpu from the simulated nodes failed")
			}
		}()
	}
	capacity := 0
	for i := 0; i < n; i++ {
		capacity += s.resources[i].gpus
	}
	if s.o.pods > capacity {
		return nil, fmt.Errorf("--simulate-pods %d exceeds the %d GPUs of %d %s nodes: lower it or add nodes", s.o.pods, capacity, n, s.o.machine)
	}

	phase := fmt.Sprintf("%s-n%d-r%d", path, n, rep)
	w, err := newPodWatcher(ctx, s.cs, simNamespace, simRunLabel+"="+s.runID+","+simPhaseLabel+"="+phase)
	if err != nil {
		return nil, err
	}
	defer w.close()
	defer func() {
		if err := s.deletePods(ctx, w, phase); err != nil && ctx.Err() == nil {
			logger.Error(err, "Deleting the phase's pods failed")
		}
	}()

	r := &phaseResult{path: path, nodes: n, pods: s.o.pods, rep: rep, machine: s.o.machine, layout: s.o.layout,
		devicesPerNode: s.resources[0].devices, slicesPerNode: s.resources[0].slices}
	starts := make(map[string]time.Time, s.o.pods)
	var startsMu sync.Mutex
	names := make([]string, s.o.pods)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", phase, i)
	}
	logger.Info("Creating pods", "pods", s.o.pods, "concurrency", s.o.concurrency)
	hz := clockTicks()
	before := sampleSimCPU()
	t0 := time.Now()
	err = parallel(ctx, len(names), s.o.concurrency, func(ctx context.Context, i int) error {
		if s.o.createQPS > 0 {
			// Pacing, not synchronisation: pod i is due at t0 + i/qps.
			if d := time.Until(t0.Add(time.Duration(float64(i) / s.o.createQPS * float64(time.Second)))); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}
		start := time.Now()
		startsMu.Lock()
		starts[names[i]] = start
		startsMu.Unlock()
		if _, err := s.cs.CoreV1().Pods(simNamespace).Create(ctx, newSimPod(names[i], path, s.runID, phase), metav1.CreateOptions{}); err != nil {
			startsMu.Lock()
			delete(starts, names[i])
			startsMu.Unlock()
			return fmt.Errorf("create pod %s: %w", names[i], err)
		}
		return nil
	})
	r.createWall = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("creating the %s pods: %w", path, err)
	}
	all := w.waitFor(ctx, s.o.timeout, func() bool { return len(w.bound) >= len(names) })
	after := sampleSimCPU()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	w.mu.Lock()
	bound := make(map[string]time.Time, len(w.bound))
	for k, v := range w.bound {
		bound[k] = v
	}
	if !all {
		r.failure = unschedulableReason(w.present)
	}
	w.mu.Unlock()
	r.latencies, r.wall = podLatencies(starts, bound)
	r.bound = len(r.latencies)
	if !all {
		// The CPU time spans the timeout, not the binds.
		r.wall = time.Since(t0)
	}
	r.cpu, r.cpuNotes = simCPU(cpuDelta(before, after), hz)
	logger.Info("Pods bound", "bound", r.bound, "pods", r.pods, "podsPerSecond", round3(r.podsPerSec()), "p50", summarize(r.latencies).p50, "failure", r.failure)
	return r, nil
}

// unschedulableReason is the most frequent PodScheduled=False message of
// the unbound pods in present (under the watcher's lock).
func unschedulableReason(present map[string]*corev1.Pod) string {
	counts := map[string]int{}
	for _, p := range present {
		if p.Spec.NodeName != "" {
			continue
		}
		msg := "not yet attempted"
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				msg = c.Reason + ": " + c.Message
			}
		}
		counts[msg]++
	}
	best, n := "", 0
	for m, c := range counts {
		if c > n || (c == n && m < best) {
			best, n = m, c
		}
	}
	if best == "" {
		return "pods missing"
	}
	return fmt.Sprintf("%d pods: %s", n, best)
}

// deletePods deletes the phase's pods at once (no kubelet would ever
// confirm a graceful deletion) and waits until they are gone and, for the
// DRA path, until their generated claims are gone too (deallocated by
// kube-controller-manager's resourceclaim controller).
func (s *simulation) deletePods(ctx context.Context, w *podWatcher, phase string) error {
	if err := deleteSimPods(ctx, s.cs, simPhaseLabel+"="+phase, max(s.o.concurrency, 16)); err != nil {
		return fmt.Errorf("delete the pods of phase %s: %w", phase, err)
	}
	if !w.waitFor(ctx, s.o.timeout, func() bool { return len(w.present) == 0 }) {
		return fmt.Errorf("the pods of phase %s were not gone within %v", phase, s.o.timeout)
	}
	return waitClaimsGone(ctx, s.cs, s.o.timeout)
}

// deleteSimPods deletes the pods of the simulation's namespace that
// selector selects, at once (grace period 0: no kubelet would confirm a
// graceful deletion).
func deleteSimPods(ctx context.Context, cs kubernetes.Interface, selector string, workers int) error {
	l, err := cs.CoreV1().Pods(simNamespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("list pods %s: %w", selector, err)
	}
	return parallel(ctx, len(l.Items), workers, func(ctx context.Context, i int) error {
		err := cs.CoreV1().Pods(simNamespace).Delete(ctx, l.Items[i].Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s: %w", l.Items[i].Name, err)
		}
		return nil
	})
}

// waitClaimsGone waits until the simulation's namespace holds no claims.
func waitClaimsGone(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	left := 0
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		l, err := cs.ResourceV1().ResourceClaims(simNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		left = len(l.Items)
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%d ResourceClaims of namespace %s still there after %v (kube-controller-manager deletes a pod's generated claims once the pod is gone): %w", left, simNamespace, timeout, err)
	}
	return nil
}

// cleanupSim deletes everything a simulation creates, selected by label
// (and for nodes and leases also by the name prefix): the pods, at once;
// the claims (waiting for kube-controller-manager to release them); the
// template and the namespace; the slices of the simulated nodes; their
// leases; the nodes. It deletes nothing else and is idempotent.
func cleanupSim(ctx context.Context, cs kubernetes.Interface, driver string, workers int) error {
	logger := klog.FromContext(ctx)
	var errs []error
	ns, err := cs.CoreV1().Namespaces().Get(ctx, simNamespace, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		errs = append(errs, fmt.Errorf("get namespace %s: %w", simNamespace, err))
	case ns.Labels[simLabel] != simLabelValue:
		errs = append(errs, fmt.Errorf("namespace %s is not the simulation's (no label %s=%s): left alone", simNamespace, simLabel, simLabelValue))
	default:
		sel := metav1.ListOptions{LabelSelector: simLabel + "=" + simLabelValue}
		if err := deleteSimPods(ctx, cs, sel.LabelSelector, workers); err != nil {
			errs = append(errs, fmt.Errorf("delete the pods of namespace %s: %w", simNamespace, err))
		}
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			l, err := cs.CoreV1().Pods(simNamespace).List(ctx, metav1.ListOptions{})
			return err == nil && len(l.Items) == 0, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("pods of namespace %s still there: %w", simNamespace, err))
		}
		if err := waitClaimsGone(ctx, cs, 2*time.Minute); err != nil {
			errs = append(errs, err)
		}
		if err := cs.ResourceV1().ResourceClaimTemplates(simNamespace).Delete(ctx, simTemplateName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete ResourceClaimTemplate %s/%s: %w", simNamespace, simTemplateName, err))
		}
		if err := cs.CoreV1().Namespaces().Delete(ctx, simNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", simNamespace, err))
		}
		// Gone, so that the next run can start (it refuses a leftover one).
		err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, simNamespace, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("namespace %s still terminating after 2 minutes (kube-controller-manager's namespace controller removes it): %w", simNamespace, err))
		}
	}

	sliceNames, err := listSimSlices(ctx, cs, driver)
	if err != nil {
		errs = append(errs, err)
	} else if err := deleteSlicesNamed(ctx, cs, sliceNames, workers); err != nil {
		errs = append(errs, err)
	}

	leases, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{LabelSelector: simLabel + "=" + simLabelValue})
	var leaseNames []string
	if err != nil {
		errs = append(errs, fmt.Errorf("list the simulated nodes' leases: %w", err))
	} else {
		for _, l := range leases.Items {
			if strings.HasPrefix(l.Name, simNodePrefix) {
				leaseNames = append(leaseNames, l.Name)
			}
		}
	}
	if err := parallel(ctx, len(leaseNames), workers, func(ctx context.Context, i int) error {
		err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, leaseNames[i], metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete lease %s: %w", leaseNames[i], err)
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}

	nodes, err := listSimNodes(ctx, cs)
	var nodeNames []string
	if err != nil {
		errs = append(errs, err)
	} else {
		nodeNames = simNodeNames(nodes)
	}
	if err := parallel(ctx, len(nodeNames), workers, func(ctx context.Context, i int) error {
		err := cs.CoreV1().Nodes().Delete(ctx, nodeNames[i], metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete node %s: %w", nodeNames[i], err)
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	logger.Info("Simulation cleaned up", "slices", len(sliceNames), "leases", len(leaseNames), "nodes", len(nodeNames), "errors", len(errs))
	return errors.Join(errs...)
}

// printSimResults prints one table of all phases, then the DRA/extended
// ratios per node level (medians of the per-repeat ratios with repeats).
func printSimResults(s *simulation, results []*phaseResult) {
	if len(results) == 0 {
		return
	}
	r0 := results[0]
	fmt.Printf("\nscheduling, simulated: machine %s, layout %s (%d devices in %d slices per node), %d pods per path, creation concurrency %d\n",
		r0.machine, r0.layout, r0.devicesPerNode, r0.slicesPerNode, s.o.pods, s.o.concurrency)
	fmt.Println("latency: pod creation to bound (spec.nodeName seen by a watch), ms; CPU: ms per bound pod from /proc/<pid>/stat")
	fmt.Println(" nodes | path     | rep | bound |  pods/s |     p50 |     p90 |     p99 |     max | scheduler |  kcm   | apiserver |  etcd  | bench")
	for _, r := range results {
		sm := summarize(r.latencies)
		fmt.Printf(" %5d | %-8s | %3d | %5d | %7.1f | %7.1f | %7.1f | %7.1f | %7.1f | %9.2f | %6.2f | %9.2f | %6.2f | %5.2f\n",
			r.nodes, r.path, r.rep+1, r.bound, r.podsPerSec(), ms(sm.p50), ms(sm.p90), ms(sm.p99), ms(sm.max),
			r.cpuMsPerPod("kube-scheduler"), r.cpuMsPerPod("kube-controller-manager"), r.cpuMsPerPod("kube-apiserver"), r.cpuMsPerPod("etcd"), r.cpuMsPerPod(selfLabel))
	}
	for _, r := range results {
		for _, l := range append(slices.Clone(simCPULabels), selfLabel) {
			if note := r.cpuNotes[l]; note != "" {
				fmt.Printf("  N=%d %s repeat %d: %s: %s\n", r.nodes, r.path, r.rep+1, l, note)
			}
		}
	}
	for _, ratio := range simRatios(results) {
		fmt.Println(ratio)
	}
}

// simRatios returns, per node level that has both paths, the DRA/extended
// ratios of pods/s, p50, p99 and scheduler CPU per pod: within each repeat,
// then their medians.
func simRatios(results []*phaseResult) []string {
	type key struct{ nodes, rep int }
	byKey := map[key]map[string]*phaseResult{}
	var levels []int
	for _, r := range results {
		k := key{r.nodes, r.rep}
		if byKey[k] == nil {
			byKey[k] = map[string]*phaseResult{}
		}
		byKey[k][r.path] = r
		if !slices.Contains(levels, r.nodes) {
			levels = append(levels, r.nodes)
		}
	}
	sort.Ints(levels)
	var out []string
	for _, n := range levels {
		var tput, p50, p99, cpu []float64
		for k, m := range byKey {
			d, e := m[pathDRA], m[pathExtended]
			if k.nodes != n || d == nil || e == nil || d.bound == 0 || e.bound == 0 {
				continue
			}
			ds, es := summarize(d.latencies), summarize(e.latencies)
			tput = append(tput, ratio(d.podsPerSec(), e.podsPerSec()))
			p50 = append(p50, ratio(ms(ds.p50), ms(es.p50)))
			p99 = append(p99, ratio(ms(ds.p99), ms(es.p99)))
			cpu = append(cpu, ratio(d.cpuMsPerPod("kube-scheduler"), e.cpuMsPerPod("kube-scheduler")))
		}
		if len(tput) == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("N=%d DRA/extended (median of %d): pods/s %.2fx, p50 %.2fx, p99 %.2fx, scheduler CPU per pod %.2fx",
			n, len(tput), median(tput), median(p50), median(p99), median(cpu)))
	}
	return out
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// jsonLine is the phase as one JSON object.
func (r *phaseResult) jsonLine() string {
	sm := summarize(r.latencies)
	cpu := map[string]float64{}
	for l := range r.cpu {
		cpu[l] = round3(r.cpuMsPerPod(l))
	}
	b, _ := json.Marshal(map[string]any{
		"mode": "simulate", "path": r.path, "nodes": r.nodes, "repeat": r.rep + 1, "pods": r.pods, "bound": r.bound,
		"machine": r.machine, "layout": r.layout, "devices_per_node": r.devicesPerNode, "slices_per_node": r.slicesPerNode,
		"pods_per_s": round3(r.podsPerSec()), "wall_s": round3(r.wall.Seconds()), "create_wall_s": round3(r.createWall.Seconds()),
		"p50_ms": round3(ms(sm.p50)), "p90_ms": round3(ms(sm.p90)), "p99_ms": round3(ms(sm.p99)), "max_ms": round3(ms(sm.max)),
		"cpu_ms_per_pod": cpu, "cpu_notes": r.cpuNotes, "failure": r.failure,
	})
	return string(b)
}

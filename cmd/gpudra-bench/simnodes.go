package main

// Simulated nodes for the scheduling benchmark (see simulate.go): Node
// objects without a kubelet, kept Ready by this process, their Leases, and
// the ResourceSlices that the kubelet plugin would publish for them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	nodedevices "github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/publisher"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

const (
	// simLabel marks every object the simulation creates (nodes, leases,
	// the namespace, pods, the template); with value simLabelValue it is
	// also the simulated nodes' NoSchedule taint, which only the bench's
	// pods tolerate, so that no DaemonSet or other workload lands there.
	simLabel      = "gpudra.dev/simulated"
	simLabelValue = "true"
	// simNodePrefix starts the name of every simulated node: a node is
	// treated as simulated (and deleted by cleanup) only when it has both
	// this prefix and simLabel=simLabelValue.
	simNodePrefix = "gpudra-sim-"
	// simExtendedResource is the device plugin's resource of the baseline.
	simExtendedResource corev1.ResourceName = "nvidia.com/gpu"

	// leaseDuration is the simulated nodes' Lease duration, as the
	// kubelet's default (40 s); leaseRenewInterval renews them at a quarter
	// of it, as the kubelet does. The node lifecycle controller only marks
	// a node NotReady when its Lease and its Ready condition are both older
	// than its grace period (50 s by default).
	leaseDuration      = 40 * time.Second
	leaseRenewInterval = 10 * time.Second
	// nodeStatusInterval is how often the Ready condition's heartbeat is
	// refreshed (the kubelet: 5 min with Leases, kwok: a minute or less).
	nodeStatusInterval = time.Minute
)

// simNodeName is the name of simulated node i.
func simNodeName(i int) string { return fmt.Sprintf("%s%d", simNodePrefix, i) }

// isSimNode tells whether n is a node the simulation created: the name
// prefix and the label, both (a real node never has both).
func isSimNode(n *corev1.Node) bool {
	return strings.HasPrefix(n.Name, simNodePrefix) && n.Labels[simLabel] == simLabelValue
}

// simTaint is the taint of every simulated node.
func simTaint() corev1.Taint {
	return corev1.Taint{Key: simLabel, Value: simLabelValue, Effect: corev1.TaintEffectNoSchedule}
}

// simToleration tolerates simTaint and nothing else.
func simToleration() corev1.Toleration {
	return corev1.Toleration{Key: simLabel, Operator: corev1.TolerationOpEqual, Value: simLabelValue, Effect: corev1.TaintEffectNoSchedule}
}

// simNodeCapacity is the capacity (and allocatable) of a simulated node:
// large enough that only the GPUs limit how many bench pods fit (the pods
// request nothing else), and a pod limit above any machine's GPU count.
func simNodeCapacity() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("224"),
		corev1.ResourceMemory:           resource.MustParse("2Ti"),
		corev1.ResourcePods:             resource.MustParse("250"),
		corev1.ResourceEphemeralStorage: resource.MustParse("10Ti"),
	}
}

// simConditions are the conditions of a healthy node, with heartbeat now.
// transition is the time of their last transition (the node's creation).
func simConditions(now, transition metav1.Time) []corev1.NodeCondition {
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: transition}
	}
	return []corev1.NodeCondition{
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "simulated by gpudra-bench"),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "simulated by gpudra-bench"),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "simulated by gpudra-bench"),
		cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "simulated by gpudra-bench: no kubelet, kept Ready by its Lease"),
	}
}

// newSimNode returns simulated node i with its status: labelled, tainted
// with simTaint, Ready, no extended resources.
func newSimNode(i int, now time.Time) *corev1.Node {
	name := simNodeName(i)
	t := metav1.NewTime(now)
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				simLabel:                 simLabelValue,
				corev1.LabelHostname:     name,
				corev1.LabelOSStable:     "linux",
				corev1.LabelArchStable:   "amd64",
				"node.kubernetes.io/sim": "gpudra-bench",
			},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{simTaint()}},
		Status: corev1.NodeStatus{
			Capacity:    simNodeCapacity(),
			Allocatable: simNodeCapacity(),
			Phase:       corev1.NodeRunning,
			Conditions:  simConditions(t, t),
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.%d.%d.%d", 200+i/65536%50, i/256%256, i%256)},
				{Type: corev1.NodeHostName, Address: name},
			},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion:          "v1.37.1",
				OperatingSystem:         "linux",
				Architecture:            "amd64",
				ContainerRuntimeVersion: "simulated://gpudra-bench",
				KernelVersion:           "simulated",
				OSImage:                 "simulated by gpudra-bench",
			},
		},
	}
}

// newSimLease returns the Lease of node n in kube-node-lease, held by it
// and renewed at now, owned by the node (so that deleting the node removes
// it too).
func newSimLease(n *corev1.Node, now time.Time) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name:      n.Name,
			Namespace: corev1.NamespaceNodeLease,
			Labels:    map[string]string{simLabel: simLabelValue},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID,
			}},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(n.Name),
			LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
			RenewTime:            &metav1.MicroTime{Time: now},
		},
	}
}

// leaseRenewPatch is the merge patch that renews a Lease at now.
func leaseRenewPatch(now time.Time) []byte {
	b, _ := json.Marshal(map[string]any{"spec": map[string]any{"renewTime": metav1.MicroTime{Time: now}}})
	return b
}

// nodeHeartbeatPatch is the strategic merge patch of a node's status that
// refreshes its conditions' heartbeats at now (conditions merge by type;
// the transition time stays that of creation).
func nodeHeartbeatPatch(now, transition time.Time) []byte {
	b, _ := json.Marshal(map[string]any{"status": map[string]any{
		"conditions": simConditions(metav1.NewTime(now), metav1.NewTime(transition)),
	}})
	return b
}

// extendedResourcePatch is the strategic merge patch of a node's status
// that advertises count GPUs as simExtendedResource (count 0: removes it).
func extendedResourcePatch(count int) []byte {
	var v any // nil removes the key
	if count > 0 {
		v = fmt.Sprint(count)
	}
	r := map[string]any{string(simExtendedResource): v}
	b, _ := json.Marshal(map[string]any{"status": map[string]any{"capacity": r, "allocatable": r}})
	return b
}

// nodeUsable tells whether the scheduler may place bench pods on n: Ready,
// and no taint but simTaint (the TaintNodesByCondition admission plugin
// adds node.kubernetes.io/not-ready to every new node; the node lifecycle
// controller removes it once it has seen the node Ready).
func nodeUsable(n *corev1.Node) bool {
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Key != simLabel {
			return false
		}
	}
	return true
}

// Slice layouts (--simulate-layout). Every layout publishes what
// resourceslice builds for the machine; they differ in how devices are
// split into slices and which of the builder's options are on.
const (
	// layoutStatic is the plugin's default: resourceslice.DriverResources,
	// all the node's devices in one slice (up to 128).
	layoutStatic = "static"
	// layoutPerDevice is layoutStatic's devices with one device per slice
	// (the pool has as many slices as devices). No binary publishes this;
	// it shows what the slice count costs the scheduler.
	layoutPerDevice = "per-device"
	// layoutDynamicMIG is the plugin with --dynamic-mig on: every
	// MIG-capable GPU partitionable (whole GPU plus one device per profile
	// and placement, consuming its counter set), 64 devices per slice.
	layoutDynamicMIG = "dynamic-mig"
	// layoutConsumable is the plugin with --consumable-capacity=memory:
	// whole GPUs shared between claims by memory.
	layoutConsumable = "consumable"
)

var simLayouts = []string{layoutStatic, layoutPerDevice, layoutDynamicMIG, layoutConsumable}

// simResources is what the simulation publishes for one node.
type simResources struct {
	resources draresourceslice.DriverResources
	// gpus is the number of devices of type gpu (what DeviceClass
	// gpu.nvidia.com selects): the node's extended-resource count in the
	// baseline.
	gpus int
	// devices and slices count the pool's devices and slices.
	devices, slices int
}

// buildSimResources builds node name's DriverResources the way the kubelet
// plugin does (pkg/plugin startKubeletPlugin, publish): node.Open on the mock
// machine seeded by the node name (UUIDs differ per node), the preparable
// devices of pkg/devices, resourceslice.Devices and UnusableDevices,
// CounterSets and DriverResources; then applies layout.
func buildSimResources(ctx context.Context, machine, layout, driver, name string) (simResources, error) {
	// node.Open logs the GPUs it found at Info: once per node is noise here.
	quiet := klog.NewContext(ctx, klog.FromContext(ctx).V(5))
	n, err := node.Open(quiet, node.Flags{NVML: "mock:" + machine}, node.Options{Mode: node.HostTool, Seed: name})
	if err != nil {
		return simResources{}, fmt.Errorf("mock machine %s for node %s: %w", machine, name, err)
	}
	defer n.Close()
	opts := resourceslice.Options{PCIeRoot: n.PCIeRoot()}
	set := n.Devices
	switch layout {
	case layoutDynamicMIG:
		// As the plugin's openDynamicMIG on a fresh node: every GPU whose MIG
		// profiles can be read and whose mode needs no reset is partitionable.
		layouts, errs := inventory.DiscoverMIGLayouts(n.NVML, n.Inventory)
		if len(errs) > 0 {
			return simResources{}, fmt.Errorf("MIG layouts of mock machine %s: %w", machine, errors.Join(errs...))
		}
		// GPUs holding MIG devices made outside the driver stay static.
		foreign := map[string]bool{}
		for _, m := range n.Inventory.MIGDevices {
			foreign[m.ParentUUID] = true
		}
		part := map[string]inventory.MIGLayout{}
		for _, d := range n.Inventory.Devices {
			if l, ok := layouts[d.UUID]; ok && !l.ModePending && (d.MIGEnabled || l.ModeSwitchable) && !foreign[d.UUID] {
				part[d.UUID] = l
			}
		}
		set = nodedevices.FromInventoryWith(n.Inventory, nodedevices.Options{Partitionable: part})
	case layoutConsumable:
		cc, err := resourceslice.ParseConsumableCapacity("memory")
		if err != nil {
			return simResources{}, err
		}
		opts.ConsumableCapacity = cc
	}
	devs := resourceslice.Devices(n.Inventory, set, opts)
	devs = append(devs, resourceslice.UnusableDevices(n.Inventory, driver, opts)...)
	res := resourceslice.DriverResources(name, devs, resourceslice.CounterSets(set))
	if layout == layoutPerDevice {
		res = splitPerDevice(res)
	}
	out := simResources{resources: res}
	for _, p := range res.Pools {
		out.slices += len(p.Slices)
		for _, s := range p.Slices {
			out.devices += len(s.Devices)
			for _, d := range s.Devices {
				if a, ok := d.Attributes[resourceslice.AttrType]; ok && a.StringValue != nil && *a.StringValue == string(nodedevices.KindGPU) {
					out.gpus++
				}
			}
		}
	}
	return out, nil
}

// splitPerDevice returns res with every device in a slice of its own (the
// counter slices unchanged, first).
func splitPerDevice(res draresourceslice.DriverResources) draresourceslice.DriverResources {
	out := draresourceslice.DriverResources{Pools: map[string]draresourceslice.Pool{}}
	for name, p := range res.Pools {
		var np draresourceslice.Pool
		np.Generation = p.Generation
		for _, s := range p.Slices {
			if len(s.Devices) == 0 {
				np.Slices = append(np.Slices, s)
				continue
			}
			for _, d := range s.Devices {
				np.Slices = append(np.Slices, draresourceslice.Slice{Devices: []resourceapi.Device{d}})
			}
		}
		out.Pools[name] = np
	}
	return out
}

// publishSimSlices creates the slices of node name through the plugin's own
// direct path (publisher.CreateInitialSlices: the resourceslice
// controller's names, owned by the node). It returns how many it created
// (0 when the node has slices of the driver already).
func publishSimSlices(ctx context.Context, cs kubernetes.Interface, driver, name string, r simResources) (int, error) {
	return publisher.CreateInitialSlices(ctx, cs, driver, name, r.resources)
}

// simSliceNames returns the names of the ResourceSlices of driver on the
// simulated nodes of nodes, sorted. Slices of any other node are never
// selected.
func simSliceNames(slices []resourceapi.ResourceSlice, nodes []corev1.Node, driver string) []string {
	sim := map[string]bool{}
	for i := range nodes {
		if isSimNode(&nodes[i]) {
			sim[nodes[i].Name] = true
		}
	}
	var out []string
	for _, s := range slices {
		n := ptr.Deref(s.Spec.NodeName, "")
		if s.Spec.Driver == driver && sim[n] && strings.HasPrefix(n, simNodePrefix) {
			out = append(out, s.Name)
		}
	}
	sortStrings(out)
	return out
}

// simNodeNames returns the names of the simulated nodes in nodes, sorted.
func simNodeNames(nodes []corev1.Node) []string {
	var out []string
	for i := range nodes {
		if isSimNode(&nodes[i]) {
			out = append(out, nodes[i].Name)
		}
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) { slices.Sort(s) }

// listSimNodes lists the simulated nodes (label and prefix).
func listSimNodes(ctx context.Context, cs kubernetes.Interface) ([]corev1.Node, error) {
	l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: simLabel + "=" + simLabelValue})
	if err != nil {
		return nil, fmt.Errorf("list simulated nodes: %w", err)
	}
	var out []corev1.Node
	for i := range l.Items {
		if isSimNode(&l.Items[i]) {
			out = append(out, l.Items[i])
		}
	}
	return out, nil
}

// listSimSlices returns the names of driver's slices on simulated nodes.
func listSimSlices(ctx context.Context, cs kubernetes.Interface, driver string) ([]string, error) {
	nodes, err := listSimNodes(ctx, cs)
	if err != nil || len(nodes) == 0 {
		return nil, err
	}
	l, err := cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector(resourceapi.ResourceSliceSelectorDriver, driver).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list ResourceSlices of driver %s: %w", driver, err)
	}
	return simSliceNames(l.Items, nodes, driver), nil
}

// parallel runs fn(i) for i in [0, n) with at most workers calls in flight
// and returns the errors joined (at most the first 5 are kept, with a
// count of the rest).
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	if workers < 1 {
		workers = 1
	}
	var (
		mu   sync.Mutex
		errs []error
		more int
		wg   sync.WaitGroup
	)
	next := make(chan int)
	for w := 0; w < min(workers, n); w++ {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					} else {
						more++
					}
					mu.Unlock()
				}
			}
		})
	}
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if more > 0 {
		errs = append(errs, fmt.Errorf("and %d more errors", more))
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// createSimNode creates simulated node i, its Ready status and its Lease.
// The TaintNodesByCondition admission plugin taints it not-ready on
// creation; waitNodesUsable waits for the node lifecycle controller to
// lift that.
func createSimNode(ctx context.Context, cs kubernetes.Interface, i int) (*corev1.Node, error) {
	want := newSimNode(i, time.Now())
	n, err := cs.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", want.Name, err)
	}
	// The API server may drop the status of a create: set it explicitly, by
	// a patch (the node lifecycle controller updates new nodes at once, an
	// update would conflict).
	status, err := json.Marshal(map[string]any{"status": want.Status})
	if err != nil {
		return nil, fmt.Errorf("status of node %s: %w", want.Name, err)
	}
	if n, err = cs.CoreV1().Nodes().Patch(ctx, want.Name, types.StrategicMergePatchType, status, metav1.PatchOptions{}, "status"); err != nil {
		return nil, fmt.Errorf("set the status of node %s: %w", want.Name, err)
	}
	if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, newSimLease(n, time.Now()), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create the Lease of node %s: %w", want.Name, err)
	}
	return n, nil
}

// heartbeater keeps the simulated nodes Ready: it renews their Leases every
// leaseRenewInterval and refreshes their conditions every
// nodeStatusInterval, until stopped.
type heartbeater struct {
	cs      kubernetes.Interface
	mu      sync.Mutex
	nodes   map[string]time.Time // name -> creation (conditions' transition time)
	cancel  context.CancelFunc
	done    chan struct{}
	workers int
	// errors counts failed heartbeats (logged at V(2)).
	errors int
}

func newHeartbeater(cs kubernetes.Interface, workers int) *heartbeater {
	return &heartbeater{cs: cs, nodes: map[string]time.Time{}, workers: workers}
}

// add makes h keep node name alive (created at created).
func (h *heartbeater) add(name string, created time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodes[name] = created
}

func (h *heartbeater) snapshot() ([]string, []time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.nodes))
	for n := range h.nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	times := make([]time.Time, len(names))
	for i, n := range names {
		times[i] = h.nodes[n]
	}
	return names, times
}

// start runs the heartbeats in the background until stop or ctx ends.
func (h *heartbeater) start(ctx context.Context) {
	ctx, h.cancel = context.WithCancel(ctx)
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		logger := klog.FromContext(ctx)
		lease := time.NewTicker(leaseRenewInterval)
		defer lease.Stop()
		status := time.NewTicker(nodeStatusInterval)
		defer status.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-lease.C:
				names, _ := h.snapshot()
				patch := leaseRenewPatch(time.Now())
				err := parallel(ctx, len(names), h.workers, func(ctx context.Context, i int) error {
					_, err := h.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Patch(ctx, names[i], types.MergePatchType, patch, metav1.PatchOptions{})
					return err
				})
				h.note(logger, "Renewing simulated node Leases failed", err)
			case <-status.C:
				names, created := h.snapshot()
				now := time.Now()
				err := parallel(ctx, len(names), h.workers, func(ctx context.Context, i int) error {
					_, err := h.cs.CoreV1().Nodes().Patch(ctx, names[i], types.StrategicMergePatchType, nodeHeartbeatPatch(now, created[i]), metav1.PatchOptions{}, "status")
					return err
				})
				h.note(logger, "Refreshing simulated node conditions failed", err)
			}
		}
	}()
}

func (h *heartbeater) note(logger klog.Logger, msg string, err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	h.mu.Lock()
	h.errors++
	h.mu.Unlock()
	logger.Error(err, msg+": the node lifecycle controller may mark the nodes NotReady if this persists")
}

// stop ends the heartbeats and waits for the last one to finish.
func (h *heartbeater) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// Command gpudra-bench plays the kubelet against a DRA plugin socket: it
// creates ResourceClaims allocated to the node's devices (by writing their
// status directly, in place of the scheduler), then calls
// NodePrepareResources and NodeUnprepareResources on the plugin's gRPC socket
// at one or more concurrency levels and reports per-call latencies and
// throughput, next to the latency floor of a durable file write on the same
// disk (temp file + fsync + rename + directory fsync).
//
// Around every level it also measures what a prepare costs the node:
//
//   - CPU time per prepare/unprepare pair of the plugin (gpu-kubelet-plugin),
//     containerd, kube-apiserver, etcd and kubelet, and their sum: utime+stime
//     of /proc/<pid>/stat in clock ticks (AT_CLKTCK of the auxiliary vector,
//     which sysconf(_SC_CLK_TCK) returns; 100 without it), sampled right
//     before and after the level's rounds. Processes are found by
//     /proc/<pid>/comm or argv[0]'s base name; several of one kind are added
//     up, a missing one is noted, as are processes that start or exit during
//     the level. The bench's own CPU time is shown apart, not in the sum.
//   - The inotify events in the CDI spec directory (--cdi-dir) per prepare
//     and per unprepare call: create, write (IN_MODIFY), moved_to,
//     moved_from, remove and chmod, and how many of them containerd's CDI
//     cache (tags.cncf.io/container-device-interface v1.1.1) re-reads its
//     spec directories on: all but chmod, on names ending in .json or .yaml.
//     The event stream is cut after every phase by a marker file (a name
//     containerd ignores) whose event ends the phase's events; the time of
//     the cuts is left out of the level's wall time and pairs/s.
//   - The split of the kubelet-side prepare latency: the claim GET (timed
//     from this host, and the plugin's own gpudra_api_request_duration_seconds
//     {verb="GET",resource="resourceclaims"}), the driver's prepare
//     (gpudra_claim_operation_duration_seconds{operation="prepare"}), both as
//     means of the _sum and _count read from the plugin's /metrics before and
//     after the level, and the rest: kubelet-side p50 minus the GET (the
//     plugin's mean if it has one, else the host's p50) minus the driver's
//     mean. The same for unprepare (no GET). /metrics is read from the
//     plugin pod's IP and metrics port (the pod whose UID the socket name
//     carries), else through the API server's pod proxy, or --metrics-url.
//
// Each figure is printed in a table after the latency table and added to the
// level's JSON line (cpu_ms_per_pair, cpu_notes, cdi_events, prepare_split).
//
// It needs access to the plugin socket (root on the node) and a kubeconfig
// allowed to create ResourceClaims and update their status, and to list pods.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/gpudra/gpudra/pkg/kubeclient"
)

type options struct {
	kubeconfig  string
	socket      string
	driver      string
	node        string
	claims      int
	concurrency []int
	rounds      int
	repeat      int
	warmup      int
	memoryPairs int
	namespace   string
	fsyncDir    string
	fsyncWrites int
	callTimeout time.Duration
	cdiDir      string
	metricsURL  string
	// shareMemory, when set, makes every claim a share of one GPU
	// consuming this much memory (the chart's consumableCapacity on).
	shareMemory *resource.Quantity
	// compareDriver and compareSocket name a second plugin measured in
	// the same run (compare.go); "" for none.
	compareDriver, compareSocket string
	// sim is the scheduling benchmark's options (simulate.go).
	sim *simOptions
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpudra-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runner := run
	if opts.sim.active() {
		runner = runSimulate
	}
	if err := runner(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "gpudra-bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("gpudra-bench", flag.ContinueOnError)
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "path to the kubeconfig (default $KUBECONFIG; empty: in-cluster config)")
	fs.StringVar(&o.socket, "socket", "/var/lib/kubelet/plugins/gpu.nvidia.com/dra.sock", "the plugin's DRA gRPC socket (if missing, the only dra*.sock in its directory is used)")
	fs.StringVar(&o.driver, "driver", "gpu.nvidia.com", "DRA driver name")
	fs.StringVar(&o.node, "node", "", "node whose ResourceSlices are used (default: the cluster's only node)")
	fs.IntVar(&o.claims, "claims", 8, "number of ResourceClaims (at most the number of free devices)")
	conc := fs.String("concurrency", "1", "calls in flight; a comma-separated list runs each level in turn (e.g. 1,8)")
	fs.IntVar(&o.rounds, "rounds", 50, "prepare+unprepare rounds per concurrency level")
	fs.IntVar(&o.repeat, "repeat", 1, "run all the levels this many times (the floor measured again each time) and print the medians and the median throughput ratio of the last level to the first")
	fs.IntVar(&o.warmup, "warmup", 1, "unmeasured rounds before the first measured level")
	fs.IntVar(&o.memoryPairs, "memory-pairs", 0, "after the latency levels, run this many pairs at concurrency 1 and report the plugin's resident memory before, halfway and at the end (0: off)")
	fs.StringVar(&o.namespace, "namespace", "gpudra-bench", "namespace of the claims (created, and deleted afterwards, if missing)")
	fs.StringVar(&o.fsyncDir, "fsync-dir", "/var/run/cdi", "directory where the durable-write floor is measured")
	fs.IntVar(&o.fsyncWrites, "fsync-writes", 200, "number of durable writes for the floor measurement")
	fs.StringVar(&o.cdiDir, "cdi-dir", "/var/run/cdi", "CDI spec directory whose inotify events are counted per prepare and per unprepare (empty: off)")
	fs.StringVar(&o.metricsURL, "metrics-url", "", "URL of the plugin's /metrics (default: the metrics port of the plugin pod whose UID the socket name carries, at the pod's IP, else through the API server's pod proxy; off: do not read them)")
	fs.DurationVar(&o.callTimeout, "call-timeout", 30*time.Second, "timeout of one gRPC call")
	fs.StringVar(&o.compareDriver, "compare-driver", "", "a second DRA driver name whose plugin (e.g. a previous build, installed as a second chart release with this driverName) is measured in the same run, in turns with --driver (A B, then B A, ...), with the medians of both and the per-repeat ratios A/B per level")
	fs.StringVar(&o.compareSocket, "compare-socket", "", "the DRA socket of --compare-driver's plugin (default: dra.sock in <plugins dir>/<compare driver>/, or the only dra*.sock there)")
	share := fs.String("share-memory", "", "make every claim a share of the first free GPU that consumes this much memory (e.g. 10Gi; needs the chart's consumableCapacity): with --claims 1 every prepare is a GPU's first share (its MPS daemon starts), with more claims the others join it")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: gpudra-bench [flags]  (as root on the node, with a kubeconfig)

Plays the kubelet against the plugin's DRA socket: rounds of prepare-all/unprepare-all of
--claims claims at each --concurrency level. Per level it prints the call latencies and pairs/s,
the CPU time per pair of the plugin, containerd, kube-apiserver, etcd and kubelet
(/proc/<pid>/stat before and after), the inotify events in --cdi-dir per prepare and per
unprepare (and those containerd's CDI cache refreshes on), and the prepare latency split
into claim GET, driver prepare (the plugin's histograms) and the rest; one JSON line per level.

`)
		fs.PrintDefaults()
	}
	simFlags := addSimulateFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	var err error
	if o.sim, err = simFlags(); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if *share != "" {
		q, err := resource.ParseQuantity(*share)
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("--share-memory: %q is not a positive quantity such as 10Gi", *share)
		}
		o.shareMemory = &q
	}
	for _, s := range strings.Split(*conc, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		c, err := strconv.Atoi(s)
		if err != nil || c < 1 {
			return nil, fmt.Errorf("--concurrency: %q is not a positive integer", s)
		}
		o.concurrency = append(o.concurrency, c)
	}
	switch {
	case len(o.concurrency) == 0:
		return nil, errors.New("--concurrency: no level given")
	case o.claims < 1:
		return nil, errors.New("--claims must be at least 1")
	case o.rounds < 1:
		return nil, errors.New("--rounds must be at least 1")
	case o.repeat < 1:
		return nil, errors.New("--repeat must be at least 1")
	case o.warmup < 0:
		return nil, errors.New("--warmup must not be negative")
	case o.fsyncWrites < 1:
		return nil, errors.New("--fsync-writes must be at least 1")
	}
	return o, nil
}

func run(ctx context.Context, o *options) (retErr error) {
	// The same client configuration as the plugin's, so that the claim GET
	// figure is what the plugin pays.
	cs, err := newClientset(o.kubeconfig, "gpudra-bench", 200, 400)
	if err != nil {
		return err
	}

	if o.node == "" {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list nodes: %w", err)
		}
		if len(nodes.Items) != 1 {
			return fmt.Errorf("the cluster has %d nodes: name one with --node", len(nodes.Items))
		}
		o.node = nodes.Items[0].Name
	}

	// The disk floor first, while nothing else of ours touches the disk.
	floor, err := measureFloor(o.fsyncDir, o.fsyncWrites)
	if err != nil {
		return err
	}
	fmt.Printf("durable write floor in %s (%d writes of 2 KiB): p50 %.3f ms, p90 %.3f ms, max %.3f ms\n",
		o.fsyncDir, o.fsyncWrites, ms(floor.p50), ms(floor.p90), ms(floor.max))

	// Set up each plugin's claims; clean up whatever was set up, also on
	// failure or interruption (with a context of its own).
	var targets []*target
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// In reverse: the first target may have created the namespace.
		for i := len(targets) - 1; i >= 0; i-- {
			if err := targets[i].close(cctx, cs); err != nil {
				fmt.Fprintln(os.Stderr, "cleanup:", err)
				if retErr == nil {
					retErr = err
				}
			}
		}
	}()
	for _, to := range o.targets() {
		t, err := setupTarget(ctx, cs, to)
		if t != nil {
			targets = append(targets, t)
		}
		if err != nil {
			return err
		}
	}
	floor.get = targets[0].get.p50
	if len(targets) > 1 {
		return runCompare(ctx, o, targets, floor)
	}
	b, probe := targets[0].bencher, targets[0].probe

	var reps [][]*levelResult
	var floors []summary
	for rep := 0; rep < o.repeat; rep++ {
		if rep > 0 {
			get := floor.get
			if floor, err = measureFloor(o.fsyncDir, o.fsyncWrites); err != nil {
				return err
			}
			floor.get = get
		}
		var results []*levelResult
		for _, c := range o.concurrency {
			r := probe.level(ctx, b, c, o.rounds)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			results = append(results, r)
		}
		if o.repeat > 1 {
			fmt.Printf("repeat %d of %d:", rep+1, o.repeat)
		}
		printTable(o, results, floor)
		for _, r := range results {
			fmt.Println(jsonLine(o, r, floor))
		}
		reps, floors = append(reps, results), append(floors, floor)
	}
	if o.repeat > 1 {
		printRepeatSummary(summarizeRepeats(o.claims, reps, floors))
	}
	if o.memoryPairs > 0 {
		if err := measureMemory(ctx, b, o.memoryPairs); err != nil {
			return fmt.Errorf("measuring the plugin's memory: %w", err)
		}
	}
	for _, results := range reps {
		for _, r := range results {
			if r.prepare.errors+r.unprepare.errors > 0 {
				return fmt.Errorf("concurrency %d: %d prepare and %d unprepare errors", r.concurrency, r.prepare.errors, r.unprepare.errors)
			}
		}
	}
	return nil
}

// newClientset is the bench's API client, with the user agent and the
// client-side rate limit given.
func newClientset(kubeconfig, userAgent string, qps float32, burst int) (*kubernetes.Clientset, error) {
	cfg, err := kubeclient.Config(kubeconfig, userAgent)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = qps, burst
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return cs, nil
}

// resolveSocket returns path if it exists, else the only (or newest) dra*.sock
// in its directory: during a rolling update of the plugin the socket's name
// carries the pod UID.
func resolveSocket(path string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "dra*.sock"))
	if len(matches) == 0 {
		return "", fmt.Errorf("socket %s does not exist and %s holds no dra*.sock (is the plugin running, and are you root?)", path, filepath.Dir(path))
	}
	best, bestTime := "", time.Time{}
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			continue
		}
		if best == "" || fi.ModTime().After(bestTime) {
			best, bestTime = m, fi.ModTime()
		}
	}
	if best == "" {
		return "", fmt.Errorf("socket %s does not exist and none of %v can be read", path, matches)
	}
	if len(matches) > 1 {
		fmt.Fprintf(os.Stderr, "socket %s does not exist; using the newest of %v: %s\n", path, matches, best)
	}
	return best, nil
}

type poolDevice struct{ pool, device string }

// freeDevices lists the devices of the driver's ResourceSlices for node that
// no existing claim holds (exclusively).
func freeDevices(ctx context.Context, cs kubernetes.Interface, driver, node string) ([]poolDevice, error) {
	slices, err := cs.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
		FieldSelector: "spec.nodeName=" + node + ",spec.driver=" + driver,
	})
	if err != nil {
		return nil, fmt.Errorf("list ResourceSlices: %w", err)
	}
	// The newest generation of each pool only.
	gen := map[string]int64{}
	for _, s := range slices.Items {
		if s.Spec.Pool.Generation > gen[s.Spec.Pool.Name] {
			gen[s.Spec.Pool.Name] = s.Spec.Pool.Generation
		}
	}
	var all []poolDevice
	for _, s := range slices.Items {
		if s.Spec.Driver != driver || s.Spec.NodeName == nil || *s.Spec.NodeName != node || s.Spec.Pool.Generation != gen[s.Spec.Pool.Name] {
			continue
		}
		for _, d := range s.Spec.Devices {
			all = append(all, poolDevice{pool: s.Spec.Pool.Name, device: d.Name})
		}
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no devices of driver %s in the ResourceSlices of node %s (is the plugin running?)", driver, node)
	}

	claims, err := cs.ResourceV1().ResourceClaims(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ResourceClaims: %w", err)
	}
	used := map[poolDevice]bool{}
	for _, c := range claims.Items {
		if c.Status.Allocation == nil {
			continue
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			if r.Driver == driver && (r.AdminAccess == nil || !*r.AdminAccess) {
				used[poolDevice{pool: r.Pool, device: r.Device}] = true
			}
		}
	}
	var free []poolDevice
	for _, d := range all {
		if !used[d] {
			free = append(free, d)
		}
	}
	sort.Slice(free, func(i, j int) bool {
		if free[i].pool != free[j].pool {
			return free[i].pool < free[j].pool
		}
		return free[i].device < free[j].device
	})
	return free, nil
}

func measureGet(ctx context.Context, cs kubernetes.Interface, c *resourceapi.ResourceClaim, n int) (summary, error) {
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		if _, err := cs.ResourceV1().ResourceClaims(c.Namespace).Get(ctx, c.Name, metav1.GetOptions{}); err != nil {
			return summary{}, fmt.Errorf("get claim %s/%s: %w", c.Namespace, c.Name, err)
		}
		ds = append(ds, time.Since(t))
	}
	return summarize(ds), nil
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) (bool, error) {
	got, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	// A namespace left Terminating by a previous run: wait for it to go.
	for deadline := time.Now().Add(2 * time.Minute); err == nil && got.Status.Phase == corev1.NamespaceTerminating; {
		if time.Now().After(deadline) {
			return false, fmt.Errorf("namespace %s is still terminating", ns)
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		got, err = cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	}
	if err == nil {
		return false, nil
	}
	if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("get namespace %s: %w", ns, err)
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return true, nil
}

const benchLabel = "gpudra.io/bench"

// createClaims creates one claim per device and allocates it by writing its
// status, as the scheduler would. No status.reservedFor: the resource claim
// controller only deallocates a claim when its last consumer goes away, and
// the kubelet plugin helper only requires the allocation and a matching UID.
func createClaims(ctx context.Context, cs kubernetes.Interface, o *options, devices []poolDevice) ([]*resourceapi.ResourceClaim, error) {
	var out []*resourceapi.ResourceClaim
	for i, d := range devices {
		claim := &resourceapi.ResourceClaim{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: fmt.Sprintf("bench-%d-", i),
				Namespace:    o.namespace,
				Labels:       map[string]string{benchLabel: "true"},
			},
			Spec: resourceapi.ResourceClaimSpec{
				Devices: resourceapi.DeviceClaim{
					Requests: []resourceapi.DeviceRequest{{
						Name: "gpu",
						Exactly: &resourceapi.ExactDeviceRequest{
							DeviceClassName: o.driver,
							AllocationMode:  resourceapi.DeviceAllocationModeExactCount,
							Count:           1,
						},
					}},
				},
			},
		}
		c, err := cs.ResourceV1().ResourceClaims(o.namespace).Create(ctx, claim, metav1.CreateOptions{})
		if err != nil {
			return out, fmt.Errorf("create claim %d: %w", i, err)
		}
		out = append(out, c)
		c = c.DeepCopy()
		c.Status.Allocation = &resourceapi.AllocationResult{
			Devices: resourceapi.DeviceAllocationResult{
				Results: []resourceapi.DeviceRequestAllocationResult{shareOf(o, resourceapi.DeviceRequestAllocationResult{
					Request: "gpu",
					Driver:  o.driver,
					Pool:    d.pool,
					Device:  d.device,
				})},
			},
			NodeSelector: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchFields: []corev1.NodeSelectorRequirement{{
						Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{o.node},
					}},
				}},
			},
		}
		c, err = cs.ResourceV1().ResourceClaims(o.namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{})
		if err != nil {
			return out, fmt.Errorf("allocate claim %s/%s to device %s/%s: %w", o.namespace, out[len(out)-1].Name, d.pool, d.device, err)
		}
		out[len(out)-1] = c
	}
	// Make sure nothing took the allocations away.
	for _, c := range out {
		got, err := cs.ResourceV1().ResourceClaims(c.Namespace).Get(ctx, c.Name, metav1.GetOptions{})
		if err != nil {
			return out, fmt.Errorf("get claim %s/%s: %w", c.Namespace, c.Name, err)
		}
		if got.Status.Allocation == nil {
			return out, fmt.Errorf("claim %s/%s lost its allocation after it was set", c.Namespace, c.Name)
		}
	}
	return out, nil
}

func cleanup(ctx context.Context, cs kubernetes.Interface, client drapb.DRAPluginClient, o *options, claims []*resourceapi.ResourceClaim, createdNS bool) error {
	var errs []error
	for _, c := range claims {
		resp, err := client.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{
			Claims: []*drapb.Claim{{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}},
		})
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("unprepare %s/%s: %w", c.Namespace, c.Name, err))
		case resp.Claims[string(c.UID)] != nil && resp.Claims[string(c.UID)].Error != "":
			errs = append(errs, fmt.Errorf("unprepare %s/%s: %s", c.Namespace, c.Name, resp.Claims[string(c.UID)].Error))
		}
	}
	for _, c := range claims {
		err := cs.ResourceV1().ResourceClaims(c.Namespace).Delete(ctx, c.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete claim %s/%s: %w", c.Namespace, c.Name, err))
		}
	}
	if createdNS {
		err := cs.CoreV1().Namespaces().Delete(ctx, o.namespace, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", o.namespace, err))
		}
	}
	return errors.Join(errs...)
}

// shareOf makes r a share consuming --share-memory when it is set.
func shareOf(o *options, r resourceapi.DeviceRequestAllocationResult) resourceapi.DeviceRequestAllocationResult {
	if o.shareMemory == nil {
		return r
	}
	id := types.UID(uuid.NewString())
	r.ShareID = &id
	r.ConsumedCapacity = map[resourceapi.QualifiedName]resource.Quantity{"memory": o.shareMemory.DeepCopy()}
	return r
}

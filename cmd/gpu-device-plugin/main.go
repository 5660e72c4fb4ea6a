// Command gpu-device-plugin is the classic kubelet device plugin for NVIDIA
// GPUs: it advertises the node's GPUs as the extended resource nvidia.com/gpu
// (or a time-sliced, renamed resource) for pods that do not use DRA.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/deviceplugin"
	"github.com/gpudra/gpudra/pkg/dpconfig"
	"github.com/gpudra/gpudra/pkg/flagenv"
	"github.com/gpudra/gpudra/pkg/gfdlabels"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/kubeclient"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/sharing/mps"
)

type options struct {
	cfg         deviceplugin.Config
	node        node.Flags
	strategies  string
	nodeName    string
	driverWatch time.Duration
	mpsReplicas int
	failGT1     bool
	mps         mpsFlags
	kubeconfig  string
	// configMap and configDefault name the device-plugin config file:
	// a ConfigMap in the plugin's namespace of named configs (NVIDIA's
	// format), and the config of nodes without the selecting node label.
	configMap, configDefault string
	featureLabels            bool
}

// mpsFlags configure the MPS control daemons of --mps-replicas.
type mpsFlags struct {
	image, baseDir, namespace, priorityClass string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "gpu-device-plugin: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gpu-device-plugin", flag.ContinueOnError)
	klog.InitFlags(fs)
	o := &options{}
	f := flagenv.New(fs)
	o.node.AddFlags(f, node.Locate|node.CDI)
	f.String(&o.cfg.DevicePluginPath, "device-plugin-path", "DEVICE_PLUGIN_PATH", "/var/lib/kubelet/device-plugins", "kubelet device-plugin directory (kubelet.sock and the plugin's socket)")
	f.String(&o.cfg.SocketName, "socket-name", "SOCKET_NAME", deviceplugin.DefaultSocketName, "the plugin's socket file name in --device-plugin-path")
	f.String(&o.cfg.ResourceName, "resource-name", "RESOURCE_NAME", deviceplugin.DefaultResourceName, "extended resource name of the GPUs")
	f.String(&o.strategies, "device-list-strategy", "DEVICE_LIST_STRATEGY", deviceplugin.StrategyCDICRI, "comma-separated: envvar, volume-mounts, cdi-annotations, cdi-cri")
	f.String(&o.cfg.DeviceIDStrategy, "device-id-strategy", "DEVICE_ID_STRATEGY", deviceplugin.IDStrategyUUID, "how GPUs are named: uuid or index")
	f.Bool(&o.cfg.PassDeviceSpecs, "pass-device-specs", "PASS_DEVICE_SPECS", false, "add the GPU device nodes to Allocate responses (runtimes without an NVIDIA hook)")
	f.Int(&o.cfg.Replicas, "replicas", "REPLICAS", 1, "time-slicing: advertise every GPU this many times")
	f.String(&o.cfg.RenameResource, "rename-resource", "RENAME_RESOURCE", "", "with --replicas or --mps-replicas > 1: advertise the shared GPUs under this resource name, e.g. nvidia.com/gpu.shared")
	f.String(&o.cfg.MIGStrategy, "mig-strategy", "MIG_STRATEGY", deviceplugin.MIGStrategyNone, "how GPUs in MIG mode are advertised (NVIDIA's strategies): none (whole GPUs only), single (MIG devices as --resource-name; all GPUs one profile), mixed (MIG devices as nvidia.com/mig-<profile>)")
	f.Int(&o.mpsReplicas, "mps-replicas", "MPS_REPLICAS", 1, "MPS sharing: advertise every GPU of --resource-name this many times, each GPU served by one MPS control daemon with per-client limits of 100/N percent of the threads and 1/N of the memory (not with --replicas; not for MIG devices)")
	f.Bool(&o.failGT1, "fail-requests-greater-than-one", "FAIL_REQUESTS_GREATER_THAN_ONE", false, "with --replicas > 1: refuse a container request of more than one replica (always on with --mps-replicas)")
	f.String(&o.mps.image, "mps-daemon-image", "MPS_DAEMON_IMAGE", "", "image of the MPS control daemon pods (the driver image); needed with --mps-replicas")
	f.String(&o.mps.baseDir, "mps-base-dir", "MPS_BASE_DIR", "/var/lib/gpudra/mps", "host directory of the MPS daemons' pipe, log and shm directories; the plugin must see it at the same path")
	f.String(&o.mps.namespace, "namespace", "POD_NAMESPACE", "", "the plugin's namespace, in which it runs the MPS control daemon pods (set from the downward API)")
	f.String(&o.mps.priorityClass, "mps-priority-class-name", "MPS_PRIORITY_CLASS_NAME", "", "priority class of the MPS control daemon pods; empty: none")
	f.String(&o.kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig for the MPS daemon pods, the config ConfigMap and the feature labels; empty: in-cluster")
	f.String(&o.configMap, "config-map", "CONFIG_MAP_NAME", "", "ConfigMap in --namespace of named device-plugin configs in NVIDIA's format (version v1); the node label "+dpconfig.NodeLabel+" picks one, else --config-default; re-read on every change without a process restart; its settings replace the flags'. Empty: flags only")
	f.String(&o.configDefault, "config-default", "CONFIG_DEFAULT", "", "with --config-map: the config of nodes without the label "+dpconfig.NodeLabel)
	f.Bool(&o.featureLabels, "feature-labels", "FEATURE_LABELS", false, "publish GPU Feature Discovery compatible nvidia.com/ labels of the node (an NFD NodeFeature in --namespace when the cluster serves the API, else labels on the node), again after every config change")
	f.Duration(&o.driverWatch, "driver-watch-interval", "DRIVER_WATCH_INTERVAL", 30*time.Second, "how often to check whether the NVIDIA driver changed (the plugin then exits to be restarted with a new CDI spec); 0 turns it off")
	var healthFlags health.Flags
	healthFlags.AddFlags(f)
	f.String(&o.nodeName, "node-name", "NODE_NAME", "", "name of this node; seeds mock GPU UUIDs")
	f.Bind("v", "VERBOSITY")
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	for _, s := range strings.Split(o.strategies, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.cfg.DeviceListStrategies = append(o.cfg.DeviceListStrategies, s)
		}
	}
	o.cfg.CDIRoot = o.node.CDIRoot
	if o.mpsReplicas > 1 {
		if o.cfg.Replicas > 1 {
			return fmt.Errorf("--replicas=%d and --mps-replicas=%d: choose time-slicing or MPS", o.cfg.Replicas, o.mpsReplicas)
		}
		o.cfg.Sharing = deviceplugin.Sharing{Strategy: deviceplugin.SharingMPS,
			Resources: []deviceplugin.ReplicatedResource{{Name: o.cfg.ResourceName, Rename: o.cfg.RenameResource, Replicas: o.mpsReplicas}}}
		o.cfg.RenameResource = ""
	} else if o.mpsReplicas < 1 {
		return fmt.Errorf("--mps-replicas=%d: want at least 1", o.mpsReplicas)
	}
	o.cfg.Sharing.FailRequestsGreaterThanOne = o.failGT1
	if err := o.cfg.Validate(); err != nil {
		return err
	}
	if o.driverWatch < 0 {
		return fmt.Errorf("--driver-watch-interval=%s: want a duration such as 30s, or 0", o.driverWatch)
	}
	healthOpts, err := healthFlags.Options()
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	logger := klog.Background().WithName("gpu-device-plugin")
	ctx = klog.NewContext(ctx, logger)

	if o.configMap != "" || o.featureLabels {
		if o.nodeName == "" || o.mps.namespace == "" {
			return fmt.Errorf("--config-map and --feature-labels need --node-name and --namespace (NODE_NAME, POD_NAMESPACE)")
		}
	}

	n, err := node.Open(ctx, o.node, node.Options{Mode: node.Plugin, Seed: o.nodeName,
		// A config file may switch to a CDI strategy or to MIG devices:
		// have the edits at hand.
		Edits: o.configMap != "" || slicesUseCDI(o.cfg.DeviceListStrategies) || o.cfg.PassDeviceSpecs && o.cfg.MIGStrategy != deviceplugin.MIGStrategyNone})
	if err != nil {
		return err
	}
	defer n.Close()
	if n.Roots.DevRoot != "" {
		o.cfg.DevRoot = n.Roots.DevRoot
	} else if n.Roots.HostDriverRoot != "" {
		o.cfg.DevRoot = n.Roots.HostDriverRoot
	}
	r := &runner{o: o, n: n, base: deviceplugin.Inputs{Inventory: n.Inventory, NVML: n.NVML, Edits: n.Edits}}
	var client kubernetes.Interface
	if o.configMap != "" || o.featureLabels {
		restCfg, err := kubeclient.Config(o.kubeconfig, "gpu-device-plugin")
		if err != nil {
			return fmt.Errorf("the config ConfigMap and the feature labels need the API server: %w", err)
		}
		if client, err = kubernetes.NewForConfig(restCfg); err != nil {
			return err
		}
		r.client = client
		if o.featureLabels {
			dyn, err := dynamic.NewForConfig(restCfg)
			if err != nil {
				return err
			}
			r.pub = &gfdlabels.Publisher{Client: client, Dynamic: dyn, NodeName: o.nodeName, Namespace: o.mps.namespace}
		}
	}
	if healthFlags.Enabled {
		if r.mon, err = health.New(n.NVML, n.Inventory.UUIDs(), n.HealthOptions(healthOpts)); err != nil {
			return err
		}
		go r.mon.Run(ctx)
		go n.InjectEvents(ctx)
	}

	if o.configMap != "" {
		// Wait for the first config (or the first reason there is none)
		// before registering, so that a node with a config does not
		// register the flags' resources first.
		first := make(chan struct{})
		var once sync.Once
		firstDone := func() { once.Do(func() { close(first) }) }
		w := &dpconfig.Watcher{
			Client:      client,
			Namespace:   o.mps.namespace,
			ConfigMap:   o.configMap,
			NodeName:    o.nodeName,
			DefaultName: o.configDefault,
			OnChange: func(ctx context.Context, name string, c *dpconfig.Config) {
				defer firstDone()
				r.applyFile(ctx, name, c, cancel)
			},
			OnError: func(context.Context, error) { firstDone() },
		}
		go w.Run(ctx)
		select {
		case <-first:
		case <-time.After(firstConfigWait):
			logger.Info("No device plugin config yet: starting with the flags' config", "configMap", klog.KRef(o.mps.namespace, o.configMap), "waited", firstConfigWait)
		case <-ctx.Done():
		}
	}
	if !r.running() && ctx.Err() == nil {
		if err := r.apply(ctx, o.cfg, "flags"); err != nil {
			return err
		}
	}
	go n.WatchDriver(ctx, o.driverWatch, func(before, after string) {
		cancel(fmt.Errorf("%w (%q -> %q): stopping so that the restarted plugin writes a CDI spec of the new driver", errDriverChanged, before, after))
	})
	<-ctx.Done()
	cause := context.Cause(ctx)
	logger.Info("Shutting down", "reason", cause)
	r.stop()
	if errors.Is(cause, errDriverChanged) || errors.Is(cause, errNoPlugins) {
		return cause
	}
	return nil
}

// firstConfigWait bounds the wait for the config ConfigMap at start-up.
const firstConfigWait = 30 * time.Second

var errNoPlugins = errors.New("no device plugin runs")

// runner runs the node's device plugin set and replaces it when the
// config changes. Its methods are safe for concurrent use.
type runner struct {
	o    *options
	n    *node.Node
	base deviceplugin.Inputs
	pub  *gfdlabels.Publisher // nil: no feature labels
	mon  *health.Monitor      // nil: no health monitor

	mu      sync.Mutex
	cur     *deviceplugin.Set
	curCfg  deviceplugin.Config
	stopCur context.CancelFunc // ends the current set's goroutines
	// Built on first use, kept across sets.
	devEdits cdi.DeviceEdits
	mps      deviceplugin.MPSDaemons
	client   kubernetes.Interface // see kube
	// mpsResources are the resource names that the last MPS config
	// advertised (nil before one ran in this process).
	mpsResources []string
}

func (r *runner) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur != nil
}

// applyFile maps the selected config name of the ConfigMap onto the flags'
// config and applies it. A config the plugin cannot use is logged with
// its ConfigMap key and the running set stays; when no set runs after a
// failed switch, ctx is canceled with errNoPlugins.
func (r *runner) applyFile(ctx context.Context, name string, c *dpconfig.Config, cancel context.CancelCauseFunc) {
	logger := klog.FromContext(ctx).WithValues("configMap", klog.KRef(r.o.mps.namespace, r.o.configMap), "key", name)
	cfg, ignored, err := dpconfig.DevicePluginConfig(r.o.cfg, c)
	if len(ignored) > 0 {
		slices.Sort(ignored)
		logger.Info("Device plugin config settings that gpudra does not use: ignored", "settings", ignored)
	}
	if err != nil {
		logger.Error(err, "Device plugin config not usable; keeping the current one")
		return
	}
	r.mu.Lock()
	same := r.cur != nil && reflect.DeepEqual(cfg, r.curCfg)
	r.mu.Unlock()
	if same {
		logger.V(2).Info("Device plugin config selected; the plugins already run with it")
		return
	}
	source := fmt.Sprintf("ConfigMap %s/%s key %q", r.o.mps.namespace, r.o.configMap, name)
	if err := r.apply(ctx, cfg, source); err != nil {
		logger.Error(err, "Device plugin config not usable; keeping the current one")
		if !r.running() {
			cancel(fmt.Errorf("%w: %w", errNoPlugins, err))
		}
		return
	}
	logger.Info("Device plugins restarted with the config")
}

// apply builds the plugin set of cfg and replaces the running one with
// it: the new set is built first (an error keeps the running set), then
// the running set stops (its sockets go: the kubelet counts its devices
// unavailable until the new registration; running containers are not
// touched) and the new one starts and registers. When the new set does
// not start, the previous config is built and started again and the error
// returned; r.running() tells whether a set runs after an error. After a
// start the feature labels are published (in the background, retried).
func (r *runner) apply(ctx context.Context, cfg deviceplugin.Config, source string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	set, err := r.build(ctx, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	prev, prevCfg := r.cur, r.curCfg
	if prev != nil {
		r.stopCur()
		prev.Stop()
		r.cur = nil
	}
	err = r.start(ctx, set, cfg)
	if err == nil || prev == nil {
		if err != nil {
			return fmt.Errorf("%s: %w", source, err)
		}
		return nil
	}
	err = fmt.Errorf("%s: %w", source, err)
	again, err2 := r.build(ctx, prevCfg)
	if err2 == nil {
		err2 = r.start(ctx, again, prevCfg)
	}
	if err2 != nil {
		return errors.Join(err, fmt.Errorf("restoring the previous config: %w", err2))
	}
	return err
}

// build is deviceplugin.NewSet with the inputs cfg needs.
func (r *runner) build(ctx context.Context, cfg deviceplugin.Config) (*deviceplugin.Set, error) {
	in := r.base
	var err error
	if in.Edits != nil && cfg.MIGStrategy != "" && cfg.MIGStrategy != deviceplugin.MIGStrategyNone {
		if r.devEdits == nil {
			if r.devEdits, err = r.n.DeviceEdits(false); err != nil {
				return nil, err
			}
		}
		in.DeviceEdits = r.devEdits
	}
	if cfg.Sharing.Strategy == deviceplugin.SharingMPS {
		if r.mps == nil {
			if r.mps, err = r.newMPSDaemons(); err != nil {
				return nil, err
			}
		}
		in.MPS = r.mps
	}
	return deviceplugin.NewSet(ctx, cfg, in)
}

// start starts set and its health watch and label publishing; r.mu held.
func (r *runner) start(ctx context.Context, set *deviceplugin.Set, cfg deviceplugin.Config) error {
	var labels map[string]string
	if r.pub != nil {
		var err error
		if labels, err = gfdlabels.Compute(r.base.Inventory, labelSettings(cfg)); err != nil {
			return fmt.Errorf("computing the GPU feature labels: %w", err)
		}
	}
	if err := set.Start(ctx); err != nil {
		return err
	}
	r.retainMPSDaemons(ctx, cfg)
	setCtx, stop := context.WithCancel(ctx)
	r.cur, r.curCfg, r.stopCur = set, cfg, stop
	if r.mon != nil {
		go set.WatchHealth(setCtx, r.mon)
	}
	if r.pub != nil {
		go r.pub.PublishUntilDone(setCtx, labels)
	}
	return nil
}

// retainMPSDaemons removes the MPS daemons that cfg does not use (all of
// them without MPS sharing), those of an earlier config or of an earlier
// run of the plugin included: the daemons cfg uses were all started by the
// set's Start, so none is being ensured now. Without the MPS settings (no
// daemon image: the chart gives one with MPS or a config ConfigMap) the
// plugin never ran daemons and has nothing to remove. An error is logged:
// the daemons left are idle and are tried again at the next start.
func (r *runner) retainMPSDaemons(ctx context.Context, cfg deviceplugin.Config) {
	logger := klog.FromContext(ctx)
	if r.mps == nil {
		if r.o.mps.image == "" {
			return
		}
		var err error
		if r.mps, err = r.newMPSDaemons(); err != nil {
			logger.Error(err, "Cannot check for MPS control daemons left by an earlier config")
			return
		}
	}
	if cfg.Sharing.Strategy == deviceplugin.SharingMPS {
		r.mpsResources = nil
		for _, rr := range cfg.Sharing.Resources {
			name := rr.Name
			if rr.Rename != "" {
				name = rr.Rename
			}
			r.mpsResources = append(r.mpsResources, name)
		}
		if err := r.mps.Retain(ctx, r.base.Inventory.Devices); err != nil {
			logger.Error(err, "Removing the MPS control daemons the config no longer uses")
		}
		return
	}
	// A running container may still be a client of a daemon: those stay
	// until a start finds no pod on the node holding such a replica.
	users, err := r.mpsClients(ctx)
	switch {
	case err != nil:
		logger.Error(err, "Cannot tell whether pods still use the MPS control daemons; keeping them")
		return
	case len(users) > 0:
		logger.Info("Keeping the MPS control daemons of the earlier config while pods use its replicas; they go at a later start without such pods", "pods", users)
		return
	}
	if err := r.mps.Retain(ctx, nil); err != nil {
		logger.Error(err, "Removing the MPS control daemons the config no longer uses")
	}
}

// mpsClients lists the pods of this node that are not terminated and hold
// a replica of the last MPS config's resources; after a restart of the
// plugin, which does not know that config, any nvidia.com/ resource counts.
func (r *runner) mpsClients(ctx context.Context) ([]string, error) {
	client, err := r.kube()
	if err != nil {
		return nil, err
	}
	pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + r.o.nodeName})
	if err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", r.o.nodeName, err)
	}
	uses := func(name corev1.ResourceName) bool {
		if r.mpsResources == nil {
			return strings.HasPrefix(string(name), "nvidia.com/")
		}
		return slices.Contains(r.mpsResources, string(name))
	}
	var out []string
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, ctr := range p.Spec.Containers {
			for name := range ctr.Resources.Limits {
				if uses(name) && !slices.Contains(out, p.Namespace+"/"+p.Name) {
					out = append(out, p.Namespace+"/"+p.Name)
				}
			}
		}
	}
	return out, nil
}

// stop stops the running set.
func (r *runner) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil {
		r.stopCur()
		r.cur.Stop()
		r.cur = nil
	}
}

// labelSettings are the GFD label settings of cfg: the sharing of the
// full GPUs' resource (cfg.ResourceName) gives replicas and strategy.
func labelSettings(cfg deviceplugin.Config) gfdlabels.Settings {
	s := gfdlabels.Settings{MIGStrategy: cfg.MIGStrategy, Replicas: cfg.Replicas, Renamed: cfg.RenameResource != ""}
	name := cfg.ResourceName
	if name == "" {
		name = deviceplugin.DefaultResourceName
	}
	for _, rr := range cfg.Sharing.Resources {
		if rr.Name == name {
			s.Replicas, s.Renamed = rr.Replicas, rr.Rename != ""
		}
	}
	if s.Replicas > 1 {
		s.SharingStrategy = gfdlabels.SharingTimeSlicing
		if cfg.Sharing.Strategy == deviceplugin.SharingMPS {
			s.SharingStrategy = gfdlabels.SharingMPS
		}
	}
	return s
}

var errDriverChanged = errors.New("the NVIDIA driver changed")

// kube returns the plugin's API client (the one of the config watch and the
// feature labels when those are on), made on first use.
func (r *runner) kube() (kubernetes.Interface, error) {
	if r.client == nil {
		cfg, err := kubeclient.Config(r.o.kubeconfig, "gpu-device-plugin")
		if err != nil {
			return nil, err
		}
		if r.client, err = kubernetes.NewForConfig(cfg); err != nil {
			return nil, err
		}
	}
	return r.client, nil
}

// newMPSDaemons returns the MPS daemon manager of --mps-replicas: the DRA
// plugin's (package mps), with the daemon pods in the plugin's namespace.
func (r *runner) newMPSDaemons() (deviceplugin.MPSDaemons, error) {
	client, err := r.kube()
	if err != nil {
		return nil, fmt.Errorf("MPS sharing needs the API server (daemon pods): %w", err)
	}
	o, n := r.o, r.n
	return deviceplugin.NewMPSDaemons(mps.Options{
		Client:            client,
		Namespace:         o.mps.namespace,
		NodeName:          o.nodeName,
		Image:             o.mps.image,
		BaseDir:           o.mps.baseDir,
		HostDriverRoot:    n.Roots.HostDriver(),
		Mock:              n.Backend.Mock(),
		PriorityClassName: o.mps.priorityClass,
	})
}

func slicesUseCDI(strategies []string) bool {
	for _, s := range strategies {
		if s == deviceplugin.StrategyCDIAnnotations || s == deviceplugin.StrategyCDICRI {
			return true
		}
	}
	return len(strategies) == 0 // the default is cdi-cri
}

// Command gpu-kubelet-plugin is the DRA kubelet plugin for NVIDIA GPUs. It
// runs on every GPU node (a DaemonSet), publishes the node's GPUs as
// ResourceSlices and prepares the ResourceClaims that pods on the node use.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/flagenv"
	"github.com/gpudra/gpudra/pkg/gfdlabels"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/kubeclient"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/plugin"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

type options struct {
	cfg    plugin.Config
	podUID string
	// consumableCapacity is --consumable-capacity, parsed into cfg.
	consumableCapacity string
	kubeconfig         string
	kubeAPIQPS         float64
	kubeAPIBurst       int
	featureLabels      bool
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "gpu-kubelet-plugin: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("gpu-kubelet-plugin", flag.ContinueOnError)
	klog.InitFlags(fs)
	o := &options{}
	f := flagenv.New(fs)
	f.String(&o.cfg.NodeName, "node-name", "NODE_NAME", "", "name of this node; the pool of its devices")
	f.String(&o.cfg.DriverName, "driver-name", "DRIVER_NAME", "gpu.nvidia.com", "DRA driver name")
	o.cfg.Node.AddFlags(f, node.Locate|node.CDI|node.HookInstall)
	f.String(&o.cfg.Kubelet.RegistrarDir, "kubelet-registrar-directory-path", "KUBELET_REGISTRAR_DIRECTORY_PATH", "/var/lib/kubelet/plugins_registry", "kubelet plugin registration directory")
	f.String(&o.cfg.Kubelet.PluginsDir, "kubelet-plugins-directory-path", "KUBELET_PLUGINS_DIRECTORY_PATH", "/var/lib/kubelet/plugins", "kubelet plugins directory; the plugin keeps its socket and checkpoint in <this>/<driver name>")
	f.String(&o.podUID, "pod-uid", "POD_UID", "", "UID of the plugin's pod; enables seamless rolling updates (set from the downward API)")
	f.String(&o.cfg.Metrics.Address, "metrics-address", "METRICS_ADDRESS", ":8080", "address of the /metrics, /healthz and /readyz endpoints; empty turns them off")
	f.String(&o.kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig file; empty: in-cluster configuration")
	f.Bool(&o.cfg.Metrics.Profiling, "profiling", "PROFILING", false, "also serve Go's /debug/pprof/ on --metrics-address")
	f.Float64(&o.kubeAPIQPS, "kube-api-qps", "KUBE_API_QPS", 200, "QPS of the API client; the kubelet plugin helper GETs every claim before a prepare, so this bounds prepares per second")
	f.Int(&o.kubeAPIBurst, "kube-api-burst", "KUBE_API_BURST", 400, "burst of the API client")
	f.Duration(&o.cfg.Health.ResendInterval, "health-resend-interval", "HEALTH_RESEND_INTERVAL", 15*time.Second, "how often device health is re-sent to the kubelet (must stay below its 30s timeout)")
	f.Duration(&o.cfg.StaleClaims.GracePeriod, "stale-claim-grace-period", "STALE_CLAIM_GRACE_PERIOD", 5*time.Minute, "how long a claim stays prepared before the periodic check unprepares it if the API server no longer has it for this node (deleted, or deallocated); 0 turns the check off (a prepare that needs a device of such a claim still unprepares it)")
	f.Bool(&o.cfg.DeviceMetadata, "device-metadata", "DEVICE_METADATA", false, "write the device metadata files of KEP-5304 (the prepared devices' attributes, mounted into the containers under /var/run/kubernetes.io/dra-device-attributes/ by CDI specs in --cdi-root)")
	f.Bool(&o.cfg.DynamicMIG.Enabled, "dynamic-mig", "DYNAMIC_MIG", false, "partition MIG-capable GPUs on demand (KEP-4815 partitionable devices): publish each with a counter set, one device per MIG profile and placement and, where it can leave MIG mode without a reset, itself whole; a prepare creates the allocated MIG device and an unprepare destroys it. GPUs holding MIG devices made outside the driver are left alone (published as static MIG devices)")
	f.String(&o.consumableCapacity, "consumable-capacity", "CONSUMABLE_CAPACITY", "disabled", "share whole GPUs between claims (DRA consumable capacity): disabled; memory (claims request memory, default the whole GPU); unlimited (memory, default 0); or a share count N (memory default 0, plus N compute shares, default 1). With MPS on, each share's memory and compute limits are enforced through the GPU's MPS daemon")
	f.Duration(&o.cfg.DriverWatchInterval, "driver-watch-interval", "DRIVER_WATCH_INTERVAL", 30*time.Second, "how often to check whether the NVIDIA driver changed (the plugin then restarts to use it); 0 turns it off")
	var healthFlags health.Flags
	healthFlags.AddFlags(f)
	f.String(&o.cfg.Health.TaintEffect, "health-taint-effect", "HEALTH_TAINT_EFFECT", "NoSchedule", "effect of the taint on unhealthy GPUs: NoSchedule, or NoExecute to also evict the pods using them (unmonitored GPUs always get NoSchedule)")
	f.String(&o.cfg.MPS.DaemonImage, "mps-daemon-image", "MPS_DAEMON_IMAGE", "", "image of the per-claim MPS control daemon pods (the driver image); empty turns MPS sharing off")
	f.String(&o.cfg.MPS.BaseDir, "mps-base-dir", "MPS_BASE_DIR", "/var/lib/gpudra/mps", "host directory of the claims' MPS pipe, log and shm directories; the plugin must see it at the same path")
	f.String(&o.cfg.MPS.Namespace, "namespace", "POD_NAMESPACE", "", "the plugin's namespace, in which it runs the MPS control daemon pods (set from the downward API)")
	f.String(&o.cfg.MPS.PriorityClassName, "mps-priority-class-name", "MPS_PRIORITY_CLASS_NAME", "", "priority class of the MPS control daemon pods; empty: none")
	f.Bool(&o.featureLabels, "feature-labels", "FEATURE_LABELS", true, "publish GPU Feature Discovery compatible nvidia.com/ labels of the node (an NFD NodeFeature when the cluster serves the API, else labels on the node); MIG devices are labeled as by the mixed strategy")
	f.Bind("v", "VERBOSITY")
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if d := o.cfg.Health.ResendInterval; d <= 0 || d >= 30*time.Second {
		return fmt.Errorf("--health-resend-interval=%s: want a duration between 0 and 30s", d)
	}
	if o.cfg.StaleClaims.GracePeriod < 0 {
		return fmt.Errorf("--stale-claim-grace-period=%s: want a duration such as 5m, or 0", o.cfg.StaleClaims.GracePeriod)
	}
	if o.cfg.DriverWatchInterval < 0 {
		return fmt.Errorf("--driver-watch-interval=%s: want a duration such as 30s, or 0", o.cfg.DriverWatchInterval)
	}
	consumable, err := resourceslice.ParseConsumableCapacity(o.consumableCapacity)
	if err != nil {
		return fmt.Errorf("--consumable-capacity: %w", err)
	}
	o.cfg.ConsumableCapacity = consumable
	o.cfg.Kubelet.PodUID = types.UID(o.podUID)
	healthOpts, err := healthFlags.Options()
	if err != nil {
		return err
	}
	o.cfg.Health.Enabled, o.cfg.Health.Monitor = healthFlags.Enabled, healthOpts

	client, err := newClient(o)
	if err != nil {
		return err
	}
	o.cfg.KubeClient = client

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := klog.Background().WithName("gpu-kubelet-plugin")
	ctx = klog.NewContext(ctx, logger)

	p, err := plugin.Start(ctx, o.cfg)
	if err != nil {
		return err
	}
	if o.featureLabels {
		if err := publishFeatureLabels(ctx, o, client, p.Inventory()); err != nil {
			p.Stop()
			return err
		}
	}
	select {
	case <-ctx.Done():
		logger.Info("Shutting down", "reason", context.Cause(ctx))
		p.Stop()
		return nil
	case <-p.Done():
		p.Stop()
		return fmt.Errorf("plugin stopped: %w", p.Err())
	}
}

// publishFeatureLabels computes the node's GFD labels and publishes them in
// the background (retrying): DRA exposes MIG devices one by one, which GFD's
// mixed strategy describes; no sharing (claims choose their own).
func publishFeatureLabels(ctx context.Context, o *options, client kubernetes.Interface, inv *inventory.Inventory) error {
	labels, err := gfdlabels.Compute(inv, gfdlabels.Settings{MIGStrategy: gfdlabels.MIGStrategyMixed})
	if err != nil {
		return fmt.Errorf("computing the GPU feature labels: %w", err)
	}
	cfg, err := kubeclient.Config(o.kubeconfig, "gpu-kubelet-plugin")
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	pub := &gfdlabels.Publisher{Client: client, Dynamic: dyn, NodeName: o.cfg.NodeName, Namespace: o.cfg.MPS.Namespace}
	go pub.PublishUntilDone(ctx, labels)
	return nil
}

func newClient(o *options) (kubernetes.Interface, error) {
	// The claim GET before every prepare is on the pod start path: protobuf
	// (kubeclient.Config), and a rate limit that never throttles it.
	cfg, err := kubeclient.Config(o.kubeconfig, "gpu-kubelet-plugin")
	if err != nil {
		return nil, err
	}
	cfg.QPS = float32(o.kubeAPIQPS)
	cfg.Burst = o.kubeAPIBurst
	return kubernetes.NewForConfig(cfg)
}

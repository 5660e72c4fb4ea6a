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
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/deviceplugin"
	"github.com/gpudra/gpudra/pkg/flagenv"
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
	f.String(&o.kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig for the MPS daemon pods; empty: in-cluster")
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

	n, err := node.Open(ctx, o.node, node.Options{Mode: node.Plugin, Seed: o.nodeName,
		Edits: slicesUseCDI(o.cfg.DeviceListStrategies) || o.cfg.PassDeviceSpecs && o.cfg.MIGStrategy != deviceplugin.MIGStrategyNone})
	if err != nil {
		return err
	}
	defer n.Close()
	if n.Roots.DevRoot != "" {
		o.cfg.DevRoot = n.Roots.DevRoot
	} else if n.Roots.HostDriverRoot != "" {
		o.cfg.DevRoot = n.Roots.HostDriverRoot
	}
	inv, lib, edits := n.Inventory, n.NVML, n.Edits
	in := deviceplugin.Inputs{Inventory: inv, NVML: lib, Edits: edits}
	if edits != nil && o.cfg.MIGStrategy != deviceplugin.MIGStrategyNone {
		if in.DeviceEdits, err = n.DeviceEdits(false); err != nil {
			return err
		}
	}
	if o.cfg.Sharing.Strategy == deviceplugin.SharingMPS {
		if in.MPS, err = newMPSDaemons(o, n); err != nil {
			return err
		}
	}
	p, err := deviceplugin.NewSet(ctx, o.cfg, in)
	if err != nil {
		return err
	}
	var mon *health.Monitor
	if healthFlags.Enabled {
		if mon, err = health.New(lib, inv.UUIDs(), n.HealthOptions(healthOpts)); err != nil {
			return err
		}
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	if mon != nil {
		go mon.Run(ctx)
		go p.WatchHealth(ctx, mon)
		go n.InjectEvents(ctx)
	}
	go n.WatchDriver(ctx, o.driverWatch, func(before, after string) {
		cancel(fmt.Errorf("%w (%q -> %q): stopping so that the restarted plugin writes a CDI spec of the new driver", errDriverChanged, before, after))
	})
	<-ctx.Done()
	cause := context.Cause(ctx)
	logger.Info("Shutting down", "reason", cause)
	p.Stop()
	if errors.Is(cause, errDriverChanged) {
		return cause
	}
	return nil
}

var errDriverChanged = errors.New("the NVIDIA driver changed")

// newMPSDaemons returns the MPS daemon manager of --mps-replicas: the DRA
// plugin's (package mps), with the daemon pods in the plugin's namespace.
func newMPSDaemons(o *options, n *node.Node) (deviceplugin.MPSDaemons, error) {
	cfg, err := kubeclient.Config(o.kubeconfig, "gpu-device-plugin")
	if err != nil {
		return nil, fmt.Errorf("MPS sharing needs the API server (daemon pods): %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
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

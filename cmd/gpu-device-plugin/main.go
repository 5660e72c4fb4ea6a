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

	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/deviceplugin"
	"github.com/gpudra/gpudra/pkg/flagenv"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/node"
)

type options struct {
	cfg         deviceplugin.Config
	node        node.Flags
	strategies  string
	nodeName    string
	driverWatch time.Duration
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
	f.String(&o.cfg.RenameResource, "rename-resource", "RENAME_RESOURCE", "", "with --replicas > 1: advertise the shared GPUs under this resource name, e.g. nvidia.com/gpu.shared")
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

	n, err := node.Open(ctx, o.node, node.Options{Mode: node.Plugin, Seed: o.nodeName, Edits: slicesUseCDI(o.cfg.DeviceListStrategies)})
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
	p, err := deviceplugin.New(ctx, o.cfg, inv, lib, edits)
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

func slicesUseCDI(strategies []string) bool {
	for _, s := range strategies {
		if s == deviceplugin.StrategyCDIAnnotations || s == deviceplugin.StrategyCDICRI {
			return true
		}
	}
	return len(strategies) == 0 // the default is cdi-cri
}

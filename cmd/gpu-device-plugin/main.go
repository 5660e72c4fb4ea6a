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
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/deviceplugin"
	"github.com/gpudra/gpudra/pkg/driverwatch"
	"github.com/gpudra/gpudra/pkg/flagenv"
	"github.com/gpudra/gpudra/pkg/health"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockhost"
)

type options struct {
	cfg            deviceplugin.Config
	nvmlBackend    string
	driverRoot     string
	hostDriverRoot string
	mockHostRoot   string
	devRoot        string
	hookPath       string
	strategies     string
	nodeName       string
	driverWatch    string
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
	f.String(&o.nvmlBackend, "nvml", "NVML_BACKEND", inventory.BackendReal,
		fmt.Sprintf("NVML backend: %q for the NVIDIA driver, or a mock machine for nodes without GPUs: mock:%v", inventory.BackendReal, inventory.MockMachines()))
	f.String(&o.driverRoot, "driver-root", "NVIDIA_DRIVER_ROOT", "/", "root of the NVIDIA driver installation as this process sees it")
	f.String(&o.hostDriverRoot, "host-driver-root", "HOST_DRIVER_ROOT", "", "the driver root as the host sees it; empty: same as --driver-root")
	f.String(&o.mockHostRoot, "mock-host-root", "MOCK_HOST_ROOT", "", "with a mock NVML backend: directory, at the same path on the host, where mock driver files and device nodes are laid out and which is then the driver root")
	f.String(&o.devRoot, "dev-root", "NVIDIA_DEV_ROOT", "", "root under which the driver's device nodes are; empty: automatic")
	f.String(&o.hookPath, "nvidia-cdi-hook-path", "NVIDIA_CDI_HOOK_PATH", cdi.DefaultHookPath, "host path of nvidia-cdi-hook, named in the CDI spec")
	f.String(&o.cfg.CDIRoot, "cdi-root", "CDI_ROOT", "/var/run/cdi", "CDI spec directory read by the container runtime")
	f.String(&o.cfg.DevicePluginPath, "device-plugin-path", "DEVICE_PLUGIN_PATH", "/var/lib/kubelet/device-plugins", "kubelet device-plugin directory (kubelet.sock and the plugin's socket)")
	f.String(&o.cfg.SocketName, "socket-name", "SOCKET_NAME", deviceplugin.DefaultSocketName, "the plugin's socket file name in --device-plugin-path")
	f.String(&o.cfg.ResourceName, "resource-name", "RESOURCE_NAME", deviceplugin.DefaultResourceName, "extended resource name of the GPUs")
	f.String(&o.strategies, "device-list-strategy", "DEVICE_LIST_STRATEGY", deviceplugin.StrategyCDICRI, "comma-separated: envvar, volume-mounts, cdi-annotations, cdi-cri")
	f.String(&o.cfg.DeviceIDStrategy, "device-id-strategy", "DEVICE_ID_STRATEGY", deviceplugin.IDStrategyUUID, "how GPUs are named: uuid or index")
	fs.BoolVar(&o.cfg.PassDeviceSpecs, "pass-device-specs", false, "add the GPU device nodes to Allocate responses (runtimes without an NVIDIA hook)")
	f.Bind("pass-device-specs", "PASS_DEVICE_SPECS")
	f.Int(&o.cfg.Replicas, "replicas", "REPLICAS", 1, "time-slicing: advertise every GPU this many times")
	f.String(&o.cfg.RenameResource, "rename-resource", "RENAME_RESOURCE", "", "with --replicas > 1: advertise the shared GPUs under this resource name, e.g. nvidia.com/gpu.shared")
	f.String(&o.driverWatch, "driver-watch-interval", "DRIVER_WATCH_INTERVAL", "30s", "how often to check whether the NVIDIA driver changed (the plugin then exits to be restarted with a new CDI spec); 0 turns it off")
	var healthFlags health.Flags
	healthFlags.AddFlags(fs, f)
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
	if err := o.cfg.Validate(); err != nil {
		return err
	}
	driverWatch, err := time.ParseDuration(o.driverWatch)
	if err != nil || driverWatch < 0 {
		return fmt.Errorf("--driver-watch-interval=%q: want a duration such as 30s, or 0", o.driverWatch)
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

	lib, err := inventory.Open(o.nvmlBackend, o.driverRoot, o.nodeName)
	if err != nil {
		return err
	}
	defer func() { _ = lib.Shutdown() }()
	inv, err := inventory.Discover(lib)
	if err != nil {
		return fmt.Errorf("discovering GPUs: %w", err)
	}
	if o.mockHostRoot != "" {
		if err := mockhost.CreateForBackend(o.nvmlBackend, o.mockHostRoot, inv); err != nil {
			return err
		}
		o.driverRoot, o.hostDriverRoot, o.devRoot = o.mockHostRoot, o.mockHostRoot, o.mockHostRoot
	}
	logger.Info("Discovered GPUs", "count", len(inv.Devices), "driverVersion", inv.DriverVersion, "backend", o.nvmlBackend)
	if o.devRoot != "" {
		o.cfg.DevRoot = o.devRoot
	} else if o.hostDriverRoot != "" {
		o.cfg.DevRoot = o.hostDriverRoot
	}

	var edits *cdi.Edits
	if slicesUseCDI(o.cfg.DeviceListStrategies) {
		edits, err = cdi.NewEdits(ctx, cdi.EditsOptions{NVML: lib, DriverRoot: o.driverRoot, HostDriverRoot: o.hostDriverRoot, DevRoot: o.devRoot, HookPath: o.hookPath}, inv.UUIDs())
		if err != nil {
			return err
		}
	}
	p, err := deviceplugin.New(ctx, o.cfg, inv, lib, edits)
	if err != nil {
		return err
	}
	var mon *health.Monitor
	if healthFlags.Enabled {
		// Before anything uses lib concurrently: a mock machine gets its
		// event functions here.
		if mon, err = health.New(lib, inv.UUIDs(), healthOpts); err != nil {
			return err
		}
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	if mon != nil {
		go mon.Run(ctx)
		go p.WatchHealth(ctx, mon)
		if ev := mon.Mock(); ev != nil && o.mockHostRoot != "" {
			go ev.WatchFile(ctx, filepath.Join(o.mockHostRoot, inventory.MockEventsFile), inventory.MockEventsPoll)
		}
	}
	if driverWatch > 0 {
		go driverwatch.Watch(ctx, o.driverRoot, driverwatch.DefaultProcRoot, driverWatch, func(before, after string) {
			cancel(fmt.Errorf("%w (%q -> %q): stopping so that the restarted plugin writes a CDI spec of the new driver", errDriverChanged, before, after))
		})
	}
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

// Package deviceplugin is a kubelet device plugin (API v1beta1) for NVIDIA
// GPUs: the classic "nvidia.com/gpu" extended resource, for clusters or pods
// that do not use Dynamic Resource Allocation.
//
// A Plugin serves the DevicePlugin gRPC service on a unix socket in the
// kubelet's device-plugin directory, registers with the kubelet there, and
// registers again when the kubelet restarts (kubelet.sock re-created) or its
// own socket disappears.
//
// Allocate tells the container runtime which GPUs to inject through one or
// several device-list strategies (an environment variable, volume mounts,
// CDI annotations or CDI devices in the CRI). For the CDI strategies the
// plugin writes one CDI spec of kind CDIKind naming every GPU by UUID and by
// index, plus "all".
//
// With Replicas > 1 (time-slicing) every GPU is advertised Replicas times as
// "<id>::<n>"; Allocate maps replicas back to their GPU.
package deviceplugin

import (
	"fmt"
	"slices"
	"strings"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Device-list strategies: how Allocate names the GPUs to the runtime.
const (
	// StrategyEnvvar sets NVIDIA_VISIBLE_DEVICES=<id>,<id>...
	StrategyEnvvar = "envvar"
	// StrategyVolumeMounts mounts /dev/null at
	// /var/run/nvidia-container-devices/<id> for every GPU.
	StrategyVolumeMounts = "volume-mounts"
	// StrategyCDIAnnotations sets the cdi.k8s.io/ container annotation.
	StrategyCDIAnnotations = "cdi-annotations"
	// StrategyCDICRI fills ContainerAllocateResponse.CdiDevices.
	StrategyCDICRI = "cdi-cri"
)

// Device-ID strategies: how GPUs are named to the kubelet and the runtime.
const (
	IDStrategyUUID  = "uuid"
	IDStrategyIndex = "index"
)

const (
	// CDIVendor and CDIClass form the CDI kind of the plugin's spec. It is
	// its own kind: nvidia.com/gpu belongs to nvidia-ctk's generated specs.
	CDIVendor = "k8s.device-plugin.nvidia.com"
	CDIClass  = "gpu"
	CDIKind   = CDIVendor + "/" + CDIClass

	// CDIAnnotationPlugin is the plugin name in cdi.k8s.io/ annotation keys.
	CDIAnnotationPlugin = "gpudra-device-plugin"

	// VisibleDevicesEnv is read by the NVIDIA container runtime (hook).
	VisibleDevicesEnv = "NVIDIA_VISIBLE_DEVICES"
	// VolumeMountsRoot is where the volume-mounts strategy mounts one file
	// per GPU.
	VolumeMountsRoot = "/var/run/nvidia-container-devices"

	// DefaultResourceName is the extended resource of full GPUs.
	DefaultResourceName = "nvidia.com/gpu"
	// DefaultSocketName is the plugin's socket in the device-plugin dir.
	DefaultSocketName = "gpudra-nvidia-gpu.sock"

	// replicaSep separates a GPU ID from its replica number.
	replicaSep = "::"
)

// Config configures a Plugin. The zero value of every field but the
// inventory means its default.
type Config struct {
	// ResourceName is the extended resource advertised, "nvidia.com/gpu".
	ResourceName string
	// RenameResource, with Replicas > 1, replaces ResourceName, e.g.
	// "nvidia.com/gpu.shared", so that shared GPUs are requested explicitly.
	RenameResource string
	// DevicePluginPath is the kubelet's device-plugin directory, holding
	// kubelet.sock and the plugin's socket.
	DevicePluginPath string
	// SocketName is the plugin's socket file name in DevicePluginPath.
	SocketName string
	// DeviceListStrategies: one or more of the Strategy* constants;
	// default StrategyCDICRI.
	DeviceListStrategies []string
	// DeviceIDStrategy: IDStrategyUUID (default) or IDStrategyIndex.
	DeviceIDStrategy string
	// PassDeviceSpecs adds the GPU and control device nodes to Allocate
	// responses, for runtimes that inject nothing themselves.
	PassDeviceSpecs bool
	// DevRoot is the host directory under which dev/nvidia* are, for
	// PassDeviceSpecs; default "/".
	DevRoot string
	// Replicas is how many times every GPU is advertised (time-slicing);
	// default 1.
	Replicas int
	// CDIRoot is the directory of the plugin's CDI spec, for the CDI
	// strategies; default /var/run/cdi.
	CDIRoot string
}

// Validate checks the configuration without building a plugin.
func (c Config) Validate() error { return c.setDefaults() }

func (c *Config) setDefaults() error {
	if c.ResourceName == "" {
		c.ResourceName = DefaultResourceName
	}
	if c.DevicePluginPath == "" {
		c.DevicePluginPath = pluginapi.DevicePluginPath
	}
	if c.SocketName == "" {
		c.SocketName = DefaultSocketName
	}
	if strings.ContainsRune(c.SocketName, '/') || c.SocketName == pluginapi.KubeletSocket || c.SocketName == "kubelet.sock" {
		return fmt.Errorf("socket name %q: want a plain file name other than kubelet.sock", c.SocketName)
	}
	if len(c.DeviceListStrategies) == 0 {
		c.DeviceListStrategies = []string{StrategyCDICRI}
	}
	seen := map[string]bool{}
	for _, s := range c.DeviceListStrategies {
		switch s {
		case StrategyEnvvar, StrategyVolumeMounts, StrategyCDIAnnotations, StrategyCDICRI:
		default:
			return fmt.Errorf("unknown device-list strategy %q: want one or more of %s, %s, %s, %s",
				s, StrategyEnvvar, StrategyVolumeMounts, StrategyCDIAnnotations, StrategyCDICRI)
		}
		if seen[s] {
			return fmt.Errorf("device-list strategy %q given twice", s)
		}
		seen[s] = true
	}
	switch c.DeviceIDStrategy {
	case "":
		c.DeviceIDStrategy = IDStrategyUUID
	case IDStrategyUUID, IDStrategyIndex:
	default:
		return fmt.Errorf("unknown device-ID strategy %q: want %s or %s", c.DeviceIDStrategy, IDStrategyUUID, IDStrategyIndex)
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Replicas < 1 {
		return fmt.Errorf("replicas %d: want at least 1", c.Replicas)
	}
	if c.RenameResource != "" && c.Replicas == 1 {
		return fmt.Errorf("rename-resource %q needs replicas > 1", c.RenameResource)
	}
	if c.DevRoot == "" {
		c.DevRoot = "/"
	}
	if c.CDIRoot == "" {
		c.CDIRoot = "/var/run/cdi"
	}
	return nil
}

// AdvertisedResourceName is the resource name registered with the kubelet.
func (c *Config) AdvertisedResourceName() string {
	if c.Replicas > 1 && c.RenameResource != "" {
		return c.RenameResource
	}
	return c.ResourceName
}

func (c *Config) has(strategy string) bool { return slices.Contains(c.DeviceListStrategies, strategy) }

func (c *Config) usesCDI() bool { return c.has(StrategyCDIAnnotations) || c.has(StrategyCDICRI) }

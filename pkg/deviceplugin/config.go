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
//
// # MIG strategies and several resources
//
// Config.MIGStrategy selects how GPUs in MIG mode are advertised, with the
// semantics and resource names of NVIDIA's k8s-device-plugin:
//
//   - MIGStrategyNone: every GPU as a whole GPU under ResourceName, in MIG
//     mode or not; MIG devices are not advertised.
//   - MIGStrategySingle: when a GPU is in MIG mode, every GPU must be, each
//     with at least one MIG device, all MIG devices of one profile; they are
//     advertised under ResourceName. A node breaking these rules advertises
//     nothing: NewSet fails with an error naming the GPU and the fix (the
//     command exits and is restarted, as NVIDIA's plugin with its default
//     failOnInitError). Without any GPU in MIG mode, whole GPUs as with none.
//   - MIGStrategyMixed: GPUs not in MIG mode under ResourceName, MIG devices
//     under "nvidia.com/mig-<profile>" (MIGResourceName), one resource per
//     profile. A GPU in MIG mode without MIG devices fails NewSet.
//
// NewSet builds one Plugin per resource (each its own socket, registered
// with the kubelet on its own) and writes one CDI spec naming every GPU and
// MIG device. A MIG device's CDI device holds its parent GPU's edits plus
// its GPU instance and compute instance capability device nodes
// (cdi.MIGDeviceEdits), as the DRA plugin's static MIG devices.
//
// # Sharing
//
// Config.Sharing replicates resources: time-slicing (the GPU advertised
// Replicas times, processes time-share it) or MPS (the same, each GPU
// served by one MPS control daemon with per-client limits 100/Replicas
// percent of the threads and 1/Replicas of the memory, NVIDIA's limits).
// MPS is refused for MIG devices, as NVIDIA refuses it.
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
	// MIGResourcePrefix starts the resource names of the mixed strategy.
	MIGResourcePrefix = "nvidia.com/mig-"

	// replicaSep separates a GPU ID from its replica number.
	replicaSep = "::"
)

// MIG strategies (Config.MIGStrategy), NVIDIA's names.
const (
	MIGStrategyNone   = "none"
	MIGStrategySingle = "single"
	MIGStrategyMixed  = "mixed"
)

// Sharing strategies (Sharing.Strategy), as NVIDIA's config file names the
// sections sharing.timeSlicing and sharing.mps.
const (
	SharingTimeSlicing = "time-slicing"
	SharingMPS         = "mps"
)

// Sharing replicates resources: NVIDIA's sharing.timeSlicing or
// sharing.mps section (one of them: NVIDIA allows one strategy per config).
type Sharing struct {
	// Strategy is SharingTimeSlicing (also when empty) or SharingMPS.
	Strategy string
	// Resources are the resources to replicate; a resource not listed is
	// advertised once per device.
	Resources []ReplicatedResource
	// FailRequestsGreaterThanOne makes Allocate refuse a container request
	// of more than one replica of a replicated resource. Always on with
	// SharingMPS (as NVIDIA forces it).
	FailRequestsGreaterThanOne bool
}

// ReplicatedResource is one entry of NVIDIA's sharing.*.resources.
type ReplicatedResource struct {
	// Name is the resource as advertised without sharing: ResourceName or
	// a MIG resource of the mixed strategy ("nvidia.com/mig-1g.10gb").
	Name string
	// Rename, when set, is the resource name of the replicas (e.g.
	// "nvidia.com/gpu.shared").
	Rename string
	// Replicas is how many times every device of the resource is
	// advertised: at least 2.
	Replicas int
}

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
	// MIGStrategy is MIGStrategyNone (default), MIGStrategySingle or
	// MIGStrategyMixed (see the package documentation).
	MIGStrategy string
	// Sharing replicates resources. Replicas and RenameResource are a
	// shorthand for time-slicing ResourceName: with Replicas > 1 and no
	// Sharing.Resources they become Sharing{Resources: [{ResourceName,
	// RenameResource, Replicas}]}. Set either, not both.
	Sharing Sharing
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
	if c.RenameResource != "" && c.Replicas == 1 && len(c.Sharing.Resources) == 0 {
		return fmt.Errorf("rename-resource %q needs replicas > 1", c.RenameResource)
	}
	switch c.MIGStrategy {
	case "":
		c.MIGStrategy = MIGStrategyNone
	case MIGStrategyNone, MIGStrategySingle, MIGStrategyMixed:
	default:
		return fmt.Errorf("unknown MIG strategy %q: want %s, %s or %s", c.MIGStrategy, MIGStrategyNone, MIGStrategySingle, MIGStrategyMixed)
	}
	if err := c.setSharingDefaults(); err != nil {
		return err
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

// setSharingDefaults folds the Replicas shorthand into Sharing and checks
// Sharing.
func (c *Config) setSharingDefaults() error {
	sh := &c.Sharing
	if c.Replicas > 1 || c.RenameResource != "" {
		if len(sh.Resources) > 0 {
			return fmt.Errorf("replicas %d / rename-resource %q and sharing resources %v both given: use one of them", c.Replicas, c.RenameResource, sh.Resources)
		}
		sh.Resources = []ReplicatedResource{{Name: c.ResourceName, Rename: c.RenameResource, Replicas: c.Replicas}}
	}
	c.Replicas, c.RenameResource = 1, ""
	switch sh.Strategy {
	case "":
		sh.Strategy = SharingTimeSlicing
	case SharingTimeSlicing:
	case SharingMPS:
		sh.FailRequestsGreaterThanOne = true
	default:
		return fmt.Errorf("unknown sharing strategy %q: want %s or %s", sh.Strategy, SharingTimeSlicing, SharingMPS)
	}
	seen := map[string]bool{}
	for _, r := range sh.Resources {
		if r.Name == "" {
			return fmt.Errorf("%s sharing: a resource without a name: give nvidia.com/gpu or a nvidia.com/mig-<profile> resource", sh.Strategy)
		}
		if seen[r.Name] {
			return fmt.Errorf("%s sharing: resource %s listed twice", sh.Strategy, r.Name)
		}
		seen[r.Name] = true
		if r.Replicas < 2 {
			return fmt.Errorf("%s sharing of %s: replicas %d: want at least 2", sh.Strategy, r.Name, r.Replicas)
		}
		if r.Rename != "" && seen[r.Rename] {
			return fmt.Errorf("%s sharing of %s: rename %s is another resource of the list", sh.Strategy, r.Name, r.Rename)
		}
	}
	return nil
}

// replication returns how resource name is shared; nil when it is not.
func (c *Config) replication(name string) *ReplicatedResource {
	for i := range c.Sharing.Resources {
		if c.Sharing.Resources[i].Name == name {
			return &c.Sharing.Resources[i]
		}
	}
	return nil
}

// MIGResourceName is the resource of MIG devices of profile under the mixed
// strategy: "nvidia.com/mig-<profile>". A character a resource name cannot
// hold ("+" of "1g.10gb+me") becomes ".".
func MIGResourceName(profile string) string {
	b := []byte(profile)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			b[i] = '.'
		}
	}
	return MIGResourcePrefix + string(b)
}

// socketFor is the socket file of the plugin of resource name: SocketName
// for ResourceName, else SocketName with "-<last part of name>" before its
// extension ("gpudra-nvidia-gpu-mig-1g.10gb.sock").
func (c *Config) socketFor(name string) string {
	if name == c.ResourceName {
		return c.SocketName
	}
	suffix := name[strings.LastIndex(name, "/")+1:]
	base := strings.TrimSuffix(c.SocketName, ".sock")
	return base + "-" + suffix + ".sock"
}

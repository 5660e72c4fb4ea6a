// Package dpconfig reads the configuration file of NVIDIA's device plugin
// (k8s-device-plugin, api/config/v1), so that configurations written for it
// (often in a ConfigMap of several named configurations, one selected per
// node by the label nvidia.com/device-plugin.config) configure gpudra's
// device plugin.
//
// Parse is strict: an unknown field fails with the file and the field named.
// Validate applies NVIDIA's rules. Select picks a node's configuration the
// way NVIDIA's config-manager does, Watcher follows the ConfigMap and the
// node label, and DevicePluginConfig maps a configuration onto
// deviceplugin.Config.
package dpconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Version is the only configuration version.
const Version = "v1"

// MIG strategies.
const (
	MIGStrategyNone   = "none"
	MIGStrategySingle = "single"
	MIGStrategyMixed  = "mixed"
)

// Config is NVIDIA's device plugin configuration, version v1. Pointers are
// unset fields (the command line or the default applies).
type Config struct {
	Version   string    `json:"version"`
	Flags     Flags     `json:"flags,omitempty"`
	Resources Resources `json:"resources,omitempty"`
	Sharing   Sharing   `json:"sharing,omitempty"`
	Imex      Imex      `json:"imex,omitempty"`
}

// Flags are the configuration's flags (NVIDIA's CommandLineFlags).
type Flags struct {
	MigStrategy              *string      `json:"migStrategy,omitempty"`
	FailOnInitError          *bool        `json:"failOnInitError,omitempty"`
	RestartOnDeviceUnhealthy *bool        `json:"restartOnDeviceUnhealthy,omitempty"`
	NvidiaDriverRoot         *string      `json:"nvidiaDriverRoot,omitempty"`
	NvidiaDevRoot            *string      `json:"nvidiaDevRoot,omitempty"`
	GDSEnabled               *bool        `json:"gdsEnabled,omitempty"`
	MOFEDEnabled             *bool        `json:"mofedEnabled,omitempty"`
	UseNodeFeatureAPI        *bool        `json:"useNodeFeatureAPI,omitempty"`
	DeviceDiscoveryStrategy  *string      `json:"deviceDiscoveryStrategy,omitempty"`
	Plugin                   *PluginFlags `json:"plugin,omitempty"`
	GFD                      *GFDFlags    `json:"gfd,omitempty"`
}

// PluginFlags are the device plugin's own flags.
type PluginFlags struct {
	PassDeviceSpecs     *bool         `json:"passDeviceSpecs,omitempty"`
	DeviceListStrategy  *StringOrList `json:"deviceListStrategy,omitempty"`
	DeviceIDStrategy    *string       `json:"deviceIDStrategy,omitempty"`
	CDIAnnotationPrefix *string       `json:"cdiAnnotationPrefix,omitempty"`
	NvidiaCTKPath       *string       `json:"nvidiaCTKPath,omitempty"`
	ContainerDriverRoot *string       `json:"containerDriverRoot,omitempty"`
}

// GFDFlags are GPU Feature Discovery's flags; accepted, not used.
type GFDFlags struct {
	Oneshot         *bool   `json:"oneshot,omitempty"`
	NoTimestamp     *bool   `json:"noTimestamp,omitempty"`
	SleepInterval   *string `json:"sleepInterval,omitempty"`
	OutputFile      *string `json:"outputFile,omitempty"`
	MachineTypeFile *string `json:"machineTypeFile,omitempty"`
}

// StringOrList is a list that may be written as one string (NVIDIA accepts
// deviceListStrategy: envvar as well as [envvar, cdi-cri]).
type StringOrList []string

// UnmarshalJSON accepts a string or a list of strings.
func (s *StringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = StringOrList{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("want a string or a list of strings, got %s", b)
	}
	*s = list
	return nil
}

// Resources renames full GPUs and MIG devices by product pattern.
type Resources struct {
	GPUs []Resource `json:"gpus,omitempty"`
	MIGs []Resource `json:"mig,omitempty"`
}

// Resource advertises the devices whose product matches Pattern (a glob)
// under Name.
type Resource struct {
	Pattern string `json:"pattern"`
	Name    string `json:"name"`
}

// Sharing holds at most one sharing strategy.
type Sharing struct {
	TimeSlicing *ReplicatedResources `json:"timeSlicing,omitempty"`
	MPS         *ReplicatedResources `json:"mps,omitempty"`
}

// ReplicatedResources are the resources that a sharing strategy replicates.
type ReplicatedResources struct {
	// RenameByDefault gives every resource without Rename the name
	// <name>.shared.
	RenameByDefault bool `json:"renameByDefault,omitempty"`
	// FailRequestsGreaterThanOne fails requests of more than one replica;
	// unset: false for time-slicing, true for MPS (NVIDIA's defaults).
	FailRequestsGreaterThanOne *bool                `json:"failRequestsGreaterThanOne,omitempty"`
	Resources                  []ReplicatedResource `json:"resources"`
}

// ReplicatedResource replicates the devices of resource Name Replicas times.
type ReplicatedResource struct {
	Name     string            `json:"name"`
	Rename   string            `json:"rename,omitempty"`
	Devices  ReplicatedDevices `json:"devices,omitempty"`
	Replicas int               `json:"replicas"`
}

// ReplicatedDevices is one of: all devices (also when unset), the first
// Count devices, or a List of GPU indices, MIG indices ("<gpu>:<mig>") and
// GPU or MIG UUIDs.
type ReplicatedDevices struct {
	All   bool
	Count int
	List  []string
}

// UnmarshalJSON accepts "all", a positive count or a list.
func (d *ReplicatedDevices) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != "all" {
			return fmt.Errorf("devices: %q: the only string allowed is \"all\"", s)
		}
		*d = ReplicatedDevices{All: true}
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		if n <= 0 {
			return fmt.Errorf("devices: a count must be > 0, got %d", n)
		}
		*d = ReplicatedDevices{Count: n}
		return nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("devices: want \"all\", a count or a list, got %s", b)
	}
	list := make([]string, 0, len(raw))
	for _, r := range raw {
		var idx uint
		if err := json.Unmarshal(r, &idx); err == nil {
			list = append(list, strconv.FormatUint(uint64(idx), 10))
			continue
		}
		var ref string
		if err := json.Unmarshal(r, &ref); err != nil || !validDeviceRef(ref) {
			return fmt.Errorf("devices: %s: want a GPU index, a MIG index <gpu>:<mig>, or a GPU or MIG UUID", r)
		}
		list = append(list, ref)
	}
	*d = ReplicatedDevices{List: list}
	return nil
}

// MarshalJSON writes the form UnmarshalJSON reads.
func (d ReplicatedDevices) MarshalJSON() ([]byte, error) {
	switch {
	case d.Count > 0:
		return json.Marshal(d.Count)
	case d.List != nil:
		return json.Marshal(d.List)
	}
	return json.Marshal("all")
}

func isUint(s string) bool { _, err := strconv.ParseUint(s, 10, 0); return err == nil }

func isGPUUUID(s string) bool {
	rest, ok := strings.CutPrefix(s, "GPU-")
	return ok && uuid.Validate(rest) == nil
}

func validDeviceRef(s string) bool {
	if isUint(s) || isGPUUUID(s) {
		return true
	}
	if a, b, ok := strings.Cut(s, ":"); ok && isUint(a) && isUint(b) {
		return true
	}
	rest, ok := strings.CutPrefix(s, "MIG-")
	if !ok {
		return false
	}
	if uuid.Validate(rest) == nil {
		return true
	}
	parts := strings.Split(rest, "/")
	return len(parts) == 3 && isGPUUUID(parts[0]) && isUint(parts[1]) && isUint(parts[2])
}

// Imex is NVIDIA's IMEX channel settings; accepted, not used.
type Imex struct {
	ChannelIDs []int `json:"channelIDs,omitempty"`
	Required   bool  `json:"required,omitempty"`
}

// Parse reads a configuration (YAML or JSON) strictly: an unknown or
// misspelled field fails, naming source (the file or ConfigMap key) and the
// field. The result is validated (Validate) and defaulted: version v1,
// names qualified with nvidia.com/, renameByDefault applied, MPS's
// failRequestsGreaterThanOne true when unset.
func Parse(source string, data []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("device plugin config %s: %s", source, strictMessage(err))
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("device plugin config %s: %w", source, err)
	}
	return &c, nil
}

// strictMessage shortens the decoders' wrapping ("error unmarshaling JSON:
// while decoding JSON: json: unknown field \"x\"") to its last part.
func strictMessage(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "json: "); i >= 0 {
		msg = msg[i+len("json: "):]
	}
	return msg
}

// Validate checks c with NVIDIA's rules and completes its defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Version == "" {
		c.Version = Version
	}
	if c.Version != Version {
		errs = append(errs, fmt.Errorf("version %q: want %q", c.Version, Version))
	}
	if s := c.Flags.MigStrategy; s != nil && *s != MIGStrategyNone && *s != MIGStrategySingle && *s != MIGStrategyMixed {
		errs = append(errs, fmt.Errorf("flags.migStrategy %q: want none, single or mixed", *s))
	}
	if p := c.Flags.Plugin; p != nil {
		if p.DeviceListStrategy != nil {
			if len(*p.DeviceListStrategy) == 0 {
				errs = append(errs, errors.New("flags.plugin.deviceListStrategy: empty"))
			}
			for _, s := range *p.DeviceListStrategy {
				switch s {
				case "envvar", "volume-mounts", "cdi-annotations", "cdi-cri":
				default:
					errs = append(errs, fmt.Errorf("flags.plugin.deviceListStrategy %q: want envvar, volume-mounts, cdi-annotations or cdi-cri", s))
				}
			}
		}
		if s := p.DeviceIDStrategy; s != nil && *s != "uuid" && *s != "index" {
			errs = append(errs, fmt.Errorf("flags.plugin.deviceIDStrategy %q: want uuid or index", *s))
		}
	}
	for i := range c.Resources.GPUs {
		errs = append(errs, checkRenaming(fmt.Sprintf("resources.gpus[%d]", i), &c.Resources.GPUs[i])...)
	}
	for i := range c.Resources.MIGs {
		errs = append(errs, checkRenaming(fmt.Sprintf("resources.mig[%d]", i), &c.Resources.MIGs[i])...)
	}
	ts, mps := c.Sharing.TimeSlicing, c.Sharing.MPS
	if ts != nil && mps != nil && len(ts.Resources) > 0 && len(mps.Resources) > 0 {
		errs = append(errs, errors.New("sharing: timeSlicing and mps both set: use one sharing strategy"))
	}
	if ts != nil {
		errs = append(errs, checkReplicated("sharing.timeSlicing", ts, false)...)
	}
	if mps != nil {
		errs = append(errs, checkReplicated("sharing.mps", mps, true)...)
		if mps.FailRequestsGreaterThanOne == nil {
			t := true
			mps.FailRequestsGreaterThanOne = &t
		}
	}
	return errors.Join(errs...)
}

func checkRenaming(field string, r *Resource) []error {
	var errs []error
	if r.Pattern == "" {
		errs = append(errs, fmt.Errorf("%s.pattern: empty", field))
	}
	name, err := qualify(r.Name)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s.name: %w", field, err))
	}
	r.Name = name
	return errs
}

// checkReplicated checks a sharing strategy's resources (NVIDIA's rules:
// names of full GPUs or MIG devices, at least 2 replicas, each name once;
// MPS shares only full GPUs, all of them).
func checkReplicated(field string, rr *ReplicatedResources, isMPS bool) []error {
	var errs []error
	if len(rr.Resources) == 0 {
		return []error{fmt.Errorf("%s.resources: no resources specified", field)}
	}
	seen := map[string]bool{}
	for i := range rr.Resources {
		r := &rr.Resources[i]
		f := fmt.Sprintf("%s.resources[%d]", field, i)
		name, err := qualify(r.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.name: %w", f, err))
			continue
		}
		r.Name = name
		if name != "nvidia.com/gpu" && !strings.HasPrefix(name, "nvidia.com/mig-") {
			errs = append(errs, fmt.Errorf("%s.name %q: only nvidia.com/gpu and nvidia.com/mig-<profile> can be shared", f, name))
		}
		if isMPS && name != "nvidia.com/gpu" {
			errs = append(errs, fmt.Errorf("%s.name %q: MPS sharing of MIG devices is not supported", f, name))
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("%s.name %q: listed twice", f, name))
		}
		seen[name] = true
		if r.Replicas < 2 {
			errs = append(errs, fmt.Errorf("%s.replicas %d: the number of replicas must be >= 2", f, r.Replicas))
		}
		if !r.Devices.All && r.Devices.Count == 0 && r.Devices.List == nil {
			r.Devices.All = true // unset means all
		}
		if isMPS && !r.Devices.All {
			errs = append(errs, fmt.Errorf("%s.devices: MPS shares all devices; a count or list is not supported", f))
		}
		if r.Rename == "" && rr.RenameByDefault {
			r.Rename = name + ".shared"
		}
		if r.Rename != "" {
			rename, err := qualify(r.Rename)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.rename: %w", f, err))
			}
			r.Rename = rename
		}
	}
	return errs
}

// qualify prefixes a resource name without a domain with nvidia.com/ and
// checks that it is a valid extended resource name.
func qualify(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty resource name")
	}
	if !strings.Contains(name, "/") {
		name = "nvidia.com/" + name
	}
	if errs := validation.IsQualifiedName(name); len(errs) != 0 {
		return name, fmt.Errorf("%q is not a valid resource name: %s", name, strings.Join(errs, "; "))
	}
	return name, nil
}

// SharingStrategy is "mps", "time-slicing" or "none", as NVIDIA's
// Sharing.SharingStrategy.
func (c *Config) SharingStrategy() string {
	if c.Sharing.MPS != nil && len(c.Sharing.MPS.Resources) > 0 {
		return "mps"
	}
	if c.Sharing.TimeSlicing != nil && len(c.Sharing.TimeSlicing.Resources) > 0 {
		return "time-slicing"
	}
	return "none"
}

// Replicated returns the active strategy's resources, nil with none.
func (c *Config) Replicated() *ReplicatedResources {
	switch c.SharingStrategy() {
	case "mps":
		return c.Sharing.MPS
	case "time-slicing":
		return c.Sharing.TimeSlicing
	}
	return nil
}

// MIGStrategy is flags.migStrategy, "none" when unset.
func (c *Config) MIGStrategy() string {
	if c.Flags.MigStrategy == nil {
		return MIGStrategyNone
	}
	return *c.Flags.MigStrategy
}

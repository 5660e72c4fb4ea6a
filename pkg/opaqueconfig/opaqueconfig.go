// Package opaqueconfig decodes the opaque device configuration of this
// driver and resolves which config applies to each device that a
// ResourceClaim was allocated from this driver.
//
// Decode is strict. It accepts JSON or YAML and fails on an unknown or
// duplicate field, a missing or unknown apiVersion or kind, a value of the
// wrong type and malformed input. The error (a *DecodeError) says what is
// wrong in the user's terms: the field path, and the accepted fields,
// apiVersion and kinds. Decode neither defaults nor validates; the types,
// Normalize and Validate are those of package v1beta1.
//
// The configs come from claim.Status.Allocation.Devices.Config, where the
// scheduler copied those of the DeviceClasses (source FromClass) and of the
// claim's spec.devices.config (source FromClaim). Only configs whose opaque
// driver is this driver are read; the others belong to other drivers. The
// rules, compatible with NVIDIA's reference DRA driver:
//
//   - Every config of this driver is decoded strictly (Decode),
//     normalized and validated, also when it ends up applying to no device.
//   - Class configs come first, claim configs after them; among the configs
//     that apply to a device, the last one wins.
//   - A config applies to a device when its requests list is empty or names
//     the device's request. A device of a prioritized-list subrequest has the
//     request "parent/sub"; a config naming "parent" applies to it too.
//   - A config of the wrong kind for a device (a MigDeviceConfig for a full
//     GPU, a GpuConfig for a MIG device) is an error when it names the
//     device's request, and is passed over when its requests list is empty,
//     so that one claim can carry a GpuConfig and a MigDeviceConfig for all
//     requests.
//   - A device that no config applies to gets v1beta1.DefaultGpuConfig (or
//     DefaultMigDeviceConfig): exclusive use, no sharing.
//
// Errors are *ConfigError values (several are joined with errors.Join); each
// names the claim, the config and the requests it targets, what is wrong and
// how to fix it.
package opaqueconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

// Values of Effective.Source and ConfigError.Source.
const (
	SourceClass   = "class"
	SourceClaim   = "claim"
	SourceDefault = "default"
)

// DeviceType is the type of an allocated device, which decides the config
// kind that fits it.
type DeviceType string

const (
	// DeviceTypeGPU is a full GPU, configured by a GpuConfig.
	DeviceTypeGPU DeviceType = "gpu"
	// DeviceTypeMIG is a MIG device, configured by a MigDeviceConfig.
	DeviceTypeMIG DeviceType = "mig"
)

// Effective is the config that applies to one allocation result.
type Effective struct {
	// Config is a *v1beta1.GpuConfig or *v1beta1.MigDeviceConfig,
	// normalized and validated. Each result gets its own copy.
	Config runtime.Object
	// Source is SourceClass, SourceClaim or SourceDefault.
	Source string
	// ConfigIndex is the index of the config in
	// claim.Status.Allocation.Devices.Config, or -1 for the default. Results
	// with the same ConfigIndex share one config (e.g. one MPS daemon).
	ConfigIndex int
}

// Option changes how Resolve works.
type Option func(*options)

type options struct {
	deviceType func(resourceapi.DeviceRequestAllocationResult) DeviceType
}

// WithDeviceType tells Resolve the type of each allocated device of the
// driver. Without it every device is a full GPU (DeviceTypeGPU). The
// function must return DeviceTypeGPU or DeviceTypeMIG.
func WithDeviceType(f func(result resourceapi.DeviceRequestAllocationResult) DeviceType) Option {
	return func(o *options) { o.deviceType = f }
}

// decoded is a config of this driver, decoded and validated.
type decoded struct {
	index    int // in Status.Allocation.Devices.Config
	position int // 1-based among the configs of the same source
	source   string
	requests []string
	config   configapi.Config // nil when it did not decode or validate
}

// Resolve returns, for each allocation result of driverName in claim (keyed
// by its index in claim.Status.Allocation.Devices.Results), the effective
// config. Results of other drivers are left out. See the package
// documentation for the rules. A claim without allocation is an error.
func Resolve(claim *resourceapi.ResourceClaim, driverName string, opts ...Option) (map[int]Effective, error) {
	o := options{deviceType: func(resourceapi.DeviceRequestAllocationResult) DeviceType { return DeviceTypeGPU }}
	for _, opt := range opts {
		opt(&o)
	}
	if claim == nil {
		return nil, errors.New("resolving opaque configs: the claim is nil")
	}
	if claim.Status.Allocation == nil {
		return nil, fmt.Errorf("%s is not allocated, so it has no device configs: wait until the scheduler allocates it", claimRef(claim))
	}

	var errs []error
	configs := decodeConfigs(claim, driverName, &errs)

	out := map[int]Effective{}
	reported := map[string]bool{} // config index and request of each mismatch error
	for i, result := range claim.Status.Allocation.Devices.Results {
		if result.Driver != driverName {
			continue
		}
		dt := o.deviceType(result)
		if dt != DeviceTypeGPU && dt != DeviceTypeMIG {
			errs = append(errs, fmt.Errorf("%s: device %s of request %q has device type %q, which is not known: the driver's device-type function must return %q or %q",
				claimRef(claim), result.Device, result.Request, dt, DeviceTypeGPU, DeviceTypeMIG))
			continue
		}
		eff, err := resolveResult(claim, configs, result, dt)
		if err != nil {
			key := fmt.Sprintf("%d/%s", err.ConfigIndex, result.Request)
			if !reported[key] {
				reported[key] = true
				errs = append(errs, err)
			}
			continue
		}
		out[i] = eff
	}
	switch len(errs) {
	case 0:
		return out, nil
	case 1:
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// decodeConfigs decodes and validates the configs of driverName, class
// configs first, and adds an error for each one that fails.
func decodeConfigs(claim *resourceapi.ResourceClaim, driverName string, errs *[]error) []decoded {
	var class, fromClaim []decoded
	positions := map[resourceapi.AllocationConfigSource]int{}
	for i, c := range claim.Status.Allocation.Devices.Config {
		positions[c.Source]++
		if c.Opaque == nil || c.Opaque.Driver != driverName {
			continue
		}
		d := decoded{index: i, position: positions[c.Source], requests: c.Requests}
		switch c.Source {
		case resourceapi.AllocationConfigSourceClass:
			d.source = SourceClass
		case resourceapi.AllocationConfigSourceClaim:
			d.source = SourceClaim
		default:
			d.source = string(c.Source)
			*errs = append(*errs, newConfigError(claim, d, fmt.Sprintf("its source %q is not known", c.Source),
				fmt.Sprintf("this driver knows the sources %q and %q; update the driver to one that supports this Kubernetes version",
					resourceapi.AllocationConfigSourceClass, resourceapi.AllocationConfigSourceClaim), nil))
			continue
		}
		cfg, err := decodeConfig(c.Opaque.Parameters)
		if err != nil {
			*errs = append(*errs, decodeConfigError(claim, d, err))
			continue
		}
		cfg.Normalize()
		if err := cfg.Validate(); err != nil {
			kind := cfg.GetObjectKind().GroupVersionKind().Kind
			*errs = append(*errs, newConfigError(claim, d, err.Error(),
				fmt.Sprintf("fix the %s %s", kind, location(claim, d)), err))
			continue
		}
		d.config = cfg
		if d.source == SourceClass {
			class = append(class, d)
		} else {
			fromClaim = append(fromClaim, d)
		}
	}
	return append(class, fromClaim...)
}

func decodeConfig(params runtime.RawExtension) (configapi.Config, error) {
	raw := params.Raw
	if len(raw) == 0 && params.Object != nil {
		b, err := json.Marshal(params.Object)
		if err != nil {
			return nil, &DecodeError{Problems: []string{"the opaque parameters cannot be encoded: " + err.Error()}}
		}
		raw = b
	}
	obj, err := Decode(raw)
	if err != nil {
		return nil, err
	}
	return obj.(configapi.Config), nil
}

// resolveResult picks the config of one result of this driver: the last one
// that applies and fits its device type, or the default.
func resolveResult(claim *resourceapi.ResourceClaim, configs []decoded, result resourceapi.DeviceRequestAllocationResult, dt DeviceType) (Effective, *ConfigError) {
	for i := len(configs) - 1; i >= 0; i-- {
		c := configs[i]
		if c.config == nil {
			continue // failed; already reported
		}
		named, applies := targets(c.requests, result.Request)
		if !applies {
			continue
		}
		if kindFor(c.config) != dt {
			if !named {
				continue // a config for all requests applies to the devices it fits
			}
			return Effective{}, mismatchError(claim, c, result, dt)
		}
		return Effective{Config: c.config.DeepCopyObject(), Source: c.source, ConfigIndex: c.index}, nil
	}
	if dt == DeviceTypeMIG {
		return Effective{Config: configapi.DefaultMigDeviceConfig(), Source: SourceDefault, ConfigIndex: -1}, nil
	}
	return Effective{Config: configapi.DefaultGpuConfig(), Source: SourceDefault, ConfigIndex: -1}, nil
}

// targets reports whether a config with the given requests applies to a
// result of request ("name" or "parent/sub"), and whether it names it.
func targets(requests []string, request string) (named, applies bool) {
	if len(requests) == 0 {
		return false, true
	}
	parent, _, isSub := strings.Cut(request, "/")
	for _, r := range requests {
		if r == request || (isSub && r == parent) {
			return true, true
		}
	}
	return true, false
}

func kindFor(c configapi.Config) DeviceType {
	if _, ok := c.(*configapi.MigDeviceConfig); ok {
		return DeviceTypeMIG
	}
	return DeviceTypeGPU
}

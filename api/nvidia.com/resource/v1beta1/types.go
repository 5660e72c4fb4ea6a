package v1beta1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Sharing strategies. They are untyped so that they can be used both as
// GpuSharingStrategy and as MigDeviceSharingStrategy.
const (
	// TimeSlicingStrategy lets the processes of all containers that share
	// the device run on it in turn.
	TimeSlicingStrategy = "TimeSlicing"
	// MpsStrategy lets the processes of all containers that share the device
	// run on it at the same time through an MPS control daemon.
	MpsStrategy = "MPS"
)

// Time-slice intervals of TimeSlicingConfig.
const (
	DefaultTimeSlice TimeSliceInterval = "Default"
	ShortTimeSlice   TimeSliceInterval = "Short"
	MediumTimeSlice  TimeSliceInterval = "Medium"
	LongTimeSlice    TimeSliceInterval = "Long"
)

// Config is implemented by *GpuConfig and *MigDeviceConfig, the objects that
// opaqueconfig.Decode returns.
type Config interface {
	runtime.Object
	// Normalize fills in defaults in place.
	Normalize()
	// Validate reports the first invalid field.
	Validate() error
}

var (
	_ Config = &GpuConfig{}
	_ Config = &MigDeviceConfig{}
)

// GpuConfig is the opaque configuration of a full GPU.
type GpuConfig struct {
	metav1.TypeMeta `json:",inline"`
	// Sharing selects how containers share the GPU. Nil: the GPU is used
	// exclusively by the containers of one claim, without sharing settings.
	Sharing *GpuSharing `json:"sharing,omitempty"`
}

// MigDeviceConfig is the opaque configuration of a MIG device.
type MigDeviceConfig struct {
	metav1.TypeMeta `json:",inline"`
	// Sharing selects how containers share the MIG device. Nil: exclusive.
	Sharing *MigDeviceSharing `json:"sharing,omitempty"`
}

// GpuSharingStrategy is TimeSlicingStrategy or MpsStrategy.
type GpuSharingStrategy string

// MigDeviceSharingStrategy is TimeSlicingStrategy or MpsStrategy.
type MigDeviceSharingStrategy string

// TimeSliceInterval is DefaultTimeSlice, ShortTimeSlice, MediumTimeSlice or
// LongTimeSlice. The empty value means DefaultTimeSlice.
type TimeSliceInterval string

// GpuSharing is the sharing strategy of a GPU and its settings.
type GpuSharing struct {
	Strategy GpuSharingStrategy `json:"strategy"`
	// TimeSlicingConfig is allowed with the TimeSlicing strategy only.
	TimeSlicingConfig *TimeSlicingConfig `json:"timeSlicingConfig,omitempty"`
	// MpsConfig is allowed with the MPS strategy only.
	MpsConfig *MpsConfig `json:"mpsConfig,omitempty"`
}

// MigDeviceSharing is the sharing strategy of a MIG device and its settings.
type MigDeviceSharing struct {
	Strategy MigDeviceSharingStrategy `json:"strategy"`
	// TimeSlicingConfig is never valid: a MIG device cannot change its time
	// slice. The field exists so that Validate can say so instead of the
	// strict decoder reporting an unknown field.
	TimeSlicingConfig *TimeSlicingConfig `json:"timeSlicingConfig,omitempty"`
	// MpsConfig is allowed with the MPS strategy only.
	MpsConfig *MpsConfig `json:"mpsConfig,omitempty"`
}

// TimeSlicingConfig holds the settings of CUDA time-slicing.
type TimeSlicingConfig struct {
	Interval TimeSliceInterval `json:"interval,omitempty"`
}

// MpsConfig holds the settings of the MPS control daemon of a shared device.
// A nil field leaves the MPS default in place.
type MpsConfig struct {
	// DefaultActiveThreadPercentage limits the share of the device's
	// multiprocessors that a client may use: 1 to 100.
	DefaultActiveThreadPercentage *int `json:"defaultActiveThreadPercentage,omitempty"`
	// DefaultPinnedDeviceMemoryLimit limits the device memory that a client
	// may pin, on every device of the daemon. At least 1Mi.
	DefaultPinnedDeviceMemoryLimit *resource.Quantity `json:"defaultPinnedDeviceMemoryLimit,omitempty"`
	// DefaultPerDevicePinnedMemoryLimit overrides DefaultPinnedDeviceMemoryLimit
	// for single devices. The key is a device UUID (GPU-... or MIG-...) or
	// the index of the device among the devices of the claim; each value is
	// at least 1Mi.
	DefaultPerDevicePinnedMemoryLimit map[string]resource.Quantity `json:"defaultPerDevicePinnedMemoryLimit,omitempty"`
	// MultiUser runs the claim's MPS control daemon in multi-user mode
	// (nvidia-cuda-mps-control -M, NVIDIA's reference driver's field of
	// that name and meaning): its MPS server serves the containers of the
	// claim whatever user (UID) they run as. False (the default): MPS
	// serves the clients of one UID at a time, so the containers sharing
	// the device must run as the same user. In mock mode the mock daemon
	// records it (limits.json, "multiUser"). Not available on GPU shares
	// (consumable capacity), whose per-GPU daemon takes no MPS config.
	MultiUser bool `json:"multiUser,omitempty"`
}

// DefaultGpuConfig returns the config of a full GPU that a claim gets when it
// gives none: exclusive use, no sharing.
func DefaultGpuConfig() *GpuConfig {
	return &GpuConfig{TypeMeta: typeMeta(GpuConfigKind)}
}

// DefaultMigDeviceConfig returns the config of a MIG device that a claim gets
// when it gives none: exclusive use, no sharing.
func DefaultMigDeviceConfig() *MigDeviceConfig {
	return &MigDeviceConfig{TypeMeta: typeMeta(MigDeviceConfigKind)}
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: SchemeGroupVersion.String(), Kind: kind}
}

// Normalize fills in defaults: apiVersion and kind when empty, interval
// Default for time-slicing, an empty mpsConfig for MPS. It leaves invalid
// combinations alone for Validate to report.
func (c *GpuConfig) Normalize() {
	if c == nil {
		return
	}
	if c.APIVersion == "" && c.Kind == "" {
		c.TypeMeta = typeMeta(GpuConfigKind)
	}
	c.Sharing.normalize()
}

func (s *GpuSharing) normalize() {
	if s == nil {
		return
	}
	switch s.Strategy {
	case TimeSlicingStrategy:
		if s.MpsConfig != nil {
			return
		}
		if s.TimeSlicingConfig == nil {
			s.TimeSlicingConfig = &TimeSlicingConfig{}
		}
		if s.TimeSlicingConfig.Interval == "" {
			s.TimeSlicingConfig.Interval = DefaultTimeSlice
		}
	case MpsStrategy:
		if s.MpsConfig == nil && s.TimeSlicingConfig == nil {
			s.MpsConfig = &MpsConfig{}
		}
	}
}

// Normalize fills in defaults: apiVersion and kind when empty, an empty
// mpsConfig for MPS. A MIG device has no time-slicing settings, so nothing is
// added for TimeSlicing.
func (c *MigDeviceConfig) Normalize() {
	if c == nil {
		return
	}
	if c.APIVersion == "" && c.Kind == "" {
		c.TypeMeta = typeMeta(MigDeviceConfigKind)
	}
	if s := c.Sharing; s != nil && s.Strategy == MpsStrategy && s.MpsConfig == nil && s.TimeSlicingConfig == nil {
		s.MpsConfig = &MpsConfig{}
	}
}

// IsTimeSlicing reports whether the strategy is TimeSlicing. False for nil.
func (s *GpuSharing) IsTimeSlicing() bool {
	return s != nil && s.Strategy == TimeSlicingStrategy
}

// IsMPS reports whether the strategy is MPS. False for nil.
func (s *GpuSharing) IsMPS() bool {
	return s != nil && s.Strategy == MpsStrategy
}

// TimeSliceInterval returns the interval to set for the TimeSlicing strategy:
// the configured one, or DefaultTimeSlice when none is given. It returns ""
// when the strategy is not TimeSlicing (including a nil receiver, i.e. an
// exclusive GPU).
func (s *GpuSharing) TimeSliceInterval() TimeSliceInterval {
	if !s.IsTimeSlicing() {
		return ""
	}
	if s.TimeSlicingConfig == nil || s.TimeSlicingConfig.Interval == "" {
		return DefaultTimeSlice
	}
	return s.TimeSlicingConfig.Interval
}

// IsTimeSlicing reports whether the strategy is TimeSlicing. False for nil.
func (s *MigDeviceSharing) IsTimeSlicing() bool {
	return s != nil && s.Strategy == TimeSlicingStrategy
}

// IsMPS reports whether the strategy is MPS. False for nil.
func (s *MigDeviceSharing) IsMPS() bool {
	return s != nil && s.Strategy == MpsStrategy
}

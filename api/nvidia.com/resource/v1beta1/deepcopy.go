package v1beta1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
)

// Hand-written deep copies: every pointer, map and Quantity is copied, so a
// copy shares no memory with its original.

// DeepCopyInto copies c into out.
func (c *GpuConfig) DeepCopyInto(out *GpuConfig) {
	*out = *c
	out.Sharing = c.Sharing.DeepCopy()
}

// DeepCopy returns a deep copy of c; nil for nil.
func (c *GpuConfig) DeepCopy() *GpuConfig {
	if c == nil {
		return nil
	}
	out := new(GpuConfig)
	c.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (c *GpuConfig) DeepCopyObject() runtime.Object {
	if out := c.DeepCopy(); out != nil {
		return out
	}
	return nil
}

// DeepCopyInto copies c into out.
func (c *MigDeviceConfig) DeepCopyInto(out *MigDeviceConfig) {
	*out = *c
	out.Sharing = c.Sharing.DeepCopy()
}

// DeepCopy returns a deep copy of c; nil for nil.
func (c *MigDeviceConfig) DeepCopy() *MigDeviceConfig {
	if c == nil {
		return nil
	}
	out := new(MigDeviceConfig)
	c.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (c *MigDeviceConfig) DeepCopyObject() runtime.Object {
	if out := c.DeepCopy(); out != nil {
		return out
	}
	return nil
}

// DeepCopyInto copies s into out.
func (s *GpuSharing) DeepCopyInto(out *GpuSharing) {
	*out = *s
	out.TimeSlicingConfig = s.TimeSlicingConfig.DeepCopy()
	out.MpsConfig = s.MpsConfig.DeepCopy()
}

// DeepCopy returns a deep copy of s; nil for nil.
func (s *GpuSharing) DeepCopy() *GpuSharing {
	if s == nil {
		return nil
	}
	out := new(GpuSharing)
	s.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies s into out.
func (s *MigDeviceSharing) DeepCopyInto(out *MigDeviceSharing) {
	*out = *s
	out.TimeSlicingConfig = s.TimeSlicingConfig.DeepCopy()
	out.MpsConfig = s.MpsConfig.DeepCopy()
}

// DeepCopy returns a deep copy of s; nil for nil.
func (s *MigDeviceSharing) DeepCopy() *MigDeviceSharing {
	if s == nil {
		return nil
	}
	out := new(MigDeviceSharing)
	s.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies c into out.
func (c *TimeSlicingConfig) DeepCopyInto(out *TimeSlicingConfig) {
	*out = *c
}

// DeepCopy returns a deep copy of c; nil for nil.
func (c *TimeSlicingConfig) DeepCopy() *TimeSlicingConfig {
	if c == nil {
		return nil
	}
	out := new(TimeSlicingConfig)
	c.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies c into out.
func (c *MpsConfig) DeepCopyInto(out *MpsConfig) {
	*out = *c
	if c.DefaultActiveThreadPercentage != nil {
		p := *c.DefaultActiveThreadPercentage
		out.DefaultActiveThreadPercentage = &p
	}
	if c.DefaultPinnedDeviceMemoryLimit != nil {
		q := c.DefaultPinnedDeviceMemoryLimit.DeepCopy()
		out.DefaultPinnedDeviceMemoryLimit = &q
	}
	if c.DefaultPerDevicePinnedMemoryLimit != nil {
		m := make(map[string]resource.Quantity, len(c.DefaultPerDevicePinnedMemoryLimit))
		for k, v := range c.DefaultPerDevicePinnedMemoryLimit {
			m[k] = v.DeepCopy()
		}
		out.DefaultPerDevicePinnedMemoryLimit = m
	}
}

// DeepCopy returns a deep copy of c; nil for nil.
func (c *MpsConfig) DeepCopy() *MpsConfig {
	if c == nil {
		return nil
	}
	out := new(MpsConfig)
	c.DeepCopyInto(out)
	return out
}

package v1beta1

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	strategies = []string{TimeSlicingStrategy, MpsStrategy}
	intervals  = []string{string(DefaultTimeSlice), string(ShortTimeSlice), string(MediumTimeSlice), string(LongTimeSlice)}
)

const (
	// minPinnedMemoryLimit is the smallest pinned-memory limit in bytes: MPS
	// takes the limit in whole megabytes.
	minPinnedMemoryLimit = 1 << 20
	// maxPinnedMemoryLimit (1Pi) is far above the memory of any GPU; it
	// bounds the quantities that later code formats exactly.
	maxPinnedMemoryLimit = 1 << 50
)

// Validate reports the first invalid field of c, by its path, with the
// accepted values. An empty apiVersion and kind are accepted (Normalize sets
// them); other values must be resource.nvidia.com/v1beta1 and GpuConfig.
func (c *GpuConfig) Validate() error {
	if c == nil {
		return fmt.Errorf("%s is missing", GpuConfigKind)
	}
	if err := validateTypeMeta(c.TypeMeta, GpuConfigKind); err != nil {
		return err
	}
	s := c.Sharing
	if s == nil {
		return nil
	}
	if err := validateStrategy(string(s.Strategy)); err != nil {
		return err
	}
	switch s.Strategy {
	case TimeSlicingStrategy:
		if s.MpsConfig != nil {
			return fmt.Errorf(`sharing.mpsConfig cannot be used with sharing.strategy %q: remove mpsConfig, or use strategy %q`,
				TimeSlicingStrategy, MpsStrategy)
		}
		if s.TimeSlicingConfig != nil {
			return validateInterval(s.TimeSlicingConfig.Interval)
		}
	case MpsStrategy:
		if s.TimeSlicingConfig != nil {
			return fmt.Errorf(`sharing.timeSlicingConfig cannot be used with sharing.strategy %q: remove timeSlicingConfig, or use strategy %q`,
				MpsStrategy, TimeSlicingStrategy)
		}
		return s.MpsConfig.validate("sharing.mpsConfig")
	}
	return nil
}

// Validate reports the first invalid field of c, by its path, with the
// accepted values. An empty apiVersion and kind are accepted (Normalize sets
// them); other values must be resource.nvidia.com/v1beta1 and
// MigDeviceConfig. timeSlicingConfig is always an error: a MIG device cannot
// change its time slice.
func (c *MigDeviceConfig) Validate() error {
	if c == nil {
		return fmt.Errorf("%s is missing", MigDeviceConfigKind)
	}
	if err := validateTypeMeta(c.TypeMeta, MigDeviceConfigKind); err != nil {
		return err
	}
	s := c.Sharing
	if s == nil {
		return nil
	}
	if err := validateStrategy(string(s.Strategy)); err != nil {
		return err
	}
	if s.TimeSlicingConfig != nil {
		return fmt.Errorf(`sharing.timeSlicingConfig is not supported by %s: a MIG device cannot change its time slice; `+
			`remove timeSlicingConfig (strategy %q without it is accepted)`, MigDeviceConfigKind, TimeSlicingStrategy)
	}
	switch s.Strategy {
	case TimeSlicingStrategy:
		if s.MpsConfig != nil {
			return fmt.Errorf(`sharing.mpsConfig cannot be used with sharing.strategy %q: remove mpsConfig, or use strategy %q`,
				TimeSlicingStrategy, MpsStrategy)
		}
	case MpsStrategy:
		return s.MpsConfig.validate("sharing.mpsConfig")
	}
	return nil
}

func validateTypeMeta(tm metav1.TypeMeta, kind string) error {
	if tm.APIVersion == "" && tm.Kind == "" {
		return nil
	}
	if tm.APIVersion != SchemeGroupVersion.String() || tm.Kind != kind {
		return fmt.Errorf("apiVersion %q kind %q does not match a %s: use apiVersion %s with kind %s",
			tm.APIVersion, tm.Kind, kind, SchemeGroupVersion.String(), kind)
	}
	return nil
}

func validateStrategy(s string) error {
	if slices.Contains(strategies, s) {
		return nil
	}
	accepted := `use "TimeSlicing" or "MPS"`
	if s == "" {
		return fmt.Errorf("sharing.strategy is missing: %s", accepted)
	}
	return fmt.Errorf("sharing.strategy %q is not supported: %s%s", s, accepted, caseHint(s, strategies))
}

func validateInterval(i TimeSliceInterval) error {
	if i == "" || slices.Contains(intervals, string(i)) {
		return nil
	}
	return fmt.Errorf(`sharing.timeSlicingConfig.interval %q is not supported: use "Default", "Short", "Medium" or "Long"%s`,
		string(i), caseHint(string(i), intervals))
}

// caseHint points out a value that differs from an accepted one in case only.
func caseHint(v string, accepted []string) string {
	for _, a := range accepted {
		if strings.EqualFold(v, a) {
			return " (values are case-sensitive)"
		}
	}
	return ""
}

func (c *MpsConfig) validate(path string) error {
	if c == nil {
		return nil
	}
	if p := c.DefaultActiveThreadPercentage; p != nil && (*p < 1 || *p > 100) {
		return fmt.Errorf("%s.defaultActiveThreadPercentage %d is out of range: use an integer from 1 to 100", path, *p)
	}
	if q := c.DefaultPinnedDeviceMemoryLimit; q != nil {
		if err := validateLimit(path+".defaultPinnedDeviceMemoryLimit", *q); err != nil {
			return err
		}
	}
	keys := make([]string, 0, len(c.DefaultPerDevicePinnedMemoryLimit))
	for k := range c.DefaultPerDevicePinnedMemoryLimit {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same key first every time
	for _, k := range keys {
		field := fmt.Sprintf("%s.defaultPerDevicePinnedMemoryLimit[%q]", path, k)
		if !validDeviceKey(k) {
			return fmt.Errorf(`%s: key %q is not a device: use a device UUID ("GPU-..." or "MIG-...") or a device index ("0", "1", ...)`, field, k)
		}
		if err := validateLimit(field, c.DefaultPerDevicePinnedMemoryLimit[k]); err != nil {
			return err
		}
	}
	return nil
}

func validateLimit(field string, q resource.Quantity) error {
	// Compare through the approximate float: exact arithmetic (Cmp, String)
	// on a quantity such as 1e999999999 takes minutes.
	f := q.AsApproximateFloat64()
	switch {
	case f < minPinnedMemoryLimit:
		return fmt.Errorf("%s %s is too small: use a quantity of at least 1Mi, such as 512Mi or 2Gi", field, quantityText(q, f))
	case f > maxPinnedMemoryLimit:
		return fmt.Errorf("%s %s is too large: use a quantity of at most 1Pi, such as 512Mi or 2Gi", field, quantityText(q, f))
	}
	return nil
}

// quantityText shows q as the user wrote it where that is cheap.
func quantityText(q resource.Quantity, f float64) string {
	if q.IsZero() || (math.Abs(f) >= 1e-3 && math.Abs(f) <= 1e18) {
		return strconv.Quote(q.String())
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}

func validDeviceKey(k string) bool {
	if strings.HasPrefix(k, "GPU-") || strings.HasPrefix(k, "MIG-") {
		return len(k) > len("GPU-")
	}
	n, err := strconv.Atoi(k)
	return err == nil && n >= 0
}

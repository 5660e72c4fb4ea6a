package v1beta1

import (
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

func quantity(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		config Config
		want   string // substring of the error; "" for valid
	}{
		{"default GpuConfig", DefaultGpuConfig(), ""},
		{"default MigDeviceConfig", DefaultMigDeviceConfig(), ""},
		{"GpuConfig without TypeMeta", &GpuConfig{}, ""},
		{"time-slicing", &GpuConfig{Sharing: &GpuSharing{Strategy: TimeSlicingStrategy}}, ""},
		{"time-slicing empty interval", &GpuConfig{Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{}}}, ""},
		{"every interval", &GpuConfig{Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: MediumTimeSlice}}}, ""},
		{"MPS without config", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy}}, ""},
		{"MPS full", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{
			DefaultActiveThreadPercentage:     ptr(100),
			DefaultPinnedDeviceMemoryLimit:    quantity("1Mi"),
			DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"1": resource.MustParse("1Gi"), "MIG-4404041a-04cf-1ccf-9e70-f139a9b1e23c": resource.MustParse("1G")},
		}}}, ""},
		{"thread percentage 1", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultActiveThreadPercentage: ptr(1)}}}, ""},

		{"missing strategy", &GpuConfig{Sharing: &GpuSharing{}}, `sharing.strategy is missing: use "TimeSlicing" or "MPS"`},
		{"bad strategy", &GpuConfig{Sharing: &GpuSharing{Strategy: "Foo"}}, `sharing.strategy "Foo" is not supported: use "TimeSlicing" or "MPS"`},
		{"strategy of wrong case", &GpuConfig{Sharing: &GpuSharing{Strategy: "mps"}}, `sharing.strategy "mps" is not supported: use "TimeSlicing" or "MPS" (values are case-sensitive)`},
		{"bad interval", &GpuConfig{Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: "1ms"}}},
			`sharing.timeSlicingConfig.interval "1ms" is not supported: use "Default", "Short", "Medium" or "Long"`},
		{"timeSlicingConfig with MPS", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: LongTimeSlice}}},
			`sharing.timeSlicingConfig cannot be used with sharing.strategy "MPS": remove timeSlicingConfig, or use strategy "TimeSlicing"`},
		{"mpsConfig with time-slicing", &GpuConfig{Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, MpsConfig: &MpsConfig{}}},
			`sharing.mpsConfig cannot be used with sharing.strategy "TimeSlicing": remove mpsConfig, or use strategy "MPS"`},
		{"thread percentage 0", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultActiveThreadPercentage: ptr(0)}}},
			"sharing.mpsConfig.defaultActiveThreadPercentage 0 is out of range: use an integer from 1 to 100"},
		{"thread percentage 101", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultActiveThreadPercentage: ptr(101)}}},
			"sharing.mpsConfig.defaultActiveThreadPercentage 101 is out of range: use an integer from 1 to 100"},
		{"thread percentage negative", &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultActiveThreadPercentage: ptr(-5)}}},
			"sharing.mpsConfig.defaultActiveThreadPercentage -5 is out of range"},
		{"pinned limit too small", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultPinnedDeviceMemoryLimit: quantity("512Ki")}}},
			`sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "512Ki" is too small: use a quantity of at least 1Mi`},
		{"pinned limit negative", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultPinnedDeviceMemoryLimit: quantity("-1Gi")}}},
			`defaultPinnedDeviceMemoryLimit "-1Gi" is too small`},
		{"pinned limit too large", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultPinnedDeviceMemoryLimit: quantity("2Pi")}}},
			`sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "2Pi" is too large: use a quantity of at most 1Pi`},
		{"pinned limit with huge exponent", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultPinnedDeviceMemoryLimit: quantity("1e99999")}}},
			"sharing.mpsConfig.defaultPinnedDeviceMemoryLimit +Inf is too large"},
		{"per-device limit too small", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{
			DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"0": resource.MustParse("0")}}}},
			`sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["0"] "0" is too small`},
		{"per-device bad key", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{
			DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"gpu0": resource.MustParse("1Gi")}}}},
			`key "gpu0" is not a device: use a device UUID ("GPU-..." or "MIG-...") or a device index`},
		{"per-device negative index", &GpuConfig{Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{
			DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"-1": resource.MustParse("1Gi")}}}},
			`key "-1" is not a device`},
		{"GpuConfig with MIG kind", &GpuConfig{TypeMeta: metav1.TypeMeta{APIVersion: "resource.nvidia.com/v1beta1", Kind: MigDeviceConfigKind}},
			`apiVersion "resource.nvidia.com/v1beta1" kind "MigDeviceConfig" does not match a GpuConfig`},
		{"GpuConfig with other apiVersion", &GpuConfig{TypeMeta: metav1.TypeMeta{APIVersion: "resource.nvidia.com/v1", Kind: GpuConfigKind}},
			"use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig"},
		{"nil GpuConfig", (*GpuConfig)(nil), "GpuConfig is missing"},

		{"MIG time-slicing", &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: TimeSlicingStrategy}}, ""},
		{"MIG MPS", &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{DefaultActiveThreadPercentage: ptr(10)}}}, ""},
		{"MIG bad strategy", &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: "Fabric"}}, `sharing.strategy "Fabric" is not supported: use "TimeSlicing" or "MPS"`},
		{"MIG timeSlicingConfig", &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{}}},
			"sharing.timeSlicingConfig is not supported by MigDeviceConfig: a MIG device cannot change its time slice; remove timeSlicingConfig"},
		{"MIG timeSlicingConfig with MPS", &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: MpsStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: LongTimeSlice}}},
			"sharing.timeSlicingConfig is not supported by MigDeviceConfig"},
		{"MIG mpsConfig with time-slicing", &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: TimeSlicingStrategy, MpsConfig: &MpsConfig{}}},
			`sharing.mpsConfig cannot be used with sharing.strategy "TimeSlicing"`},
		{"MIG with GPU kind", &MigDeviceConfig{TypeMeta: metav1.TypeMeta{APIVersion: "resource.nvidia.com/v1beta1", Kind: GpuConfigKind}},
			"does not match a MigDeviceConfig"},
		{"nil MigDeviceConfig", (*MigDeviceConfig)(nil), "MigDeviceConfig is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.config.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate() = nil, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.want)
			}
			// Normalize must keep a valid config valid and an invalid one invalid.
			tt.config.Normalize()
			if err2 := tt.config.Validate(); (err2 == nil) != (err == nil) {
				t.Errorf("after Normalize, Validate() = %v, before %v", err2, err)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	tm := metav1.TypeMeta{APIVersion: "resource.nvidia.com/v1beta1", Kind: GpuConfigKind}
	migTM := metav1.TypeMeta{APIVersion: "resource.nvidia.com/v1beta1", Kind: MigDeviceConfigKind}
	tests := []struct {
		name string
		in   Config
		want Config
	}{
		{"empty GpuConfig gets TypeMeta, stays exclusive", &GpuConfig{}, &GpuConfig{TypeMeta: tm}},
		{"time-slicing gets interval Default",
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: TimeSlicingStrategy}},
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: DefaultTimeSlice}}}},
		{"empty interval becomes Default",
			&GpuConfig{Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{}}},
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: DefaultTimeSlice}}}},
		{"given interval is kept",
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: ShortTimeSlice}}},
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: ShortTimeSlice}}}},
		{"MPS gets an empty mpsConfig",
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: MpsStrategy}},
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{}}}},
		{"invalid MPS with timeSlicingConfig is left alone",
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: MpsStrategy, TimeSlicingConfig: &TimeSlicingConfig{}}},
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: MpsStrategy, TimeSlicingConfig: &TimeSlicingConfig{}}}},
		{"invalid time-slicing with mpsConfig is left alone",
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, MpsConfig: &MpsConfig{}}},
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: TimeSlicingStrategy, MpsConfig: &MpsConfig{}}}},
		{"unknown strategy is left alone",
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: "Foo"}},
			&GpuConfig{TypeMeta: tm, Sharing: &GpuSharing{Strategy: "Foo"}}},
		{"mismatched TypeMeta is left alone",
			&GpuConfig{TypeMeta: metav1.TypeMeta{Kind: GpuConfigKind}},
			&GpuConfig{TypeMeta: metav1.TypeMeta{Kind: GpuConfigKind}}},
		{"MIG time-slicing gets no timeSlicingConfig",
			&MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: TimeSlicingStrategy}},
			&MigDeviceConfig{TypeMeta: migTM, Sharing: &MigDeviceSharing{Strategy: TimeSlicingStrategy}}},
		{"MIG MPS gets an empty mpsConfig",
			&MigDeviceConfig{TypeMeta: migTM, Sharing: &MigDeviceSharing{Strategy: MpsStrategy}},
			&MigDeviceConfig{TypeMeta: migTM, Sharing: &MigDeviceSharing{Strategy: MpsStrategy, MpsConfig: &MpsConfig{}}}},
		{"MIG exclusive", &MigDeviceConfig{}, &MigDeviceConfig{TypeMeta: migTM}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Normalize()
			if !reflect.DeepEqual(tt.in, tt.want) {
				t.Errorf("Normalize() = %#v, want %#v", tt.in, tt.want)
			}
			// Idempotent.
			again := tt.in.DeepCopyObject().(Config)
			again.Normalize()
			if !reflect.DeepEqual(again, tt.want) {
				t.Errorf("second Normalize() = %#v, want %#v", again, tt.want)
			}
		})
	}
	// Nil receivers do not panic.
	(*GpuConfig)(nil).Normalize()
	(*MigDeviceConfig)(nil).Normalize()
}

func TestDefaultConfigs(t *testing.T) {
	g := DefaultGpuConfig()
	if g.Sharing != nil || g.APIVersion != "resource.nvidia.com/v1beta1" || g.Kind != "GpuConfig" {
		t.Errorf("DefaultGpuConfig() = %#v", g)
	}
	m := DefaultMigDeviceConfig()
	if m.Sharing != nil || m.APIVersion != "resource.nvidia.com/v1beta1" || m.Kind != "MigDeviceConfig" {
		t.Errorf("DefaultMigDeviceConfig() = %#v", m)
	}
	if DefaultGpuConfig() == g {
		t.Error("DefaultGpuConfig returns a shared object")
	}
}

func TestAccessors(t *testing.T) {
	var nilSharing *GpuSharing
	if nilSharing.IsTimeSlicing() || nilSharing.IsMPS() || nilSharing.TimeSliceInterval() != "" {
		t.Error("nil *GpuSharing is not exclusive")
	}
	var nilMig *MigDeviceSharing
	if nilMig.IsTimeSlicing() || nilMig.IsMPS() {
		t.Error("nil *MigDeviceSharing is not exclusive")
	}
	ts := &GpuSharing{Strategy: TimeSlicingStrategy, TimeSlicingConfig: &TimeSlicingConfig{Interval: LongTimeSlice}}
	if !ts.IsTimeSlicing() || ts.IsMPS() || ts.TimeSliceInterval() != LongTimeSlice {
		t.Errorf("accessors of %+v", ts)
	}
	if got := (&GpuSharing{Strategy: TimeSlicingStrategy}).TimeSliceInterval(); got != DefaultTimeSlice {
		t.Errorf("TimeSliceInterval() without config = %q, want Default", got)
	}
	mps := &GpuSharing{Strategy: MpsStrategy}
	if mps.IsTimeSlicing() || !mps.IsMPS() || mps.TimeSliceInterval() != "" {
		t.Errorf("accessors of %+v", mps)
	}
	mig := &MigDeviceSharing{Strategy: MpsStrategy}
	if mig.IsTimeSlicing() || !mig.IsMPS() {
		t.Errorf("accessors of %+v", mig)
	}
}

func TestDeepCopy(t *testing.T) {
	orig := &GpuConfig{
		TypeMeta: metav1.TypeMeta{APIVersion: "resource.nvidia.com/v1beta1", Kind: GpuConfigKind},
		Sharing: &GpuSharing{
			Strategy:          MpsStrategy,
			TimeSlicingConfig: &TimeSlicingConfig{Interval: LongTimeSlice},
			MpsConfig: &MpsConfig{
				DefaultActiveThreadPercentage:     ptr(50),
				DefaultPinnedDeviceMemoryLimit:    quantity("1Gi"),
				DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"0": resource.MustParse("2Gi")},
			},
		},
	}
	cp := orig.DeepCopyObject().(*GpuConfig)
	if !reflect.DeepEqual(orig, cp) {
		t.Fatalf("copy differs: %#v", cp)
	}
	cp.Kind = "Changed"
	cp.Sharing.Strategy = TimeSlicingStrategy
	cp.Sharing.TimeSlicingConfig.Interval = ShortTimeSlice
	*cp.Sharing.MpsConfig.DefaultActiveThreadPercentage = 1
	cp.Sharing.MpsConfig.DefaultPinnedDeviceMemoryLimit.Add(resource.MustParse("1Gi"))
	cp.Sharing.MpsConfig.DefaultPerDevicePinnedMemoryLimit["1"] = resource.MustParse("3Gi")
	if orig.Kind != GpuConfigKind || orig.Sharing.Strategy != MpsStrategy || orig.Sharing.TimeSlicingConfig.Interval != LongTimeSlice ||
		*orig.Sharing.MpsConfig.DefaultActiveThreadPercentage != 50 ||
		orig.Sharing.MpsConfig.DefaultPinnedDeviceMemoryLimit.Cmp(resource.MustParse("1Gi")) != 0 ||
		len(orig.Sharing.MpsConfig.DefaultPerDevicePinnedMemoryLimit) != 1 {
		t.Errorf("changing the copy changed the original: %#v", orig)
	}

	mig := &MigDeviceConfig{Sharing: &MigDeviceSharing{Strategy: MpsStrategy, TimeSlicingConfig: &TimeSlicingConfig{}, MpsConfig: &MpsConfig{DefaultActiveThreadPercentage: ptr(5)}}}
	mcp := mig.DeepCopyObject().(*MigDeviceConfig)
	if !reflect.DeepEqual(mig, mcp) {
		t.Fatalf("MIG copy differs: %#v", mcp)
	}
	mcp.Sharing.TimeSlicingConfig.Interval = LongTimeSlice
	*mcp.Sharing.MpsConfig.DefaultActiveThreadPercentage = 6
	if mig.Sharing.TimeSlicingConfig.Interval != "" || *mig.Sharing.MpsConfig.DefaultActiveThreadPercentage != 5 {
		t.Errorf("changing the MIG copy changed the original: %#v", mig)
	}

	// Nil copies are nil, and DeepCopyObject of nil is an untyped nil.
	if (*GpuConfig)(nil).DeepCopy() != nil || (*GpuConfig)(nil).DeepCopyObject() != nil ||
		(*MigDeviceConfig)(nil).DeepCopyObject() != nil || (*MpsConfig)(nil).DeepCopy() != nil {
		t.Error("deep copy of nil is not nil")
	}
	// Exclusive configs copy with nil sharing.
	if c := DefaultGpuConfig().DeepCopy(); c.Sharing != nil {
		t.Errorf("copy of default = %#v", c)
	}
}

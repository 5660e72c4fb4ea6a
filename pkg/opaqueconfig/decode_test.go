package opaqueconfig

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		name  string
		input string
		check func(t *testing.T, obj runtime.Object)
	}{
		{
			name:  "GpuConfig time-slicing",
			input: yamlGpuTimeSlicing,
			check: func(t *testing.T, obj runtime.Object) {
				c := obj.(*configapi.GpuConfig)
				if !c.Sharing.IsTimeSlicing() || c.Sharing.IsMPS() {
					t.Errorf("strategy = %q, want TimeSlicing", c.Sharing.Strategy)
				}
				if got := c.Sharing.TimeSliceInterval(); got != configapi.LongTimeSlice {
					t.Errorf("interval = %q, want Long", got)
				}
			},
		},
		{
			name:  "GpuConfig time-slicing without timeSlicingConfig",
			input: yamlGpuTimeSlicingNoConfig,
			check: func(t *testing.T, obj runtime.Object) {
				c := obj.(*configapi.GpuConfig)
				if c.Sharing.TimeSlicingConfig != nil {
					t.Errorf("Decode defaulted timeSlicingConfig: %+v", c.Sharing.TimeSlicingConfig)
				}
				if got := c.Sharing.TimeSliceInterval(); got != configapi.DefaultTimeSlice {
					t.Errorf("interval = %q, want Default", got)
				}
			},
		},
		{
			name:  "GpuConfig MPS",
			input: yamlGpuMPS,
			check: func(t *testing.T, obj runtime.Object) {
				c := obj.(*configapi.GpuConfig)
				if !c.Sharing.IsMPS() {
					t.Fatalf("strategy = %q, want MPS", c.Sharing.Strategy)
				}
				m := c.Sharing.MpsConfig
				if m == nil || m.DefaultActiveThreadPercentage == nil || *m.DefaultActiveThreadPercentage != 50 {
					t.Errorf("defaultActiveThreadPercentage not 50: %+v", m)
				}
				if m.DefaultPinnedDeviceMemoryLimit == nil || m.DefaultPinnedDeviceMemoryLimit.Cmp(resource.MustParse("10Gi")) != 0 {
					t.Errorf("defaultPinnedDeviceMemoryLimit = %v, want 10Gi", m.DefaultPinnedDeviceMemoryLimit)
				}
				if q := m.DefaultPerDevicePinnedMemoryLimit["0"]; q.Cmp(resource.MustParse("5Gi")) != 0 {
					t.Errorf("defaultPerDevicePinnedMemoryLimit[0] = %v, want 5Gi", q.String())
				}
				if q := m.DefaultPerDevicePinnedMemoryLimit["GPU-4404041a-04cf-1ccf-9e70-f139a9b1e23c"]; q.Cmp(resource.MustParse("2Gi")) != 0 {
					t.Errorf("per-device limit by UUID = %v, want 2Gi", q.String())
				}
				if got := c.Sharing.TimeSliceInterval(); got != "" {
					t.Errorf("TimeSliceInterval() of MPS = %q, want empty", got)
				}
			},
		},
		{
			name:  "GpuConfig exclusive",
			input: yamlGpuExclusive,
			check: func(t *testing.T, obj runtime.Object) {
				if c := obj.(*configapi.GpuConfig); c.Sharing != nil {
					t.Errorf("sharing = %+v, want nil", c.Sharing)
				}
			},
		},
		{
			name:  "MigDeviceConfig time-slicing",
			input: yamlMigTimeSlicing,
			check: func(t *testing.T, obj runtime.Object) {
				if c := obj.(*configapi.MigDeviceConfig); !c.Sharing.IsTimeSlicing() {
					t.Errorf("strategy = %q, want TimeSlicing", c.Sharing.Strategy)
				}
			},
		},
		{
			name:  "MigDeviceConfig MPS",
			input: yamlMigMPS,
			check: func(t *testing.T, obj runtime.Object) {
				c := obj.(*configapi.MigDeviceConfig)
				if !c.Sharing.IsMPS() || *c.Sharing.MpsConfig.DefaultActiveThreadPercentage != 25 {
					t.Errorf("sharing = %+v, want MPS at 25%%", c.Sharing)
				}
			},
		},
		{
			name:  "GpuConfig JSON",
			input: jsonGpuTimeSlicing,
			check: func(t *testing.T, obj runtime.Object) {
				if got := obj.(*configapi.GpuConfig).Sharing.TimeSliceInterval(); got != configapi.ShortTimeSlice {
					t.Errorf("interval = %q, want Short", got)
				}
			},
		},
		{
			name:  "MigDeviceConfig JSON",
			input: jsonMigMPS,
			check: func(t *testing.T, obj runtime.Object) {
				if c := obj.(*configapi.MigDeviceConfig); !c.Sharing.IsMPS() {
					t.Errorf("strategy = %q, want MPS", c.Sharing.Strategy)
				}
			},
		},
		{
			name:  "YAML flow style with surrounding blank lines",
			input: "\n  {apiVersion: resource.nvidia.com/v1beta1, kind: GpuConfig}\n\n",
			check: func(t *testing.T, obj runtime.Object) {
				if _, ok := obj.(*configapi.GpuConfig); !ok {
					t.Errorf("got %T", obj)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, err := Decode([]byte(tt.input))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			cfg, ok := obj.(configapi.Config)
			if !ok {
				t.Fatalf("Decode returned %T, which is not a Config", obj)
			}
			if gvk := obj.GetObjectKind().GroupVersionKind(); gvk.GroupVersion() != configapi.SchemeGroupVersion {
				t.Errorf("group/version = %v, want %v", gvk.GroupVersion(), configapi.SchemeGroupVersion)
			}
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			tt.check(t, obj)
			cfg.Normalize()
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate after Normalize: %v", err)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	useKinds := "use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"
	tests := []struct {
		name  string
		input string
		want  []string // substrings of the error
	}{
		{"unknown field JSON", jsonUnknownField, []string{`unknown field "sharing.foo"`, "strategy, timeSlicingConfig, mpsConfig"}},
		{"unknown field YAML", yamlUnknownField, []string{`unknown field "sharing.foo"`}},
		{"unknown top-level field", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","metadata":{"name":"x"}}`,
			[]string{`unknown field "metadata"`, "GpuConfig accepts apiVersion, kind, sharing"}},
		{"wrong case field", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","Sharing":{}}`,
			[]string{`unknown field "Sharing"`, "case-sensitive"}},
		{"MIG timeslicing field of another case", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsconfig":{}}}`,
			[]string{`unknown field "sharing.mpsconfig"`, "sharing accepts strategy, mpsConfig"}},
		{"duplicate field JSON", jsonDuplicateField, []string{`duplicate field "sharing.strategy"`}},
		{"duplicate field YAML", yamlDuplicateField, []string{`duplicate field "strategy" (line 5)`}},
		{"unknown kind", jsonUnknownKind, []string{`apiVersion "resource.nvidia.com/v1beta1" kind "ComputeDomain" is not known`, useKinds}},
		{"kind of wrong case", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"gpuConfig"}`, []string{`kind "gpuConfig" is not known`, "case-sensitive"}},
		{"wrong apiVersion", jsonWrongAPIVersion, []string{`apiVersion "resource.nvidia.com/v1" kind "GpuConfig" is not known`, useKinds}},
		{"core apiVersion", "apiVersion: v1\nkind: GpuConfig\n", []string{`apiVersion "v1" kind "GpuConfig" is not known`}},
		{"missing apiVersion", jsonMissingVersion, []string{"apiVersion is missing", useKinds}},
		{"missing kind", jsonMissingKind, []string{"kind is missing", useKinds}},
		{"missing both", `{}`, []string{"apiVersion and kind are missing", useKinds}},
		{"apiVersion not a string", `{"apiVersion":1,"kind":"GpuConfig"}`, []string{"apiVersion must be a string, not a number"}},
		{"malformed JSON", jsonMalformed, []string{"malformed JSON", "line 1"}},
		{"malformed JSON on line 2", "{\"apiVersion\": \"resource.nvidia.com/v1beta1\",\n \"kind\" \"GpuConfig\"}", []string{"malformed JSON", "line 2"}},
		{"malformed YAML", "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig: x\n", []string{"malformed YAML"}},
		{"empty", "  \n", []string{"the opaque parameters are empty", useKinds}},
		{"null", "null", []string{"are null, not an object"}},
		{"array", `[{"kind":"GpuConfig"}]`, []string{"are an array, not an object"}},
		{"scalar YAML", "GpuConfig", []string{"are a string, not an object"}},
		{"wrong type", jsonWrongType, []string{"sharing.mpsConfig.defaultActiveThreadPercentage: a string is not allowed here: use an integer"}},
		{"fraction", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":50.5}}}`,
			[]string{"defaultActiveThreadPercentage: the number 50.5 is not allowed here: use an integer"}},
		{"strategy number", "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: 1\n", []string{"sharing.strategy: a number is not allowed here: use a string"}},
		{"sharing list", "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing: [TimeSlicing]\n", []string{"sharing: an array is not allowed here: use an object"}},
		{"bad quantity", jsonBadQuantity, []string{`sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "ten gigs" is not a quantity`, `"2Gi"`}},
		{"huge negative exponent", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"1e-999999999"}}}`,
			[]string{`sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "1e-999999999" is not a usable quantity: its exponent is out of range`}},
		{"huge exponent as a JSON number", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":1e999999999}}}`,
			[]string{`sharing.mpsConfig.defaultPinnedDeviceMemoryLimit 1e999999999 is not a usable quantity`}},
		{"huge exponent hidden by a duplicate field", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"1e-999999999","defaultPinnedDeviceMemoryLimit":"1Gi"}}}`,
			[]string{"is not a usable quantity"}},
		{"huge per-device exponent YAML", "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: MPS\n  mpsConfig:\n    defaultPerDevicePinnedMemoryLimit:\n      0: \"1E-999999999\"\n",
			[]string{`defaultPerDevicePinnedMemoryLimit["0"] "1E-999999999" is not a usable quantity`}},
		{"overlong quantity", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"0.` + strings.Repeat("0", 80) + `1"}}}`,
			[]string{"is not a usable quantity: it is longer than 64 characters"}},
		{"quantity boolean", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":true}}}`,
			[]string{"sharing.mpsConfig.defaultPinnedDeviceMemoryLimit true is not a quantity"}},
		{"quantity object", `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":{"value":1}}}}`,
			[]string{"sharing.mpsConfig.defaultPinnedDeviceMemoryLimit is an object, not a quantity"}},
		{"bad per-device quantity", "apiVersion: resource.nvidia.com/v1beta1\nkind: MigDeviceConfig\nsharing:\n  strategy: MPS\n  mpsConfig:\n    defaultPerDevicePinnedMemoryLimit:\n      \"1\": lots\n",
			[]string{`defaultPerDevicePinnedMemoryLimit["1"] "lots" is not a quantity`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, err := Decode([]byte(tt.input))
			if err == nil {
				t.Fatalf("Decode succeeded with %#v, want an error", obj)
			}
			if obj != nil {
				t.Errorf("Decode returned %T with its error, want nil", obj)
			}
			var derr *DecodeError
			if !errors.As(err, &derr) || len(derr.Problems) == 0 {
				t.Errorf("error %T %q is not a *DecodeError with problems", err, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDecodeErrorKind(t *testing.T) {
	tests := []struct {
		input     string
		kind      string
		knownKind bool
	}{
		{jsonUnknownField, configapi.GpuConfigKind, true},
		{`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","x":1}`, configapi.MigDeviceConfigKind, true},
		{jsonWrongAPIVersion, configapi.GpuConfigKind, false},
		{jsonUnknownKind, "ComputeDomain", false},
		{jsonMalformed, "", false},
	}
	for _, tt := range tests {
		_, err := Decode([]byte(tt.input))
		var derr *DecodeError
		if !errors.As(err, &derr) {
			t.Fatalf("Decode(%s): %v is not a *DecodeError", tt.input, err)
		}
		if derr.Kind != tt.kind || derr.KnownKind() != tt.knownKind {
			t.Errorf("Decode(%s): Kind %q KnownKind %v, want %q %v", tt.input, derr.Kind, derr.KnownKind(), tt.kind, tt.knownKind)
		}
	}
}

// Inputs that decode but do not validate: Decode does not validate, the
// caller does.
func TestDecodeThenValidate(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{"bad strategy", jsonBadStrategy, `sharing.strategy "Foo" is not supported: use "TimeSlicing" or "MPS"`},
		{"bad interval", jsonBadInterval, `sharing.timeSlicingConfig.interval "Forever" is not supported: use "Default", "Short", "Medium" or "Long"`},
		{"timeSlicingConfig with MPS", jsonMPSWithTimeSlice, `sharing.timeSlicingConfig cannot be used with sharing.strategy "MPS"`},
		{"thread percentage 0", jsonThreadPercentage0, "sharing.mpsConfig.defaultActiveThreadPercentage 0 is out of range: use an integer from 1 to 100"},
		{"MIG timeSlicingConfig", jsonMigTimeSlice, "sharing.timeSlicingConfig is not supported by MigDeviceConfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, err := Decode([]byte(tt.input))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			cfg := obj.(configapi.Config)
			cfg.Normalize()
			err = cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

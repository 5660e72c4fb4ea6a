package opaqueconfig

import (
	"errors"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

const (
	driver      = "gpu.nvidia.com"
	otherDriver = "nic.example.com"
)

const (
	exclusive   = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig"}`
	timeSlicing = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Long"}}}`
	shortSlices = "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: TimeSlicing\n  timeSlicingConfig:\n    interval: Short\n"
	mps         = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":50}}}`
	migMPS      = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS"}}`
)

func opaque(source resourceapi.AllocationConfigSource, driverName, params string, requests ...string) resourceapi.DeviceAllocationConfiguration {
	return resourceapi.DeviceAllocationConfiguration{
		Source:   source,
		Requests: requests,
		DeviceConfiguration: resourceapi.DeviceConfiguration{
			Opaque: &resourceapi.OpaqueDeviceConfiguration{
				Driver:     driverName,
				Parameters: runtime.RawExtension{Raw: []byte(params)},
			},
		},
	}
}

func class(params string, requests ...string) resourceapi.DeviceAllocationConfiguration {
	return opaque(resourceapi.AllocationConfigSourceClass, driver, params, requests...)
}

func fromClaim(params string, requests ...string) resourceapi.DeviceAllocationConfiguration {
	return opaque(resourceapi.AllocationConfigSourceClaim, driver, params, requests...)
}

func result(request, driverName, device string) resourceapi.DeviceRequestAllocationResult {
	return resourceapi.DeviceRequestAllocationResult{Request: request, Driver: driverName, Pool: "node-a", Device: device}
}

func newClaim(results []resourceapi.DeviceRequestAllocationResult, configs ...resourceapi.DeviceAllocationConfiguration) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "train-claim", UID: "6f1c2a7e-0000-4000-8000-000000000001"},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{
			{Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.nvidia.com"}},
			{Name: "gpu2", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.nvidia.com"}},
			{Name: "pick", FirstAvailable: []resourceapi.DeviceSubRequest{
				{Name: "big", DeviceClassName: "big-gpu.nvidia.com"},
				{Name: "small", DeviceClassName: "mig.nvidia.com"},
			}},
		}}},
		Status: resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{
			Devices: resourceapi.DeviceAllocationResult{Results: results, Config: configs},
		}},
	}
}

// sharing describes a GpuConfig as "exclusive", "TimeSlicing/Long", "MPS".
func sharing(t *testing.T, obj runtime.Object) string {
	t.Helper()
	switch c := obj.(type) {
	case *configapi.GpuConfig:
		switch {
		case c.Sharing == nil:
			return "exclusive"
		case c.Sharing.IsTimeSlicing():
			return "TimeSlicing/" + string(c.Sharing.TimeSliceInterval())
		}
		return string(c.Sharing.Strategy)
	case *configapi.MigDeviceConfig:
		if c.Sharing == nil {
			return "mig:exclusive"
		}
		return "mig:" + string(c.Sharing.Strategy)
	}
	t.Fatalf("config of type %T", obj)
	return ""
}

type want struct {
	sharing string
	source  string
	index   int
}

func TestResolve(t *testing.T) {
	gpu0 := result("gpu", driver, "gpu-0")
	gpu1 := result("gpu", driver, "gpu-1")
	gpu2 := result("gpu2", driver, "gpu-2")
	tests := []struct {
		name       string
		results    []resourceapi.DeviceRequestAllocationResult
		configs    []resourceapi.DeviceAllocationConfiguration
		deviceType func(resourceapi.DeviceRequestAllocationResult) DeviceType
		want       map[int]want
	}{
		{
			name:    "default config when none is given",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0, gpu1},
			want:    map[int]want{0: {"exclusive", SourceDefault, -1}, 1: {"exclusive", SourceDefault, -1}},
		},
		{
			name:    "class config applies",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{class(timeSlicing, "gpu")},
			want:    map[int]want{0: {"TimeSlicing/Long", SourceClass, 0}},
		},
		{
			name:    "claim config overrides class config",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{class(timeSlicing, "gpu"), fromClaim(mps, "gpu")},
			want:    map[int]want{0: {"MPS", SourceClaim, 1}},
		},
		{
			name:    "claim config for all requests overrides class config",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{class(timeSlicing, "gpu"), fromClaim(mps)},
			want:    map[int]want{0: {"MPS", SourceClaim, 1}},
		},
		{
			name:    "class config listed after claim config still applies first",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(mps, "gpu"), class(timeSlicing, "gpu")},
			want:    map[int]want{0: {"MPS", SourceClaim, 0}},
		},
		{
			name:    "later claim config overrides earlier one",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(mps), fromClaim(shortSlices, "gpu"), fromClaim(exclusive, "other")},
			want:    map[int]want{0: {"TimeSlicing/Short", SourceClaim, 1}},
		},
		{
			name:    "request targeting",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0, gpu2},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(timeSlicing, "gpu"), fromClaim(mps, "gpu2")},
			want:    map[int]want{0: {"TimeSlicing/Long", SourceClaim, 0}, 1: {"MPS", SourceClaim, 1}},
		},
		{
			name:    "config naming several requests",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0, gpu2},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(mps, "x", "gpu2")},
			want:    map[int]want{0: {"exclusive", SourceDefault, -1}, 1: {"MPS", SourceClaim, 0}},
		},
		{
			name:    "config naming the parent applies to a subrequest",
			results: []resourceapi.DeviceRequestAllocationResult{result("pick/big", driver, "gpu-3")},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(mps, "pick")},
			want:    map[int]want{0: {"MPS", SourceClaim, 0}},
		},
		{
			name:    "config naming the subrequest applies; naming another does not",
			results: []resourceapi.DeviceRequestAllocationResult{result("pick/big", driver, "gpu-3")},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(mps, "pick/big"), fromClaim(timeSlicing, "pick/small"), fromClaim(timeSlicing, "big")},
			want:    map[int]want{0: {"MPS", SourceClaim, 0}},
		},
		{
			name:    "a request named like a parent is not a subrequest",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(mps, "gpu/x")},
			want:    map[int]want{0: {"exclusive", SourceDefault, -1}},
		},
		{
			name:    "configs of other drivers are ignored",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{
				fromClaim(mps, "gpu"),
				opaque(resourceapi.AllocationConfigSourceClaim, otherDriver, `{"not":"ours", "mtu": 9000}`, "gpu"),
				opaque(resourceapi.AllocationConfigSourceClaim, otherDriver, `garbage`),
				{Source: resourceapi.AllocationConfigSourceClaim}, // no opaque config at all
			},
			want: map[int]want{0: {"MPS", SourceClaim, 0}},
		},
		{
			name:    "results of other drivers are skipped",
			results: []resourceapi.DeviceRequestAllocationResult{result("nic", otherDriver, "eth0"), gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(mps)},
			want:    map[int]want{1: {"MPS", SourceClaim, 0}},
		},
		{
			name:    "YAML parameters",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(shortSlices)},
			want:    map[int]want{0: {"TimeSlicing/Short", SourceClaim, 0}},
		},
		{
			name:    "configs are normalized",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{fromClaim(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing"}}`)},
			want:    map[int]want{0: {"TimeSlicing/Default", SourceClaim, 0}},
		},
		{
			name:       "GPU and MIG configs for all requests each apply to their devices",
			results:    []resourceapi.DeviceRequestAllocationResult{gpu0, result("pick/small", driver, "gpu-0-mig-1g.10gb-0")},
			configs:    []resourceapi.DeviceAllocationConfiguration{fromClaim(timeSlicing), fromClaim(migMPS)},
			deviceType: migIfSmall,
			want:       map[int]want{0: {"TimeSlicing/Long", SourceClaim, 0}, 1: {"mig:MPS", SourceClaim, 1}},
		},
		{
			name:       "MIG device default",
			results:    []resourceapi.DeviceRequestAllocationResult{result("pick/small", driver, "gpu-0-mig-1g.10gb-0")},
			configs:    []resourceapi.DeviceAllocationConfiguration{fromClaim(timeSlicing)},
			deviceType: migIfSmall,
			want:       map[int]want{0: {"mig:exclusive", SourceDefault, -1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []Option
			if tt.deviceType != nil {
				opts = append(opts, WithDeviceType(tt.deviceType))
			}
			got, err := Resolve(newClaim(tt.results, tt.configs...), driver, opts...)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("Resolve returned %d results, want %d: %v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				eff, ok := got[i]
				if !ok {
					t.Errorf("result %d: missing", i)
					continue
				}
				if s := sharing(t, eff.Config); s != w.sharing || eff.Source != w.source || eff.ConfigIndex != w.index {
					t.Errorf("result %d: got %s from %s #%d, want %s from %s #%d", i, s, eff.Source, eff.ConfigIndex, w.sharing, w.source, w.index)
				}
				if err := eff.Config.(configapi.Config).Validate(); err != nil {
					t.Errorf("result %d: config does not validate: %v", i, err)
				}
				if gvk := eff.Config.GetObjectKind().GroupVersionKind(); gvk.Group != configapi.GroupName || gvk.Kind == "" {
					t.Errorf("result %d: config has TypeMeta %v", i, gvk)
				}
			}
		})
	}
}

func migIfSmall(r resourceapi.DeviceRequestAllocationResult) DeviceType {
	if strings.HasSuffix(r.Request, "/small") {
		return DeviceTypeMIG
	}
	return DeviceTypeGPU
}

func TestResolveCopiesConfigs(t *testing.T) {
	claim := newClaim([]resourceapi.DeviceRequestAllocationResult{result("gpu", driver, "gpu-0"), result("gpu", driver, "gpu-1")}, fromClaim(mps))
	got, err := Resolve(claim, driver)
	if err != nil {
		t.Fatal(err)
	}
	a, b := got[0].Config.(*configapi.GpuConfig), got[1].Config.(*configapi.GpuConfig)
	if a == b || a.Sharing == b.Sharing {
		t.Fatal("results share one config object")
	}
	*a.Sharing.MpsConfig.DefaultActiveThreadPercentage = 1
	if *b.Sharing.MpsConfig.DefaultActiveThreadPercentage != 50 {
		t.Error("changing one result's config changed another's")
	}
	if got[0].ConfigIndex != got[1].ConfigIndex {
		t.Error("results of one config have different ConfigIndex")
	}
}

func TestResolveErrors(t *testing.T) {
	const badField = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","foo":1}}`
	gpu0 := result("gpu", driver, "gpu-0")
	tests := []struct {
		name       string
		results    []resourceapi.DeviceRequestAllocationResult
		configs    []resourceapi.DeviceAllocationConfiguration
		deviceType func(resourceapi.DeviceRequestAllocationResult) DeviceType
		wantIndex  int
		wantSource string
		want       []string
	}{
		{
			name:    "unknown field in claim config",
			results: []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs: []resourceapi.DeviceAllocationConfiguration{
				opaque(resourceapi.AllocationConfigSourceClaim, otherDriver, `{}`), fromClaim(badField, "gpu")},
			wantIndex: 1, wantSource: SourceClaim,
			want: []string{`claim config #2 (spec.devices.config[1]) for request "gpu"`, `unknown field "sharing.foo"`,
				"fix the opaque parameters in spec.devices.config[1] of the claim", "to match apiVersion resource.nvidia.com/v1beta1 kind GpuConfig"},
		},
		{
			name:      "unknown kind in class config",
			results:   []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs:   []resourceapi.DeviceAllocationConfiguration{class(`{"apiVersion":"resource.nvidia.com/v1","kind":"GpuConfig"}`, "gpu")},
			wantIndex: 0, wantSource: SourceClass,
			want: []string{`class config #1 (from DeviceClass gpu.nvidia.com) for request "gpu"`, `apiVersion "resource.nvidia.com/v1" kind "GpuConfig" is not known`,
				"fix the opaque parameters in spec.config of DeviceClass gpu.nvidia.com"},
		},
		{
			name:      "class config of a subrequest",
			results:   []resourceapi.DeviceRequestAllocationResult{result("pick/big", driver, "gpu-3")},
			configs:   []resourceapi.DeviceAllocationConfiguration{class(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"Fabric"}}`, "pick/big")},
			wantIndex: 0, wantSource: SourceClass,
			want: []string{`(from DeviceClass big-gpu.nvidia.com) for request "pick/big"`, `sharing.strategy "Fabric" is not supported: use "TimeSlicing" or "MPS"`,
				"fix the GpuConfig in spec.config of DeviceClass big-gpu.nvidia.com"},
		},
		{
			name:      "invalid config that applies to no result",
			results:   []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs:   []resourceapi.DeviceAllocationConfiguration{fromClaim(mps), fromClaim(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Forever"}}}`, "unused")},
			wantIndex: 1, wantSource: SourceClaim,
			want: []string{`claim config #2 (spec.devices.config[1]) for request "unused"`, `interval "Forever" is not supported: use "Default", "Short", "Medium" or "Long"`, "fix the GpuConfig in spec.devices.config[1]"},
		},
		{
			name:      "timeSlicingConfig with MPS",
			results:   []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs:   []resourceapi.DeviceAllocationConfiguration{fromClaim(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","timeSlicingConfig":{}}}`)},
			wantIndex: 0, wantSource: SourceClaim,
			want: []string{"for all requests", `sharing.timeSlicingConfig cannot be used with sharing.strategy "MPS"`},
		},
		{
			name:      "malformed parameters",
			results:   []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs:   []resourceapi.DeviceAllocationConfiguration{fromClaim(`{"apiVersion":`, "gpu")},
			wantIndex: 0, wantSource: SourceClaim,
			want: []string{"malformed JSON", "use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
		},
		{
			name:      "empty parameters",
			results:   []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs:   []resourceapi.DeviceAllocationConfiguration{fromClaim(``, "gpu")},
			wantIndex: 0, wantSource: SourceClaim,
			want: []string{"the opaque parameters are empty"},
		},
		{
			name:      "MigDeviceConfig for a full GPU",
			results:   []resourceapi.DeviceRequestAllocationResult{gpu0, result("gpu", driver, "gpu-1")},
			configs:   []resourceapi.DeviceAllocationConfiguration{fromClaim(exclusive), fromClaim(migMPS, "gpu")},
			wantIndex: 1, wantSource: SourceClaim,
			want: []string{`claim config #2 (spec.devices.config[1]) for request "gpu"`,
				`a MigDeviceConfig cannot configure device gpu-0 of request "gpu", which is a full GPU`, "use kind GpuConfig in spec.devices.config[1]"},
		},
		{
			name:       "GpuConfig for a MIG device",
			results:    []resourceapi.DeviceRequestAllocationResult{result("pick/small", driver, "gpu-0-mig-1g.10gb-0")},
			configs:    []resourceapi.DeviceAllocationConfiguration{fromClaim(timeSlicing, "pick")},
			deviceType: migIfSmall,
			wantIndex:  0, wantSource: SourceClaim,
			want: []string{`for request "pick"`, `a GpuConfig cannot configure device gpu-0-mig-1g.10gb-0 of request "pick/small", which is a MIG device`, "use kind MigDeviceConfig"},
		},
		{
			name:      "unknown config source",
			results:   []resourceapi.DeviceRequestAllocationResult{gpu0},
			configs:   []resourceapi.DeviceAllocationConfiguration{opaque("FromTheFuture", driver, mps)},
			wantIndex: 0, wantSource: "FromTheFuture",
			want: []string{`its source "FromTheFuture" is not known`, "update the driver"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []Option
			if tt.deviceType != nil {
				opts = append(opts, WithDeviceType(tt.deviceType))
			}
			got, err := Resolve(newClaim(tt.results, tt.configs...), driver, opts...)
			if err == nil {
				t.Fatalf("Resolve succeeded with %v, want an error", got)
			}
			if got != nil {
				t.Errorf("Resolve returned %v with its error", got)
			}
			var cerr *ConfigError
			if !errors.As(err, &cerr) {
				t.Fatalf("error %T %q is not a *ConfigError", err, err)
			}
			if cerr.ClaimUID != "6f1c2a7e-0000-4000-8000-000000000001" || cerr.ConfigIndex != tt.wantIndex || cerr.Source != tt.wantSource || cerr.Reason == "" || cerr.Fix == "" {
				t.Errorf("ConfigError fields: %+v", cerr)
			}
			msg := err.Error()
			for _, w := range append([]string{"team-a/train-claim", "6f1c2a7e-0000-4000-8000-000000000001"}, tt.want...) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if !strings.Contains(msg, "fix") && !strings.Contains(msg, "use ") && !strings.Contains(msg, "update") {
				t.Errorf("error %q gives no fix", msg)
			}
		})
	}
}

func TestResolveReportsEveryBadConfig(t *testing.T) {
	claim := newClaim([]resourceapi.DeviceRequestAllocationResult{result("gpu", driver, "gpu-0"), result("gpu", driver, "gpu-1")},
		class(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","x":1}`, "gpu"),
		fromClaim(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"Foo"}}`),
		fromClaim(migMPS, "gpu"),
	)
	_, err := Resolve(claim, driver)
	if err == nil {
		t.Fatal("Resolve succeeded")
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not a joined error", err)
	}
	var indexes []int
	for _, e := range joined.Unwrap() {
		var cerr *ConfigError
		if !errors.As(e, &cerr) {
			t.Fatalf("error %T %q is not a *ConfigError", e, e)
		}
		indexes = append(indexes, cerr.ConfigIndex)
	}
	// Config 2 is wrong for both devices of request "gpu": reported once.
	if len(indexes) != 3 || indexes[0] != 0 || indexes[1] != 1 || indexes[2] != 2 {
		t.Errorf("errors for configs %v, want [0 1 2]: %v", indexes, err)
	}
	var derr *DecodeError
	if !errors.As(err, &derr) || derr.Kind != "GpuConfig" {
		t.Errorf("the decode error is not reachable with errors.As: %v", err)
	}
}

func TestResolveUnallocatedAndNil(t *testing.T) {
	claim := newClaim(nil)
	claim.Status.Allocation = nil
	_, err := Resolve(claim, driver)
	if err == nil || !strings.Contains(err.Error(), "team-a/train-claim") || !strings.Contains(err.Error(), "not allocated") {
		t.Errorf("Resolve of an unallocated claim: %v", err)
	}
	if _, err := Resolve(nil, driver); err == nil {
		t.Error("Resolve(nil) succeeded")
	}
	got, err := Resolve(newClaim([]resourceapi.DeviceRequestAllocationResult{result("nic", otherDriver, "eth0")}), driver)
	if err != nil || len(got) != 0 {
		t.Errorf("claim without devices of this driver: %v, %v", got, err)
	}
}

func TestResolveUnknownDeviceType(t *testing.T) {
	claim := newClaim([]resourceapi.DeviceRequestAllocationResult{result("gpu", driver, "gpu-0")})
	_, err := Resolve(claim, driver, WithDeviceType(func(resourceapi.DeviceRequestAllocationResult) DeviceType { return "vgpu" }))
	if err == nil || !strings.Contains(err.Error(), `device type "vgpu"`) || !strings.Contains(err.Error(), "team-a/train-claim") {
		t.Errorf("Resolve with an unknown device type: %v", err)
	}
}

func TestResolveParametersAsObject(t *testing.T) {
	c := fromClaim("")
	c.Opaque.Parameters = runtime.RawExtension{Object: &configapi.GpuConfig{
		TypeMeta: metav1.TypeMeta{APIVersion: "resource.nvidia.com/v1beta1", Kind: "GpuConfig"},
		Sharing:  &configapi.GpuSharing{Strategy: configapi.MpsStrategy},
	}}
	got, err := Resolve(newClaim([]resourceapi.DeviceRequestAllocationResult{result("gpu", driver, "gpu-0")}, c), driver)
	if err != nil {
		t.Fatal(err)
	}
	if s := sharing(t, got[0].Config); s != "MPS" {
		t.Errorf("got %s, want MPS", s)
	}
}

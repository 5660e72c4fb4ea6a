package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/gpudra/gpudra/pkg/opaqueconfig"
	"github.com/gpudra/gpudra/pkg/opaqueconfig/examples"
)

// ClaimParams returns the JSON object that a claim carries for the opaque
// parameters text of an example (a YAML manifest turns YAML parameters into
// JSON), and false where no claim can carry them: the API server requires a
// JSON object that encoding/json reads.
func claimParams(text string) ([]byte, bool) {
	raw := []byte(strings.TrimSpace(text))
	if !json.Valid(raw) {
		converted, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return nil, false
		}
		raw = converted
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, false
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, false
	}
	return raw, true
}

// config is one entry of spec.devices.config.
type config struct {
	driver   string
	params   []byte
	requests []string
}

func claimWith(configs ...config) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "train", UID: types.UID("6f1c2a7e-0000-4000-8000-000000000001")},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{
			{Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.nvidia.com"}},
			{Name: "a", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.nvidia.com"}},
			{Name: "b", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "mig.nvidia.com"}},
		}}},
	}
	for _, cfg := range configs {
		c.Spec.Devices.Config = append(c.Spec.Devices.Config, resourceapi.DeviceClaimConfiguration{
			Requests: cfg.requests,
			DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
				Driver: cfg.driver, Parameters: runtime.RawExtension{Raw: cfg.params},
			}},
		})
	}
	return c
}

func templateOf(c *resourceapi.ResourceClaim) *resourceapi.ResourceClaimTemplate {
	return &resourceapi.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Name + "-template"},
		Spec:       resourceapi.ResourceClaimTemplateSpec{Spec: *c.Spec.DeepCopy()},
	}
}

// prepareError is the error prepare gives for the claim's configs of driver
// (opaqueconfig.Resolve on the claim, allocated with its configs), on one
// line as the policy words it; "" when it resolves.
func prepareError(t *testing.T, c *resourceapi.ResourceClaim, driver string) string {
	t.Helper()
	allocated := c.DeepCopy()
	allocated.Status.Allocation = &resourceapi.AllocationResult{}
	for _, cfg := range c.Spec.Devices.Config {
		allocated.Status.Allocation.Devices.Config = append(allocated.Status.Allocation.Devices.Config, resourceapi.DeviceAllocationConfiguration{
			Source: resourceapi.AllocationConfigSourceClaim, Requests: cfg.Requests, DeviceConfiguration: cfg.DeviceConfiguration,
		})
	}
	if _, err := opaqueconfig.Resolve(allocated, driver); err != nil {
		return strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return ""
}

// templateMessage is the policy's message for a template of claim c, made
// from the claim's: the template, its spec.spec path and where to fix it.
func templateMessage(c *resourceapi.ResourceClaim, claimMessage string) string {
	r := strings.NewReplacer(
		"claim "+c.Namespace+"/"+c.Name+" (uid "+string(c.UID)+")", "ResourceClaimTemplate "+c.Namespace+"/"+c.Name+"-template",
		"(spec.devices.config[", "(spec.spec.devices.config[",
		"in spec.devices.config[", "in spec.spec.devices.config[",
		" of the claim (or of the ResourceClaimTemplate it was made from)", " of the ResourceClaimTemplate")
	return r.Replace(claimMessage)
}

// garbage is another driver's config, which the policy leaves alone.
var garbage = config{driver: "nic.example.com", params: []byte(`{"apiVersion":"nic.example.com/v1","kind":"NicConfig","mtu":9000,"strategy":"Foo"}`)}

// TestPolicyRefusesWhatPrepareRefuses evaluates the chart's policy on a claim
// and a template carrying every example config of pkg/opaqueconfig/examples:
// refused exactly when prepare refuses the config, with prepare's message.
func TestPolicyRefusesWhatPrepareRefuses(t *testing.T) {
	driver := chartDriverName(t)
	e := newEvaluator(t, filePolicy(t, driver))
	check := func(t *testing.T, c *resourceapi.ResourceClaim, wantClaim string) {
		t.Helper()
		for _, obj := range []runtime.Object{c, templateOf(c)} {
			want := wantClaim
			if _, ok := obj.(*resourceapi.ResourceClaimTemplate); ok && want != "" {
				want = templateMessage(c, wantClaim)
			}
			d := e.evaluate(t, obj, nil)
			if len(d.errors) > 0 {
				t.Errorf("%T: evaluation errors (the policy admits on error): %v", obj, d.errors)
			}
			switch {
			case want == "" && d.denied:
				t.Errorf("%T refused, want admitted: %s", obj, d.message)
			case want != "" && !d.denied:
				t.Errorf("%T admitted, want refused with\n  %s", obj, want)
			case want != "" && d.message != want:
				t.Errorf("%T refused with\n  %s\nwant\n  %s", obj, d.message, want)
			}
		}
	}
	for _, ex := range examples.ValidConfigs {
		t.Run("valid/"+ex.Name, func(t *testing.T) {
			raw, ok := claimParams(ex.Params)
			if !ok {
				t.Fatalf("valid example %q cannot be written into a claim", ex.Name)
			}
			c := claimWith(garbage, config{driver: driver, params: raw, requests: []string{"gpu"}})
			if msg := prepareError(t, c, driver); msg != "" {
				t.Fatalf("prepare refuses a valid example: %s", msg)
			}
			check(t, c, "")
		})
	}
	for _, ex := range examples.InvalidConfigs {
		t.Run("invalid/"+ex.Name, func(t *testing.T) {
			raw, ok := claimParams(ex.Params)
			if ex.Admission == examples.RefusedByAPIServer {
				if ok {
					t.Fatalf("example %q is marked RefusedByAPIServer but a claim can carry it: %s", ex.Name, raw)
				}
				return
			}
			if !ok {
				t.Fatalf("no claim can carry example %q: mark it RefusedByAPIServer", ex.Name)
			}
			c := claimWith(garbage, config{driver: driver, params: raw, requests: []string{"gpu"}})
			want := prepareError(t, c, driver)
			if ex.Admission == examples.Collapsed {
				check(t, c, want) // what the claim holds: judged alike
				return
			}
			if !strings.Contains(want, ex.Err) {
				t.Fatalf("prepare's error %q lacks the example's %q", want, ex.Err)
			}
			if ex.Admission == examples.Unseen {
				want = "" // the policy cannot see it: prepare refuses
			}
			check(t, c, want)
		})
	}
}

// TestPolicyNamesEveryInvalidConfig: several configs, for all requests, one
// or several: the message lists each invalid config of this driver, as
// prepare does, and leaves the valid ones and those of other drivers alone.
func TestPolicyNamesEveryInvalidConfig(t *testing.T) {
	driver := chartDriverName(t)
	e := newEvaluator(t, filePolicy(t, driver))
	bad := func(name string) []byte {
		for _, ex := range examples.InvalidConfigs {
			if ex.Name == name {
				raw, _ := claimParams(ex.Params)
				return raw
			}
		}
		t.Fatalf("no example %q", name)
		return nil
	}
	c := claimWith(
		garbage,
		config{driver: driver, params: bad("bad interval")},
		config{driver: driver, params: []byte(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig"}`), requests: []string{"gpu"}},
		config{driver: driver, params: bad("unknown mpsConfig field"), requests: []string{"a", "b"}},
		config{driver: driver, params: bad("apiVersion and kind not strings"), requests: []string{"b"}},
	)
	want := prepareError(t, c, driver)
	if strings.Count(want, "claim config #") != 3 {
		t.Fatalf("prepare's error names %d configs, want 3: %s", strings.Count(want, "claim config #"), want)
	}
	d := e.evaluate(t, c, nil)
	if !d.denied || d.message != want || len(d.errors) > 0 {
		t.Errorf("policy: denied %v errors %v\n  %s\nwant\n  %s", d.denied, d.errors, d.message, want)
	}
}

// TestPolicyLetsUpdatesOfOldObjectsThrough: an invalid claim admitted before
// the policy existed can still get finalizers and labels (and so be deleted).
func TestPolicyLetsUpdatesOfOldObjectsThrough(t *testing.T) {
	driver := chartDriverName(t)
	e := newEvaluator(t, filePolicy(t, driver))
	old := claimWith(config{driver: driver, params: []byte(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"TpuConfig"}`)})
	for _, obj := range []runtime.Object{old, templateOf(old)} {
		if d := e.evaluate(t, obj.DeepCopyObject(), nil); !d.denied {
			t.Fatalf("%T: the invalid config is admitted at creation", obj)
		}
		updated := obj.DeepCopyObject()
		updated.(metav1.Object).SetLabels(map[string]string{"team": "a"})
		updated.(metav1.Object).SetFinalizers(nil)
		if d := e.evaluate(t, updated, obj.DeepCopyObject()); d.denied || len(d.errors) > 0 {
			t.Errorf("%T: an update that leaves the configs alone is refused: %s %v", obj, d.message, d.errors)
		}
	}
}

// TestPolicyAdmitsTheDemos: every ResourceClaim and ResourceClaimTemplate of
// demo/ passes the policy (the e2e tests apply them with it installed).
func TestPolicyAdmitsTheDemos(t *testing.T) {
	driver := chartDriverName(t)
	e := newEvaluator(t, filePolicy(t, driver))
	files, err := filepath.Glob(filepath.Join(repoRoot, "demo", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("demos: %v %v", files, err)
	}
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var doc json.RawMessage
			if err := dec.Decode(&doc); err != nil {
				break
			}
			var meta metav1.TypeMeta
			_ = json.Unmarshal(doc, &meta)
			var obj runtime.Object
			switch meta.Kind {
			case "ResourceClaim":
				obj = &resourceapi.ResourceClaim{}
			case "ResourceClaimTemplate":
				obj = &resourceapi.ResourceClaimTemplate{}
			default:
				continue
			}
			if err := json.Unmarshal(doc, obj); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			n++
			if d := e.evaluate(t, obj, nil); d.denied || len(d.errors) > 0 {
				t.Errorf("%s: %s %s refused: %s %v", filepath.Base(f), meta.Kind, obj.(metav1.Object).GetName(), d.message, d.errors)
			}
		}
	}
	if n == 0 {
		t.Fatal("no claim or template in demo/")
	}
}

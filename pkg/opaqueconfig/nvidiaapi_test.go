package opaqueconfig

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

// The fixtures of testdata/nvidia-api hold every field of the opaque config
// API of NVIDIA's reference DRA driver (resource.nvidia.com/v1beta1
// GpuConfig and MigDeviceConfig, sharing strategies TimeSlicing and MPS with
// timeSlicingConfig.interval and mpsConfig.defaultActiveThreadPercentage,
// defaultPinnedDeviceMemoryLimit, defaultPerDevicePinnedMemoryLimit and
// multiUser), in YAML and JSON.
var nvidiaFixtures = map[string]runtime.Object{
	"gpu-time-slicing.yaml": &configapi.GpuConfig{TypeMeta: typeMetaOf(configapi.GpuConfigKind),
		Sharing: &configapi.GpuSharing{Strategy: configapi.TimeSlicingStrategy,
			TimeSlicingConfig: &configapi.TimeSlicingConfig{Interval: configapi.MediumTimeSlice}}},
	"gpu-mps.yaml": &configapi.GpuConfig{TypeMeta: typeMetaOf(configapi.GpuConfigKind),
		Sharing: &configapi.GpuSharing{Strategy: configapi.MpsStrategy, MpsConfig: &configapi.MpsConfig{
			DefaultActiveThreadPercentage:  intPtr(50),
			DefaultPinnedDeviceMemoryLimit: quantityPtr("10Gi"),
			DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{
				"0": resource.MustParse("5Gi"), "GPU-4404041a-04cf-1ccf-9e70-f139a9b1e23c": resource.MustParse("2Gi")},
			MultiUser: true,
		}}},
	"gpu-exclusive.json": &configapi.GpuConfig{TypeMeta: typeMetaOf(configapi.GpuConfigKind)},
	"mig-mps.json": &configapi.MigDeviceConfig{TypeMeta: typeMetaOf(configapi.MigDeviceConfigKind),
		Sharing: &configapi.MigDeviceSharing{Strategy: configapi.MpsStrategy, MpsConfig: &configapi.MpsConfig{
			DefaultActiveThreadPercentage:     intPtr(25),
			DefaultPinnedDeviceMemoryLimit:    quantityPtr("4Gi"),
			DefaultPerDevicePinnedMemoryLimit: map[string]resource.Quantity{"MIG-5a0c3d2e-7c0b-5d1e-9a11-2f8e3c4b5d6e": resource.MustParse("3Gi")},
		}}},
	"mig-time-slicing.yaml": &configapi.MigDeviceConfig{TypeMeta: typeMetaOf(configapi.MigDeviceConfigKind),
		Sharing: &configapi.MigDeviceSharing{Strategy: configapi.TimeSlicingStrategy}},
}

func typeMetaOf(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: configapi.SchemeGroupVersion.String(), Kind: kind}
}

func intPtr(v int) *int { return &v }

func quantityPtr(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "nvidia-api", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureMap is the fixture as generic JSON.
func fixtureMap(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDecodeNVIDIAConfigAPI decodes every fixture to exactly the expected
// object, validates it, and re-encodes it to the fixture's every field
// (nothing is dropped or renamed; an explicit false is left out, as the
// API's omitempty does).
func TestDecodeNVIDIAConfigAPI(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "nvidia-api"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(nvidiaFixtures) {
		t.Fatalf("%d fixtures in testdata/nvidia-api, %d expected objects", len(entries), len(nvidiaFixtures))
	}
	for name, want := range nvidiaFixtures {
		t.Run(name, func(t *testing.T) {
			raw := readFixture(t, name)
			obj, err := Decode(raw)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			gotJSON, _ := json.Marshal(obj)
			if !equality.Semantic.DeepEqual(obj, want) {
				wantJSON, _ := json.Marshal(want)
				t.Errorf("decoded %T\n%s\nwant %T\n%s", obj, gotJSON, want, wantJSON)
			}
			cfg := obj.(configapi.Config)
			normalized := cfg.DeepCopyObject().(configapi.Config)
			normalized.Normalize()
			if err := normalized.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			if !equality.Semantic.DeepEqual(cfg.DeepCopyObject(), obj) {
				t.Error("DeepCopyObject differs from the decoded object")
			}
			var again map[string]any
			if err := json.Unmarshal(gotJSON, &again); err != nil {
				t.Fatal(err)
			}
			for _, path := range leafPaths(fixtureMap(t, raw), "") {
				wantV, gotV := lookup(fixtureMap(t, raw), path), lookup(again, path)
				if wantV == false && gotV == nil {
					continue
				}
				if !reflect.DeepEqual(wantV, gotV) {
					t.Errorf("%s: fixture %v, re-encoded %v", path, wantV, gotV)
				}
			}
		})
	}
}

// The strictness stays: a misspelled field anywhere in the fixtures (an
// extra letter, or the wrong case, as in "multiuser") fails to decode, and
// the error names it.
func TestDecodeNVIDIAConfigAPITypos(t *testing.T) {
	for name := range nvidiaFixtures {
		m := fixtureMap(t, readFixture(t, name))
		for _, path := range keyPaths(m, "") {
			if path == "apiVersion" || path == "kind" {
				continue
			}
			parts := strings.Split(path, ".")
			key := parts[len(parts)-1]
			if strings.HasPrefix(path, "sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit.") {
				continue // device keys are data, checked by validation
			}
			for _, typo := range []string{key + "s", strings.ToLower(key), strings.ToUpper(key[:1]) + key[1:]} {
				if typo == key {
					continue
				}
				bad := renameKey(t, m, parts, typo)
				_, err := Decode(bad)
				var de *DecodeError
				if !errors.As(err, &de) || !strings.Contains(err.Error(), typo) {
					t.Errorf("%s: %s misspelled %q: Decode error %v, want a DecodeError naming it", name, path, typo, err)
				}
			}
		}
	}
}

// renameKey returns m as JSON with the key at path renamed to typo.
func renameKey(t *testing.T, m map[string]any, path []string, typo string) []byte {
	t.Helper()
	b, _ := json.Marshal(m)
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	node := c
	for _, p := range path[:len(path)-1] {
		node = node[p].(map[string]any)
	}
	last := path[len(path)-1]
	node[typo] = node[last]
	delete(node, last)
	out, _ := json.Marshal(c)
	return out
}

// keyPaths lists the dotted paths of every key of m; leafPaths those of the
// keys whose values are not objects.
func keyPaths(m map[string]any, prefix string) []string {
	var out []string
	for k, v := range m {
		p := prefix + k
		out = append(out, p)
		if sub, ok := v.(map[string]any); ok {
			out = append(out, keyPaths(sub, p+".")...)
		}
	}
	sort.Strings(out)
	return out
}

func leafPaths(m map[string]any, prefix string) []string {
	var out []string
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			out = append(out, leafPaths(sub, prefix+k+".")...)
			continue
		}
		out = append(out, prefix+k)
	}
	sort.Strings(out)
	return out
}

// lookup follows a dotted path; keys with dots in them (none in the
// fixtures but device UUIDs, which have none) are not supported.
func lookup(m map[string]any, path string) any {
	var v any = m
	for _, p := range strings.Split(path, ".") {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

package gfdlabels_test

import (
	"context"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gpudra/gpudra/pkg/gfdlabels"
)

func TestNodePatch(t *testing.T) {
	own := gfdlabels.OwnedAnnotation
	for name, tc := range map[string]struct {
		current, annotations, labels map[string]string
		want                         map[string]any
	}{
		"first": {current: map[string]string{"a": "1"}, labels: map[string]string{"nvidia.com/gpu.count": "8"},
			want: map[string]any{"metadata": map[string]any{"labels": map[string]any{"nvidia.com/gpu.count": "8"},
				"annotations": map[string]any{own: "nvidia.com/gpu.count"}}}},
		"unchanged": {current: map[string]string{"nvidia.com/gpu.count": "8"}, annotations: map[string]string{own: "nvidia.com/gpu.count"},
			labels: map[string]string{"nvidia.com/gpu.count": "8"}},
		"stale removed, foreign kept": {
			current:     map[string]string{"nvidia.com/gpu.count": "8", "nvidia.com/mig.strategy": "mixed", "nvidia.com/device-plugin.config": "x", "other": "y"},
			annotations: map[string]string{own: "nvidia.com/gpu.count,nvidia.com/mig.strategy,other"},
			labels:      map[string]string{"nvidia.com/gpu.count": "4"},
			want: map[string]any{"metadata": map[string]any{"labels": map[string]any{"nvidia.com/gpu.count": "4", "nvidia.com/mig.strategy": nil},
				"annotations": map[string]any{own: "nvidia.com/gpu.count"}}}},
		"all removed": {current: map[string]string{"nvidia.com/gpu.count": "8"}, annotations: map[string]string{own: "nvidia.com/gpu.count"},
			want: map[string]any{"metadata": map[string]any{"labels": map[string]any{"nvidia.com/gpu.count": nil},
				"annotations": map[string]any{own: nil}}}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := gfdlabels.NodePatch(tc.current, tc.annotations, tc.labels); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPublishNodeLabels(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"keep": "me"}}})
	p := &gfdlabels.Publisher{Client: client, NodeName: "n1", Namespace: "ns"}
	if err := p.Publish(ctx, map[string]string{"nvidia.com/gpu.count": "8", "nvidia.com/gpu.present": "true"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, map[string]string{"nvidia.com/gpu.count": "4"}); err != nil {
		t.Fatal(err)
	}
	n, _ := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if want := map[string]string{"keep": "me", "nvidia.com/gpu.count": "4"}; !reflect.DeepEqual(n.Labels, want) {
		t.Errorf("labels %v, want %v", n.Labels, want)
	}
	if err := p.Publish(ctx, map[string]string{"other/x": "1"}); err == nil {
		t.Error("a label without nvidia.com/: no error")
	}
}

func TestPublishNodeFeature(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	client.Resources = []*metav1.APIResourceList{{GroupVersion: gfdlabels.NodeFeatureGroupVersion,
		APIResources: []metav1.APIResource{{Name: "nodefeatures", Namespaced: true, Kind: "NodeFeature"}}}}
	gvr := schema.GroupVersionResource{Group: "nfd.k8s-sigs.io", Version: "v1alpha1", Resource: "nodefeatures"}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "NodeFeatureList"})
	p := &gfdlabels.Publisher{Client: client, Dynamic: dyn, NodeName: "n1", Namespace: "ns"}
	for _, l := range []map[string]string{{"nvidia.com/gpu.count": "8", "nvidia.com/x": "y"}, {"nvidia.com/gpu.count": "4"}} {
		if err := p.Publish(ctx, l); err != nil {
			t.Fatal(err)
		}
		obj, err := dyn.Resource(gvr).Namespace("ns").Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, _, _ := unstructuredStrings(obj.Object, "spec", "labels")
		if !reflect.DeepEqual(got, l) || obj.GetLabels()[gfdlabels.NodeNameLabel] != "n1" {
			t.Errorf("NodeFeature spec.labels %v, labels %v; want %v", got, obj.GetLabels(), l)
		}
	}
	n, _ := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if len(n.Labels) != 0 {
		t.Errorf("node labeled with NFD present: %v", n.Labels)
	}
}

func unstructuredStrings(obj map[string]any, fields ...string) (map[string]string, bool, error) {
	return unstructured.NestedStringMap(obj, fields...)
}

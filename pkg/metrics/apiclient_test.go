package metrics

import (
	"context"
	"net/url"
	"testing"
	"time"

	clientmetrics "k8s.io/client-go/tools/metrics"
)

func TestAPIResource(t *testing.T) {
	for path, want := range map[string]string{
		"/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/gpu-claim": "resourceclaims",
		"/apis/resource.k8s.io/v1/resourceslices":                              "resourceslices",
		"/apis/resource.k8s.io/v1/resourceslices/00000-gpu.nvidia.com-vm-x":    "resourceslices",
		"/api/v1/nodes/vm":                         "nodes",
		"/api/v1/namespaces/gpudra-system/pods/p1": "pods",
		"/api/v1/namespaces/gpudra-system":         "namespaces",
		"/api":                                     "other",
		"/apis/resource.k8s.io/v1":                 "other",
		"/version":                                 "other",
	} {
		if got := APIResource(path); got != want {
			t.Errorf("APIResource(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestClientGoLatenciesReachTheHistogram(t *testing.T) {
	m := New()
	m.ObserveAPIRequests()
	u, _ := url.Parse("https://10.96.0.1/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c")
	clientmetrics.RequestLatency.Observe(context.Background(), "GET", *u, 3*time.Millisecond)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "gpudra_api_request_duration_seconds" {
			continue
		}
		if len(f.GetMetric()) != 1 {
			t.Fatalf("%d series, want 1: %v", len(f.GetMetric()), f)
		}
		s := f.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		h := s.GetHistogram()
		if labels["verb"] != "GET" || labels["resource"] != "resourceclaims" || h.GetSampleCount() != 1 || h.GetSampleSum() != 0.003 {
			t.Fatalf("labels %v, count %d, sum %v; want GET resourceclaims, 1, 0.003", labels, h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Fatal("no gpudra_api_request_duration_seconds in the registry")
}

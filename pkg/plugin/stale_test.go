package plugin

import (
	"errors"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"

	dto "github.com/prometheus/client_model/go"

	"github.com/gpudra/gpudra/pkg/claimstate"
	"github.com/gpudra/gpudra/pkg/metrics"
)

// TestLookupClaimTellsGoneFromUnknown: claimstate treats NotFound as gone
// and every other error as unknown, so the lookup must pass both through
// as client-go returns them.
func TestLookupClaimTellsGoneFromUnknown(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset(&resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "there", UID: "uid-there"}})
	lookup := lookupClaim(client)
	c, err := lookup(ctx, "ns", "there")
	if err != nil || c == nil || c.UID != "uid-there" {
		t.Fatalf("existing claim: %v, %v", c, err)
	}
	if _, err := lookup(ctx, "ns", "gone"); !apierrors.IsNotFound(err) {
		t.Errorf("deleted claim: %v, want NotFound", err)
	}
	client.PrependReactor("get", "resourceclaims", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if _, err := lookup(ctx, "ns", "there"); err == nil || apierrors.IsNotFound(err) {
		t.Errorf("API server down: %v, want an error other than NotFound", err)
	}
}

func TestStaleClaimReporterCountsAndRecordsAnEvent(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset()
	m := metrics.New()
	report := staleClaimReporter(client, "node-a", m)
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	report(ctx, claimstate.StaleClaim{Namespace: "ns", Name: "old", UID: "uid-old", Devices: []string{"gpu-3"}, PreparedAt: at,
		Reason: "it no longer exists in the API server", For: "ns/new", Device: "gpu-3"})
	report(ctx, claimstate.StaleClaim{Namespace: "ns", Name: "older", UID: "uid-older", Devices: []string{"gpu-4", "gpu-5"}, PreparedAt: at,
		Reason: "it is no longer allocated"})
	if n := counterValue(t, m, metrics.TriggerPrepare); n != 1 {
		t.Errorf("trigger prepare counted %v, want 1", n)
	}
	if n := counterValue(t, m, metrics.TriggerSweep); n != 1 {
		t.Errorf("trigger sweep counted %v, want 1", n)
	}
	events, err := client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 2 {
		t.Fatalf("%d events, want 2", len(events.Items))
	}
	want := map[string][]string{
		"uid-old":   {"ns/old", "uid-old", "[gpu-3]", "2025-06-01T12:00:00Z", "claim ns/new needed its device gpu-3", "no longer exists"},
		"uid-older": {"ns/older", "[gpu-4 gpu-5]", "periodic check", "no longer allocated"},
	}
	for _, ev := range events.Items {
		if ev.Reason != ReasonStaleClaimRemoved || ev.Type != "Warning" || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "node-a" {
			t.Errorf("event %+v", ev)
		}
		found := false
		for uid, words := range want {
			if !strings.Contains(ev.Message, "(uid "+uid+")") {
				continue
			}
			found = true
			for _, w := range words {
				if !strings.Contains(ev.Message, w) {
					t.Errorf("event message %q lacks %q", ev.Message, w)
				}
			}
		}
		if !found {
			t.Errorf("event message %q names neither claim", ev.Message)
		}
	}
}

func counterValue(t *testing.T, m *metrics.Metrics, trigger string) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.StaleClaimsRemoved.WithLabelValues(trigger).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}

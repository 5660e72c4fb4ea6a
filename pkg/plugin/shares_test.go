package plugin

import (
	"context"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestWarnSharesNotEnforcedRecordsAnEventOnTheClaimsPods(t *testing.T) {
	client := fake.NewClientset()
	claim := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "slice"},
		Status: resourceapi.ResourceClaimStatus{ReservedFor: []resourceapi.ResourceClaimConsumerReference{
			{Resource: "pods", Name: "infer-1", UID: "u1"}, {Resource: "pods", Name: "infer-2", UID: "u2"},
			{APIGroup: "example.com", Resource: "jobs", Name: "not-a-pod", UID: "u3"},
		}},
	}
	warnSharesNotEnforced(context.Background(), client, "node-a", claim)
	evs, err := client.CoreV1().Events("tenant").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 2 {
		t.Fatalf("%d events, want one per pod: %+v", len(evs.Items), evs.Items)
	}
	for _, ev := range evs.Items {
		if ev.Reason != ReasonGPUShareNotEnforced || ev.Type != "Warning" || ev.InvolvedObject.Kind != "Pod" ||
			!strings.HasPrefix(ev.InvolvedObject.Name, "infer-") || !strings.Contains(ev.Message, "accounting only") {
			t.Errorf("event %+v", ev)
		}
	}
}

package deviceplugin

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/sharing/mps"
)

// daemonPod is a daemon pod as package mps makes them, for claimUID.
func daemonPod(claimUID string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: mps.PodName(claimUID), Namespace: "gpudra-system",
			Labels:      map[string]string{mps.LabelComponent: "mps-control-daemon"},
			Annotations: map[string]string{"gpudra.io/mps-claim-uid": claimUID},
		},
		Spec: corev1.PodSpec{NodeName: "node-a"},
	}
}

// TestRetainRemovesOnlyTheDevicePluginsDaemonsNotKept: Retain deletes the
// daemon pods of the device plugin's GPUs that are not kept, and never a
// DRA claim's daemon.
func TestRetainRemovesOnlyTheDevicePluginsDaemonsNotKept(t *testing.T) {
	a, b := inventory.Device{UUID: "GPU-AAAA"}, inventory.Device{UUID: "GPU-BBBB"}
	const claimUID = "0c4a5400-0000-4000-8000-000000000001"
	client := fake.NewClientset(daemonPod(MPSDaemonClaimUID(a.UUID)), daemonPod(MPSDaemonClaimUID(b.UUID)), daemonPod(claimUID))
	d, err := NewMPSDaemons(mps.Options{Client: client, Namespace: "gpudra-system", NodeName: "node-a", Image: "img", BaseDir: t.TempDir(), Mock: true})
	if err != nil {
		t.Fatal(err)
	}
	left := func() []string {
		pods, err := client.CoreV1().Pods("gpudra-system").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range pods.Items {
			names = append(names, p.Name)
		}
		slices.Sort(names)
		return names
	}
	if err := d.Retain(context.Background(), []inventory.Device{a}); err != nil {
		t.Fatal(err)
	}
	want := []string{mps.PodName(MPSDaemonClaimUID(a.UUID)), mps.PodName(claimUID)}
	slices.Sort(want)
	if got := left(); !slices.Equal(got, want) {
		t.Errorf("pods after Retain(a): %v, want %v", got, want)
	}
	if err := d.Retain(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := left(); !slices.Equal(got, []string{mps.PodName(claimUID)}) {
		t.Errorf("pods after Retain(none): %v, want only the DRA claim's daemon", got)
	}
}

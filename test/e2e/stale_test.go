//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// staleEventReason is plugin.ReasonStaleClaimRemoved.
const staleEventReason = "StaleClaimRemoved"

// TestStaleClaimRecordsDoNotWedgeGPUs: the plugin's checkpoint holds
// records of two claims that the API server does not have, as a plugin that
// was down while their claims were deleted leaves them (the kubelet never
// unprepares such claims). One was prepared an hour ago on gpu-5: the
// restarted plugin's sweep removes it at once. The other was prepared just
// now on gpu-6, younger than the chart's grace period (staleClaims, 5m by
// default): it stays until a pod's claim that can only get gpu-6 is
// prepared, which removes it instead of failing with "already prepared for
// claim ...". Each removal leaves a Warning event on the node. The old
// record has the CDI IDs of a plugin from before the driver-wide spec (a
// self-contained claim spec of its own), the fresh one those of an
// exclusive claim of the current plugin (the static device spec's, no claim
// spec): a record keeps the format of its IDs, and either is removed with
// whatever spec it has.
func TestStaleClaimRecordsDoNotWedgeGPUs(t *testing.T) {
	draMode(t)
	c := client(t)
	ctx := context.Background()
	const ns = "gpudra-e2e-stale"
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	node := nodes.Items[0].Name
	store := claimStore(t)
	bootID, err := checkpoint.ReadBootID()
	if err != nil {
		t.Fatal(err)
	}
	naming := cdi.NewNaming(driverName)
	record := func(name, device string, preparedAt time.Time, static bool) string {
		t.Helper()
		uid := string(uuid.NewUUID())
		ids := []string{naming.DeviceID(uid, device)}
		if static {
			ids = naming.StaticDeviceIDs(device)
		}
		rec := &checkpoint.ClaimRecord{
			BootID: bootID, DriverName: driverName, ClaimUID: uid, Namespace: ns, Name: name, PreparedAt: preparedAt.UTC(),
			Devices: []checkpoint.PreparedDevice{{
				Requests: []string{"gpu"}, Pool: node, Device: device, UUID: deviceAttr(t, c, device, resourceslice.AttrUUID),
				CDIDeviceIDs: ids,
			}},
			CDISpecName: naming.SpecFileName(uid),
		}
		if err := store.Put(rec); err != nil {
			t.Fatal(err)
		}
		return uid
	}
	recorded := func(uid string) bool {
		t.Helper()
		rec, err := store.Get(uid)
		if err != nil {
			t.Fatal(err)
		}
		return rec != nil
	}
	old := record("deleted-an-hour-ago", "gpu-5", time.Now().Add(-time.Hour), false)
	fresh := record("deleted-just-now", "gpu-6", time.Now(), true)
	t.Cleanup(func() {
		_ = exec.Command("kubectl", "delete", "ns", ns, "--wait=true", "--timeout=2m", "--ignore-not-found").Run()
		// A failed run must not leave its records holding GPUs.
		left := false
		for _, uid := range []string{old, fresh} {
			if recorded(uid) {
				left = true
				_ = store.Delete(uid)
				_ = os.Remove(filepath.Join(cdiRoot, naming.SpecFileName(uid)))
			}
		}
		if left {
			restartPlugin(t, c)
		}
	})
	restartPlugin(t, c)

	specLeft := func(uid string) bool {
		_, err := os.Stat(filepath.Join(cdiRoot, naming.SpecFileName(uid)))
		return !os.IsNotExist(err)
	}
	// The sweep, at start-up: the old record goes (with the claim spec the
	// restart may have written for it), the fresh one stays.
	eventually(t, 2*time.Minute, "the sweep to remove the hour-old stale record", func() (bool, string) {
		return !recorded(old) && !specLeft(old), fmt.Sprintf("still recorded %v, claim spec left %v", recorded(old), specLeft(old))
	})
	if ev := staleEvent(t, c, node, old); ev == nil {
		t.Errorf("no %s event on node %s for claim %s/deleted-an-hour-ago", staleEventReason, node, ns)
	} else if !strings.Contains(ev.Message, "periodic check") || !strings.Contains(ev.Message, "[gpu-5]") {
		t.Errorf("event of the swept claim: %q", ev.Message)
	}
	if !recorded(fresh) {
		t.Fatalf("the record prepared just now was removed before any prepare needed gpu-6: is staleClaims.gracePeriod shorter than this test takes?")
	}

	// The prepare: a pod whose claim can only get gpu-6 runs.
	applyPodOnGPU(t, ns, "gpu6", "on-gpu6", deviceAttr(t, c, "gpu-6", resourceslice.AttrUUID))
	eventually(t, 3*time.Minute, "the pod on gpu-6 Running", func() (bool, string) {
		p, err := c.CoreV1().Pods(ns).Get(ctx, "on-gpu6", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Status.Phase == corev1.PodRunning {
			return true, ""
		}
		msg := kubectl(t, "-n", ns, "get", "events", "--field-selector", "type=Warning", "-o", "custom-columns=OBJ:.involvedObject.name,REASON:.reason,MSG:.message")
		return false, fmt.Sprintf("pod %s\n%s", p.Status.Phase, msg)
	})
	if recorded(fresh) {
		t.Errorf("the stale record on gpu-6 is still there although a claim on gpu-6 was prepared")
	}
	if specLeft(fresh) {
		t.Errorf("the stale claim on gpu-6, of static IDs, has a claim spec %s", naming.SpecFileName(fresh))
	}
	claim, err := c.ResourceV1().ResourceClaims(ns).Get(ctx, "gpu6", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !recorded(string(claim.UID)) {
		t.Errorf("claim %s/gpu6 of the running pod is not recorded", ns)
	} else if checkClaimCDI(t, c, store, claim) {
		t.Errorf("claim %s/gpu6, exclusive and without a config, has a claim spec", ns)
	}
	if ev := staleEvent(t, c, node, fresh); ev == nil {
		t.Errorf("no %s event on node %s for claim %s/deleted-just-now", staleEventReason, node, ns)
	} else if want := fmt.Sprintf("claim %s/gpu6 needed its device gpu-6", ns); !strings.Contains(ev.Message, want) {
		t.Errorf("event of the claim removed by the prepare: %q, want it to say %q", ev.Message, want)
	}
}

// staleEvent returns the StaleClaimRemoved event on node for the claim with
// uid, or nil.
func staleEvent(t *testing.T, c kubernetes.Interface, node, uid string) *corev1.Event {
	t.Helper()
	list, err := c.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{
		FieldSelector: "reason=" + staleEventReason + ",involvedObject.kind=Node,involvedObject.name=" + node,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range list.Items {
		if ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, "(uid "+uid+")") {
			return &list.Items[i]
		}
	}
	return nil
}

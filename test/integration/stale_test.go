package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/gpudra/gpudra/pkg/plugin"
)

// TestClaimsGoneFromTheAPIDoNotWedgeGPUs is the report of issue 14: a
// kubelet-side client prepared 8 claims, the plugin crashed, the claims
// were deleted from the API server, and the restarted plugin refused every
// new claim on the node because its records still held all 8 GPUs. Now a
// prepare that needs a stale claim's GPU unprepares that claim at once, and
// the sweep removes the rest, each with a Warning event on the node and a
// count in gpudra_stale_claims_removed_total.
func TestClaimsGoneFromTheAPIDoNotWedgeGPUs(t *testing.T) {
	h := newStoppedHarness(t)
	h.cfg.Metrics.Address = "127.0.0.1:0"
	h.start()
	var bench []*resourceapi.ResourceClaim
	req := &drapb.NodePrepareResourcesRequest{}
	for i := range 8 {
		c := h.createClaim(fmt.Sprintf("bench-%d", i), fmt.Sprintf("gpu-%d", i))
		bench = append(bench, c)
		req.Claims = append(req.Claims, ref(c))
	}
	resp, err := h.draClient().NodePrepareResources(h.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range bench {
		if r := resp.Claims[string(c.UID)]; r == nil || r.Error != "" {
			t.Fatalf("prepare %s: %+v", c.Name, r)
		}
	}

	// The plugin goes without unpreparing anything; the claims are deleted
	// meanwhile, and the kubelet never unprepares them.
	h.plugin.Stop()
	for _, c := range bench {
		if err := h.client.ResourceV1().ResourceClaims(c.Namespace).Delete(h.ctx, c.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The sweep is off (no grace period): only the prepare frees a GPU.
	h.start()
	if n := len(h.plugin.State().PreparedClaims()); n != 8 {
		t.Fatalf("restarted plugin has %d claims, want the 8 recorded ones", n)
	}
	// A claim on one of their GPUs is prepared; the stale claim holding it
	// goes. A live claim still holds its GPU as before.
	fresh := h.createClaim("fresh", "gpu-0")
	prepare(t, h, fresh, "")
	clash := h.createClaim("clash", "gpu-0")
	resp, err = h.draClient().NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(clash)}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Claims[string(clash.UID)]; r == nil || !strings.Contains(r.Error, "already prepared for claim default/fresh") {
		t.Errorf("a claim on the live claim's GPU: %+v, want refused", r)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.PluginDataDir(), "claims", "uid-bench-0.json")); !os.IsNotExist(err) {
		t.Errorf("record of the stale claim bench-0: %v, want it removed", err)
	}
	if n := len(h.plugin.State().PreparedClaims()); n != 8 {
		t.Errorf("%d claims prepared, want fresh and the 7 stale claims no prepare needed yet", n)
	}
	body := get(t, "http://"+h.plugin.MetricsAddr().String()+"/metrics")
	if !strings.Contains(body, `gpudra_stale_claims_removed_total{trigger="prepare"} 1`) {
		t.Errorf("metrics lack gpudra_stale_claims_removed_total{trigger=\"prepare\"} 1")
	}
	events := staleEvents(t, h)
	if len(events) != 1 || !strings.Contains(events[0].Message, "default/bench-0") || !strings.Contains(events[0].Message, "claim default/fresh needed its device gpu-0") {
		t.Errorf("events %v, want one naming bench-0 and fresh", messages(events))
	}

	// With a grace period the records are past, the sweep removes the
	// other 7 stale claims at start-up, and never the live one.
	h.plugin.Stop()
	h.cfg.StaleClaims = plugin.StaleClaimsConfig{GracePeriod: time.Millisecond, SweepInterval: 20 * time.Millisecond}
	h.start()
	deadline := time.Now().Add(20 * time.Second)
	for len(h.plugin.State().PreparedClaims()) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("prepared claims after 20s of sweeping: %v, want only fresh's", h.plugin.State().PreparedClaims())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := h.plugin.State().PreparedClaims(); !slices.Equal(got, []string{string(fresh.UID)}) {
		t.Errorf("prepared claims %v, want fresh's", got)
	}
	if entries, _ := os.ReadDir(filepath.Join(h.cfg.PluginDataDir(), "claims")); len(entries) != 1 || !strings.Contains(entries[0].Name(), string(fresh.UID)) {
		t.Errorf("the checkpoint holds %v, want only fresh's record", names(entries))
	}
	// Exclusive claims have no spec of their own: none is left.
	if files := specFiles(t, h.cfg.Node.CDIRoot); !slices.Equal(files, []string{"k8s.gpu.nvidia.com-device.json", "k8s.gpu.nvidia.com-driver.json"}) {
		t.Errorf("%s holds %v, want only the static device and driver-wide specs", h.cfg.Node.CDIRoot, files)
	}
	body = get(t, "http://"+h.plugin.MetricsAddr().String()+"/metrics")
	if !strings.Contains(body, `gpudra_stale_claims_removed_total{trigger="sweep"} 7`) {
		t.Errorf("metrics lack gpudra_stale_claims_removed_total{trigger=\"sweep\"} 7")
	}
	events = staleEvents(t, h)
	swept := map[string]bool{}
	for _, ev := range events {
		if strings.Contains(ev.Message, "the periodic check found it") {
			for i := 1; i < 8; i++ {
				if strings.Contains(ev.Message, fmt.Sprintf("default/bench-%d (uid uid-bench-%d)", i, i)) {
					swept[fmt.Sprint(i)] = true
				}
			}
		}
	}
	if len(events) != 8 || len(swept) != 7 {
		t.Errorf("events %v, want one per stale claim", messages(events))
	}

	// Every GPU is free for new claims.
	for i := 1; i < 8; i++ {
		prepare(t, h, h.createClaim(fmt.Sprintf("next-%d", i), fmt.Sprintf("gpu-%d", i)), "")
	}
	if n := len(h.plugin.State().PreparedClaims()); n != 8 {
		t.Errorf("%d claims prepared, want fresh and the 7 new ones", n)
	}
}

// staleEvents returns the StaleClaimRemoved events on the node.
func staleEvents(t *testing.T, h *harness) []corev1.Event {
	t.Helper()
	list, err := h.client.CoreV1().Events(metav1.NamespaceDefault).List(h.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, ev := range list.Items {
		if ev.Reason != plugin.ReasonStaleClaimRemoved {
			continue
		}
		if ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != nodeName {
			t.Errorf("event %s: type %s on %s %s, want a Warning on node %s", ev.Name, ev.Type, ev.InvolvedObject.Kind, ev.InvolvedObject.Name, nodeName)
		}
		out = append(out, ev)
	}
	return out
}

func messages(events []corev1.Event) []string {
	var out []string
	for _, ev := range events {
		out = append(out, ev.Message)
	}
	return out
}

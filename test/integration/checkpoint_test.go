package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gpudra/gpudra/pkg/plugin"
)

// An unreadable claim checkpoint never stops the plugin: it starts, serves,
// and says so in a Warning event on the node (besides its log and metric).
func TestUnreadableCheckpointIsReportedOnTheNode(t *testing.T) {
	h := newStoppedHarness(t)
	claims := filepath.Join(h.cfg.PluginDataDir(), "claims")
	if err := os.MkdirAll(claims, 0o750); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(claims, "f3b1c7a2-0000-4000-8000-000000000001.json")
	if err := os.WriteFile(bad, []byte(`{"version":"v1","claimUID":`), 0o600); err != nil {
		t.Fatal(err)
	}
	h.cfg.Metrics.Address = "127.0.0.1:0"
	h.start()

	events, err := h.client.CoreV1().Events(metav1.NamespaceDefault).List(h.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range events.Items {
		if ev.Reason == plugin.ReasonCheckpointUnreadable && ev.Type == "Warning" &&
			ev.InvolvedObject.Kind == "Node" && ev.InvolvedObject.Name == nodeName && strings.Contains(ev.Message, bad) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no Warning event naming %s on node %s: %+v", bad, nodeName, events.Items)
	}
	body := get(t, "http://"+h.plugin.MetricsAddr().String()+"/metrics")
	if !strings.Contains(body, "gpudra_checkpoint_load_errors_total 1") {
		t.Error("gpudra_checkpoint_load_errors_total is not 1")
	}
	if _, err := os.Stat(bad); err != nil {
		t.Errorf("the unreadable file was not left in place for the operator: %v", err)
	}
}

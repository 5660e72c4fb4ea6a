package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	drahealth "k8s.io/kubelet/pkg/apis/dra-health/v1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/gpudra/gpudra/pkg/mockmachine"
	"github.com/gpudra/gpudra/pkg/plugin"
)

// TestBrokenGPUDoesNotTakeTheNodeDown: the plugin starts on a mock DGX
// H100 whose GPU 5 is lost at discovery (the mock faults file). It serves
// the 7 others, publishes gpu-5 tainted, reports it (a Warning event on the
// node, gpudra_unusable_gpus, Unhealthy in the kubelet's health stream),
// prepares a claim on a healthy GPU and refuses one on gpu-5 with the fix.
func TestBrokenGPUDoesNotTakeTheNodeDown(t *testing.T) {
	h := newStoppedHarness(t)
	h.cfg.Metrics.Address = "127.0.0.1:0"
	h.cfg.Health.Enabled = true
	if err := os.WriteFile(filepath.Join(h.cfg.Node.DriverRoot, mockmachine.FaultsFile), []byte("5 memory GPU_IS_LOST\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.start()
	inv := h.plugin.Inventory()
	if len(inv.Devices) != 7 || len(inv.Unusable) != 1 || inv.Unusable[0].Index != 5 {
		t.Fatalf("inventory: %d GPUs, unusable %+v", len(inv.Devices), inv.Unusable)
	}

	// The slices: 7 healthy GPUs, then gpu-5 with its taint.
	var slice resourceapi.ResourceSlice
	deadline := time.Now().Add(10 * time.Second)
	for {
		slices, err := h.client.ResourceV1().ResourceSlices().List(h.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(slices.Items) == 1 {
			slice = slices.Items[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d slices after 10s", len(slices.Items))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(slice.Spec.Devices) != 8 {
		t.Fatalf("%d devices published, want 7 healthy and gpu-5", len(slice.Spec.Devices))
	}
	for i, d := range slice.Spec.Devices {
		if d.Name == "gpu-5" {
			if i != 7 || len(d.Taints) != 1 || d.Taints[0].Key != driverName+"/unhealthy" || d.Taints[0].Value != "gpu-lost" ||
				d.Taints[0].Effect != resourceapi.DeviceTaintEffectNoSchedule {
				t.Errorf("gpu-5 at %d with taints %+v, want last with %s/unhealthy=gpu-lost:NoSchedule", i, d.Taints, driverName)
			}
			if u := d.Attributes["uuid"].StringValue; u == nil || *u != inv.Unusable[0].UUID {
				t.Errorf("gpu-5 uuid %v, want %s", u, inv.Unusable[0].UUID)
			}
			continue
		}
		if len(d.Taints) != 0 {
			t.Errorf("healthy %s is tainted: %+v", d.Name, d.Taints)
		}
	}

	// The Warning event on the node names the GPU and the fix.
	events, err := h.client.CoreV1().Events(metav1.NamespaceDefault).List(h.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range events.Items {
		if ev.Reason != plugin.ReasonGPUUnusable {
			continue
		}
		found = true
		if ev.Type != "Warning" || ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != nodeName {
			t.Errorf("event %+v", ev)
		}
		for _, want := range []string{"GPU 5", inv.Unusable[0].UUID, "GPU_IS_LOST", "gpu-5", "nvidia-smi -r -i 5", "drain the node"} {
			if !strings.Contains(ev.Message, want) {
				t.Errorf("event message %q does not say %q", ev.Message, want)
			}
		}
	}
	if !found {
		t.Errorf("no %s event among %d", plugin.ReasonGPUUnusable, len(events.Items))
	}

	// A claim on a healthy GPU is prepared; one on gpu-5 is refused.
	client := h.draClient()
	good := h.createClaim("good", "gpu-0")
	broken := h.createClaim("broken", "gpu-5")
	resp, err := client.NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(good), ref(broken)}})
	if err != nil {
		t.Fatal(err)
	}
	if r := resp.Claims[string(good.UID)]; r == nil || r.Error != "" || len(r.Devices) != 1 {
		t.Errorf("claim on gpu-0: %+v", r)
	}
	r := resp.Claims[string(broken.UID)]
	if r == nil || r.Error == "" || len(r.Devices) != 0 {
		t.Fatalf("claim on gpu-5: %+v", r)
	}
	for _, want := range []string{"default/broken", "gpu-5", "GPU 5", "GPU_IS_LOST", "nvidia-smi -r -i 5", "delete the pod"} {
		if !strings.Contains(r.Error, want) {
			t.Errorf("error %q does not say %q", r.Error, want)
		}
	}

	// The kubelet's health stream reports gpu-5 Unhealthy, the others not.
	health := drahealth.NewDRAResourceHealthClient(h.dial(filepath.Join(h.cfg.PluginDataDir(), "dra.sock")))
	stream, err := health.NodeWatchResources(h.ctx, &drahealth.NodeWatchResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	report, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range report.GetDevices() {
		unhealthy := d.GetHealth() == drahealth.HealthStatus_UNHEALTHY
		if name := d.GetDevice().GetDeviceName(); (name == "gpu-5") != unhealthy {
			t.Errorf("%s: %s %q", name, d.GetHealth(), d.GetMessage())
		} else if unhealthy && !strings.Contains(d.GetMessage(), "nvidia-smi -r -i 5") {
			t.Errorf("gpu-5 health message %q lacks the fix", d.GetMessage())
		}
	}
	if len(report.GetDevices()) != 8 {
		t.Errorf("health of %d devices, want 8", len(report.GetDevices()))
	}

	body := get(t, "http://"+h.plugin.MetricsAddr().String()+"/metrics")
	for _, want := range []string{"gpudra_unusable_gpus 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

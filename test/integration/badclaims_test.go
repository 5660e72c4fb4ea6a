package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
)

// allocated builds an allocated claim; results name "pool/device" or just
// "device" (this node's pool).
func allocated(name, uid string, devices ...string) *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(uid)},
		Status:     resourceapi.ResourceClaimStatus{Allocation: &resourceapi.AllocationResult{}},
	}
	for _, d := range devices {
		pool := nodeName
		if p, dev, ok := strings.Cut(d, "/"); ok {
			pool, d = p, dev
		}
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results, resourceapi.DeviceRequestAllocationResult{
			Request: "gpus", Driver: driverName, Pool: pool, Device: d,
		})
	}
	return c
}

// withConfig adds an opaque claim config for driver.
func withConfig(c *resourceapi.ResourceClaim, driver, params string) *resourceapi.ResourceClaim {
	c.Status.Allocation.Devices.Config = append(c.Status.Allocation.Devices.Config, resourceapi.DeviceAllocationConfiguration{
		Source: resourceapi.AllocationConfigSourceClaim,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver: driver, Parameters: runtime.RawExtension{Raw: []byte(params)},
		}},
	})
	return c
}

func (h *harness) store(c *resourceapi.ResourceClaim) *resourceapi.ResourceClaim {
	h.t.Helper()
	c, err := h.client.ResourceV1().ResourceClaims(c.Namespace).Create(h.ctx, c, metav1.CreateOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// TestBadClaimsFailAloneWithClearErrors sends good and bad claims in one
// NodePrepareResources call, the way the kubelet batches the claims of a
// pod: each bad claim gets an error that names it and its problem, the good
// ones are prepared, and the bad ones leave no spec and no record.
func TestBadClaimsFailAloneWithClearErrors(t *testing.T) {
	h := newHarness(t)
	client := h.draClient()
	holder := h.store(allocated("holder", "uid-holder", "gpu-7"))
	resp, err := client.NodePrepareResources(h.ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(holder)}})
	if err != nil || resp.Claims[string(holder.UID)].Error != "" {
		t.Fatalf("holder: %v %+v", err, resp)
	}

	const gpuConfig = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Long"}}}`
	good := []*resourceapi.ResourceClaim{
		h.store(allocated("good-plain", "uid-good-plain", "gpu-0")),
		// A config of another driver in the claim is that driver's business.
		h.store(withConfig(withConfig(allocated("good-configs", "uid-good-configs", "gpu-1"),
			driverName, gpuConfig), "nic.example.com", `{"apiVersion":"nic.example.com/v1","kind":"NicConfig","mtu":9000}`)),
	}
	bad := []struct {
		claim *resourceapi.ResourceClaim
		want  []string
	}{
		{h.store(withConfig(allocated("foreign-config", "uid-foreign-config", "gpu-2"), driverName, `{"apiVersion":"nic.example.com/v1","kind":"NicConfig"}`)),
			[]string{"default/foreign-config", "nic.example.com/v1"}},
		{h.store(withConfig(allocated("unknown-kind", "uid-unknown-kind", "gpu-3"), driverName, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"TpuConfig"}`)),
			[]string{"default/unknown-kind", "TpuConfig"}},
		{h.store(withConfig(allocated("unknown-field", "uid-unknown-field", "gpu-4"), driverName, `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","bogus":1}}`)),
			[]string{"default/unknown-field", "bogus"}},
		{h.store(allocated("other-node", "uid-other-node", "node-b/gpu-5")),
			[]string{"default/other-node", `"node-b"`, "another node"}},
		{h.store(allocated("in-use", "uid-in-use", "gpu-7")),
			[]string{"default/in-use", "gpu-7", "already prepared for claim default/holder"}},
		{h.store(allocated("path-uid", "../../etc/cron.d/x", "gpu-6")),
			[]string{"default/path-uid", "invalid claim UID", "metadata.uid"}},
	}
	req := &drapb.NodePrepareResourcesRequest{}
	for _, c := range good {
		req.Claims = append(req.Claims, ref(c))
	}
	for _, b := range bad {
		req.Claims = append(req.Claims, ref(b.claim))
	}
	resp, err = client.NodePrepareResources(h.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range good {
		r := resp.Claims[string(c.UID)]
		if r == nil || r.Error != "" || len(r.Devices) != 1 {
			t.Errorf("good claim %s next to bad ones: %+v", c.Name, r)
		}
	}
	for _, b := range bad {
		r := resp.Claims[string(b.claim.UID)]
		if r == nil || r.Error == "" {
			t.Errorf("bad claim %s: no error: %+v", b.claim.Name, r)
			continue
		}
		if len(r.Devices) != 0 {
			t.Errorf("bad claim %s got devices %v", b.claim.Name, r.Devices)
		}
		for _, w := range b.want {
			if !strings.Contains(r.Error, w) {
				t.Errorf("bad claim %s: error %q does not say %q", b.claim.Name, r.Error, w)
			}
		}
	}

	// Only the good claims and the holder have a spec and a record.
	specs, _ := os.ReadDir(h.cfg.Node.CDIRoot)
	if len(specs) != 4 {
		t.Errorf("CDI specs: %v, want the driver-wide one and those of holder, good-plain and good-configs", names(specs))
	}
	records, _ := os.ReadDir(filepath.Join(h.cfg.PluginDataDir(), "claims"))
	if len(records) != 3 {
		t.Errorf("checkpoint records: %v, want those of holder, good-plain and good-configs", names(records))
	}
	// Nothing escaped the directories through the claim UID.
	if _, err := os.Stat(filepath.Join(h.cfg.Node.CDIRoot, "..", "..", "etc")); !os.IsNotExist(err) {
		t.Errorf("a claim UID with path characters created a directory outside the CDI root: %v", err)
	}
}

//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/api/metadata"
	"k8s.io/dynamic-resource-allocation/devicemetadata"
	"k8s.io/utils/ptr"

	"github.com/gpudra/gpudra/pkg/devicestatus"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// TestDeviceStatus: once the pod of a claim runs, the claim's
// status.devices holds the entry of its GPU, written by the plugin: the
// GPU's UUID, product name and PCI bus ID as published, and Ready=True.
func TestDeviceStatus(t *testing.T) {
	draMode(t)
	c := client(t)
	const ns = "e2e-devstatus"
	t.Cleanup(func() { deleteNamespace(t, ns) })
	applyClaimTemplate(t, ns, "gpu", driverName, `device.attributes["`+driverName+`"].type == "gpu"`)
	applyClaimPod(t, ns, "pod", "dev", "gpu", "sleep 3600")
	pod := waitPodRunning(t, c, ns, "pod")
	_, device := allocatedDevice(t, c, pod)
	published := publishedDevice(t, c, device)
	if published == nil {
		t.Fatalf("device %s is not published", device)
	}
	want := devicestatus.DataFromAttributes(published.Attributes)
	if want.UUID == "" || want.ProductName == "" || want.PCIBusID == "" {
		t.Fatalf("published device %s lacks uuid, productName or pciBusID: %+v", device, want)
	}
	eventually(t, time.Minute, "the claim's device status", func() (bool, string) {
		claim := podClaim(t, c, pod)
		var entry *resourceapi.AllocatedDeviceStatus
		for i := range claim.Status.Devices {
			if d := &claim.Status.Devices[i]; d.Driver == driverName && d.Device == device {
				entry = d
			}
		}
		if entry == nil {
			return false, "no entry for " + device + " in status.devices"
		}
		if entry.Data == nil {
			return false, "entry without data"
		}
		var got devicestatus.Data
		if err := json.Unmarshal(entry.Data.Raw, &got); err != nil {
			return false, err.Error()
		}
		if got != want {
			return false, "data " + string(entry.Data.Raw)
		}
		for _, cond := range entry.Conditions {
			if cond.Type == devicestatus.ConditionReady && cond.Status == metav1.ConditionTrue {
				return true, ""
			}
		}
		return false, "no Ready=True condition"
	})
}

// TestDeviceMetadata: the container of a claim's pod finds the standard
// device metadata file (KEP-5304) of its request, mounted by CDI, and it
// names the allocated GPU with the attributes its ResourceSlice publishes.
func TestDeviceMetadata(t *testing.T) {
	draMode(t)
	c := client(t)
	if !metadataEnabled(t, c) {
		if os.Getenv("GPUDRA_E2E_DEVICE_METADATA") != "" {
			t.Fatal("GPUDRA_E2E_DEVICE_METADATA is set (hack/e2e.sh's device metadata phase) but the plugin runs without DEVICE_METADATA=true (chart value deviceMetadata.enabled)")
		}
		t.Skip("the plugin runs without DEVICE_METADATA=true (chart value deviceMetadata.enabled)")
	}
	const ns = "e2e-devmetadata"
	t.Cleanup(func() { deleteNamespace(t, ns) })
	path := metadata.ResourceClaimTemplateFilePath(driverName, "dev", "dev")
	applyClaimTemplate(t, ns, "gpu", driverName, `device.attributes["`+driverName+`"].type == "gpu"`)
	applyClaimPod(t, ns, "pod", "dev", "gpu", "sleep 3600")
	pod := waitPodRunning(t, c, ns, "pod")
	_, device := allocatedDevice(t, c, pod)
	published := publishedDevice(t, c, device)
	if published == nil {
		t.Fatalf("device %s is not published", device)
	}
	claim := podClaim(t, c, pod)
	raw := kubectl(t, "-n", ns, "exec", "pod", "--", "cat", path)
	var md metadata.DeviceMetadata
	var gvk schema.GroupVersionKind
	var validation error
	if err := devicemetadata.DecodeMetadataFromStream(json.NewDecoder(strings.NewReader(raw)), &md,
		devicemetadata.DecodeMetadataStoreGVKResult(&gvk), devicemetadata.DecodeMetadataWithValidationResult(&validation)); err != nil {
		t.Fatalf("decoding %s: %v\n%s", path, err, raw)
	}
	if validation != nil {
		t.Errorf("%s does not validate: %v", path, validation)
	}
	t.Logf("%s (%s): claim %s/%s, %d requests", path, gvk, md.Namespace, md.Name, len(md.Requests))
	if md.UID != claim.UID || ptr.Deref(md.PodClaimName, "") != "dev" {
		t.Errorf("metadata of claim UID %s, pod claim %v; want %s, dev", md.UID, md.PodClaimName, claim.UID)
	}
	if len(md.Requests) != 1 || md.Requests[0].Name != "dev" || len(md.Requests[0].Devices) != 1 {
		t.Fatalf("requests %+v, want request dev with one device", md.Requests)
	}
	d := md.Requests[0].Devices[0]
	if d.Driver != driverName || d.Name != device {
		t.Errorf("device %s/%s, want %s/%s", d.Driver, d.Name, driverName, device)
	}
	for _, attr := range []resourceapi.QualifiedName{resourceslice.AttrUUID, resourceslice.AttrProductName, resourceslice.AttrPCIBusID, resourceslice.AttrIndex} {
		got, want := d.Attributes[attr], published.Attributes[attr]
		if ptr.Deref(got.StringValue, "") != ptr.Deref(want.StringValue, "") || ptr.Deref(got.IntValue, -1) != ptr.Deref(want.IntValue, -1) {
			t.Errorf("attribute %s: %+v, published %+v", attr, got, want)
		}
	}
	if len(d.Attributes) != len(published.Attributes) {
		t.Errorf("%d attributes in the metadata, %d published", len(d.Attributes), len(published.Attributes))
	}
}

// metadataEnabled tells whether the plugin pods run with DEVICE_METADATA=true.
func metadataEnabled(t *testing.T, c kubernetes.Interface) bool {
	t.Helper()
	for _, p := range pluginPods(t, c) {
		for _, ctr := range p.Spec.Containers {
			for _, e := range ctr.Env {
				if e.Name == "DEVICE_METADATA" && e.Value == "true" {
					return true
				}
			}
		}
	}
	return false
}

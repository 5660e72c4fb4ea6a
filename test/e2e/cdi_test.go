//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/checkpoint"
	nodedevices "github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// How the plugin prepares a claim for CDI: an exclusive claim without
// settings of its own (no sharing config, no share of a GPU with limits, no
// dynamic MIG device) gets no claim spec in cdiRoot; its devices get the IDs
// of the static device spec (k8s.gpu.nvidia.com-device.json, written at the
// plugin's start-up), Naming.StaticDeviceIDs. Any other claim gets a claim
// spec (k8s.gpu.nvidia.com-claim_<uid>.json), referenced by Naming.DeviceIDs.
// Either way the driver-wide spec (k8s.gpu.nvidia.com-driver.json) holds
// what every container of the driver gets. The prepared claims are told by
// the plugin's checkpoint (claimStore), not by the spec files.

// claimStore is the plugin's checkpoint of the prepared claims on this node.
func claimStore(t *testing.T) *checkpoint.Store {
	t.Helper()
	store, err := checkpoint.NewStore(filepath.Join(envOr("GPUDRA_E2E_KUBELET_DIR", "/var/lib/kubelet"), "plugins", driverName, "claims"))
	if err != nil {
		t.Fatal(err)
	}
	return store
}

// claimSettings returns what the allocation result r of claim has of its
// own that needs a claim spec ("" for nothing): a dynamic MIG device (a MIG
// device that consumes its GPU's counters), a share of a GPU that leaves
// room for others (less than all of its memory, or of its compute shares),
// or a config of this driver with a sharing strategy that applies to its
// request. dev is the device as published.
func claimSettings(t *testing.T, claim *resourceapi.ResourceClaim, r resourceapi.DeviceRequestAllocationResult, dev *resourceapi.Device) string {
	t.Helper()
	if ptr.Deref(dev.Attributes[resourceslice.AttrType].StringValue, "") == string(nodedevices.KindMIG) && len(dev.ConsumesCounters) > 0 {
		return "a dynamic MIG device"
	}
	if r.ShareID != nil {
		mem := r.ConsumedCapacity[resourceslice.CapacityMemory]
		if whole, ok := dev.Capacity[resourceslice.CapacityMemory]; ok && mem.Cmp(whole.Value) < 0 {
			return "a share of " + mem.String() + " of the GPU's memory"
		}
		if n, ok := r.ConsumedCapacity[resourceslice.CapacityShares]; ok {
			if whole, ok := dev.Capacity[resourceslice.CapacityShares]; ok && n.Cmp(whole.Value) < 0 {
				return "a share of " + n.String() + " of the GPU's compute shares"
			}
		}
	}
	request, _, _ := strings.Cut(r.Request, "/") // a subrequest's request
	for _, cfg := range claim.Status.Allocation.Devices.Config {
		if cfg.Opaque == nil || cfg.Opaque.Driver != driverName {
			continue
		}
		if len(cfg.Requests) > 0 && !slices.Contains(cfg.Requests, r.Request) && !slices.Contains(cfg.Requests, request) {
			continue
		}
		var params struct {
			Sharing json.RawMessage `json:"sharing"`
		}
		if err := json.Unmarshal(cfg.Opaque.Parameters.Raw, &params); err != nil {
			t.Fatalf("claim %s/%s: opaque config of %s: %v", claim.Namespace, claim.Name, driverName, err)
		}
		if len(params.Sharing) > 0 && string(params.Sharing) != "null" {
			return "a sharing config"
		}
	}
	return ""
}

// readSpecIn reads the CDI spec file name of cdiRoot; nil when it is
// missing or invalid, with an error.
func readSpecIn(t *testing.T, name string) *cdiapi.Spec {
	t.Helper()
	spec, err := cdiapi.ReadSpec(filepath.Join(cdiRoot, name), 0)
	if err != nil {
		t.Errorf("CDI spec %s: %v", name, err)
		return nil
	}
	return spec
}

// checkClaimCDI checks how the plugin prepared claim (of a running pod) for
// CDI, and returns whether it has a claim spec: the record of the claim
// names, per device of this driver, the IDs of the static device spec when
// no result of the claim has settings of its own (claimSettings), and then
// no claim spec exists; else the IDs of its claim spec, which exists. The
// driver-wide spec exists, and every ID names a device of its spec.
func checkClaimCDI(t *testing.T, c kubernetes.Interface, store *checkpoint.Store, claim *resourceapi.ResourceClaim) bool {
	t.Helper()
	ref := claim.Namespace + "/" + claim.Name
	uid := string(claim.UID)
	var settings []string
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver != driverName {
			continue
		}
		dev := publishedDevice(t, c, r.Device)
		if dev == nil {
			t.Fatalf("claim %s: device %s is not published", ref, r.Device)
		}
		if s := claimSettings(t, claim, r, dev); s != "" {
			settings = append(settings, r.Device+": "+s)
		}
	}
	static := len(settings) == 0
	rec, err := store.Get(uid)
	if err != nil || rec == nil {
		t.Errorf("claim %s of a running pod is not recorded in the plugin's checkpoint: %v", ref, err)
		return !static
	}
	n := cdi.NewNaming(driverName)
	specName := n.SpecFileName(uid)
	_, err = os.Stat(filepath.Join(cdiRoot, specName))
	hasSpec := err == nil
	var claimSpec *cdiapi.Spec
	switch {
	case static && hasSpec:
		t.Errorf("claim %s has no settings of its own, but a claim spec %s", ref, specName)
	case !static && !hasSpec:
		t.Errorf("claim %s has settings of its own (%s), but no claim spec %s in %s: %v", ref, strings.Join(settings, ", "), specName, cdiRoot, err)
	case !static:
		claimSpec = readSpecIn(t, specName)
	}
	driverSpec := readSpecIn(t, n.DriverSpecFileName())
	var deviceSpec *cdiapi.Spec
	if static {
		deviceSpec = readSpecIn(t, n.DeviceSpecFileName())
	}
	for _, d := range rec.Devices {
		want := n.DeviceIDs(uid, d.Device)
		if static {
			want = n.StaticDeviceIDs(d.Device)
		}
		if !slices.Equal(d.CDIDeviceIDs, want) {
			t.Errorf("claim %s: device %s is prepared with the CDI IDs %v, want %v (settings of its own: %v)", ref, d.Device, d.CDIDeviceIDs, want, settings)
		}
		for _, id := range want {
			kind, name, _ := strings.Cut(id, "=")
			var in *cdiapi.Spec
			switch kind {
			case n.DriverKind():
				in = driverSpec
			case n.DeviceKind():
				in = deviceSpec
			case n.Kind():
				in = claimSpec
			}
			if in != nil && in.GetDevice(name) == nil {
				t.Errorf("claim %s: the CDI spec %s lacks the device %s of ID %s", ref, filepath.Base(in.GetPath()), name, id)
			}
		}
	}
	return !static
}

// podClaims returns the ResourceClaims of pod by the pod's claim names; a
// claim that cannot be read is left out with an error when lenient, else
// fails the test.
func podClaims(t *testing.T, c kubernetes.Interface, pod *corev1.Pod, lenient bool) map[string]*resourceapi.ResourceClaim {
	t.Helper()
	fail := t.Fatalf
	if lenient {
		fail = t.Logf
	}
	// A pod claim names a ResourceClaim directly, or a template whose
	// generated claim the pod's status names.
	generated := map[string]string{}
	for _, st := range pod.Status.ResourceClaimStatuses {
		if st.ResourceClaimName != nil {
			generated[st.Name] = *st.ResourceClaimName
		}
	}
	out := map[string]*resourceapi.ResourceClaim{}
	for _, pc := range pod.Spec.ResourceClaims {
		name := generated[pc.Name]
		if pc.ResourceClaimName != nil {
			name = *pc.ResourceClaimName
		}
		if name == "" {
			fail("pod %s: claim %s has no ResourceClaim", pod.Name, pc.Name)
			continue
		}
		claim, err := c.ResourceV1().ResourceClaims(pod.Namespace).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			fail("pod %s: claim %s: %v", pod.Name, name, err)
			continue
		}
		out[pc.Name] = claim
	}
	return out
}

// waveClaimUIDs returns the UIDs of the claims of the pods of wave that the
// API server still has (all of them, before the pods are deleted).
func waveClaimUIDs(t *testing.T, c kubernetes.Interface, wave string) []types.UID {
	t.Helper()
	list, err := c.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{LabelSelector: "gpudra.demo/wave=" + wave})
	if err != nil {
		t.Fatal(err)
	}
	var uids []types.UID
	for i := range list.Items {
		for _, claim := range podClaims(t, c, &list.Items[i], true) {
			if !slices.Contains(uids, claim.UID) {
				uids = append(uids, claim.UID)
			}
		}
	}
	return uids
}

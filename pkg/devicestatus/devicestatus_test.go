package devicestatus

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/gpudra/gpudra/pkg/resourceslice"
)

const (
	driver = "gpu.nvidia.com"
	pool   = "node-a"
)

func str(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }

var lookup = map[string]Data{
	"gpu-0": DataFromAttributes(map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		resourceslice.AttrUUID: str("GPU-0"), resourceslice.AttrProductName: str("NVIDIA H100 80GB HBM3"),
		resourceslice.AttrPCIBusID: str("0000:1a:00.0"), resourceslice.AttrType: str("gpu"),
		resourceslice.AttrIndex: {IntValue: ptr.To[int64](0)},
	}),
	"gpu-1-mig-1g-10gb-0": DataFromAttributes(map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		resourceslice.AttrUUID: str("MIG-1"), resourceslice.AttrProductName: str("NVIDIA H100 80GB HBM3"),
		resourceslice.AttrPCIBusID: str("0000:1b:00.0"), resourceslice.AttrParentUUID: str("GPU-1"),
		resourceslice.AttrProfile: str("1g.10gb"), resourceslice.AttrType: str("mig"),
	}),
}

func testClaim() *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "ns", UID: "uid-1", Generation: 2},
		Status: resourceapi.ResourceClaimStatus{
			Allocation: &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
				{Request: "gpu", Driver: driver, Pool: pool, Device: "gpu-0"},
				{Request: "nic", Driver: "nic.example.com", Pool: pool, Device: "eth0"},
				{Request: "mig", Driver: driver, Pool: pool, Device: "gpu-1-mig-1g-10gb-0", ShareID: ptr.To(types.UID("share-1"))},
				{Request: "other", Driver: driver, Pool: "node-b", Device: "gpu-0"},
			}}},
			// Another driver's entry, which the write must keep.
			Devices: []resourceapi.AllocatedDeviceStatus{{Driver: "nic.example.com", Pool: pool, Device: "eth0",
				Data: nil, NetworkData: &resourceapi.NetworkDeviceData{InterfaceName: "eth0"}}},
		},
	}
}

func TestDataFromAttributes(t *testing.T) {
	want := Data{UUID: "MIG-1", ProductName: "NVIDIA H100 80GB HBM3", PCIBusID: "0000:1b:00.0", ParentUUID: "GPU-1", Profile: "1g.10gb", Type: "mig"}
	if got := lookup["gpu-1-mig-1g-10gb-0"]; got != want {
		t.Errorf("MIG data %+v, want %+v", got, want)
	}
	raw, _ := json.Marshal(lookup["gpu-0"])
	if got, want := string(raw), `{"uuid":"GPU-0","productName":"NVIDIA H100 80GB HBM3","pciBusID":"0000:1a:00.0","type":"gpu"}`; got != want {
		t.Errorf("GPU data %s, want %s (no parent or profile)", got, want)
	}
}

func TestEntries(t *testing.T) {
	got := Entries(testClaim(), driver, pool, func(d string) Data { return lookup[d] })
	want := []Entry{
		{Pool: pool, Device: "gpu-0", Data: lookup["gpu-0"]},
		{Pool: pool, Device: "gpu-1-mig-1g-10gb-0", ShareID: "share-1", Data: lookup["gpu-1-mig-1g-10gb-0"]},
	}
	if len(got) != len(want) {
		t.Fatalf("entries %+v, want %+v (only this driver's devices of this pool)", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	unallocated := testClaim()
	unallocated.Status.Allocation = nil
	if e := Entries(unallocated, driver, pool, func(string) Data { return Data{} }); e != nil {
		t.Errorf("entries of an unallocated claim: %+v", e)
	}
}

// TestWrite applies the status through the fake clientset's server-side
// apply: the driver's entries carry the data and a Ready condition, the other
// driver's entry stays, and a second write is skipped as up to date.
func TestWrite(t *testing.T) {
	claim := testClaim()
	client := fake.NewClientset(claim)
	w := &Writer{Client: client, DriverName: driver, Pool: pool, Lookup: func(d string) Data { return lookup[d] }}
	ctx := context.Background()
	written, err := w.Write(ctx, claim)
	if err != nil || !written {
		t.Fatalf("Write: written %v, err %v", written, err)
	}
	got, err := client.ResourceV1().ResourceClaims("ns").Get(ctx, "c", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byDevice := map[string]resourceapi.AllocatedDeviceStatus{}
	for _, d := range got.Status.Devices {
		byDevice[d.Driver+"/"+d.Device] = d
	}
	if len(byDevice) != 3 {
		t.Fatalf("status.devices %+v, want the other driver's entry and two of ours", got.Status.Devices)
	}
	if d := byDevice["nic.example.com/eth0"]; d.NetworkData == nil || d.NetworkData.InterfaceName != "eth0" {
		t.Errorf("the other driver's entry changed: %+v", d)
	}
	for _, name := range []string{"gpu-0", "gpu-1-mig-1g-10gb-0"} {
		d := byDevice[driver+"/"+name]
		var data Data
		if d.Data == nil || json.Unmarshal(d.Data.Raw, &data) != nil || data != lookup[name] {
			t.Errorf("%s: data %v, want %+v", name, d.Data, lookup[name])
		}
		if len(d.Conditions) != 1 || d.Conditions[0].Type != ConditionReady || d.Conditions[0].Status != metav1.ConditionTrue ||
			d.Conditions[0].ObservedGeneration != 2 || d.Conditions[0].LastTransitionTime.IsZero() {
			t.Errorf("%s: conditions %+v, want Ready=True for generation 2", name, d.Conditions)
		}
	}
	if d := byDevice[driver+"/gpu-1-mig-1g-10gb-0"]; ptrString(d.ShareID) != "share-1" {
		t.Errorf("MIG entry share ID %v, want share-1", d.ShareID)
	}
	if !UpToDate(got, driver, Entries(got, driver, pool, w.Lookup)) {
		t.Error("the written status is not up to date")
	}
	if written, err := w.Write(ctx, got); err != nil || written {
		t.Errorf("second Write: written %v, err %v; want skipped", written, err)
	}
}

// TestApplyKeepsTransitionTime: a device already Ready keeps its transition
// time when its data changes.
func TestApplyKeepsTransitionTime(t *testing.T) {
	claim := testClaim()
	then := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	claim.Status.Devices = append(claim.Status.Devices, resourceapi.AllocatedDeviceStatus{Driver: driver, Pool: pool, Device: "gpu-0",
		Conditions: []metav1.Condition{{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonPrepared, ObservedGeneration: 2, LastTransitionTime: then}}})
	entries := Entries(claim, driver, pool, func(d string) Data { return lookup[d] })
	if UpToDate(claim, driver, entries) {
		t.Fatal("up to date without data")
	}
	ac, err := ApplyConfiguration(claim, driver, entries, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if *ac.UID != claim.UID {
		t.Errorf("UID precondition %v, want %v", *ac.UID, claim.UID)
	}
	if got := *ac.Status.Devices[0].Conditions[0].LastTransitionTime; !got.Equal(&then) {
		t.Errorf("transition time %v, want %v", got, then)
	}
	if got := *ac.Status.Devices[1].Conditions[0].LastTransitionTime; got.Equal(&then) {
		t.Error("the new entry got the old transition time")
	}
}

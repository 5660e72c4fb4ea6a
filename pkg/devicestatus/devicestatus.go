// Package devicestatus builds and writes the driver's entries of a prepared
// ResourceClaim's status.devices (KEP-4817): one entry per device the claim
// was allocated from this driver's pool, with the GPU's identity in data and
// a Ready condition.
//
// The entries are written with server-side apply under the driver's own
// field manager: status.devices is a map list keyed by driver, pool, device
// and shareID, so other drivers' entries (and the allocation the scheduler
// owns) are never touched.
package devicestatus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	resourceac "k8s.io/client-go/applyconfigurations/resource/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// Condition values of the Ready condition the driver sets.
const (
	ConditionReady = "Ready"
	ReasonPrepared = "Prepared"
)

// Data is the JSON object in status.devices[].data of one device. Empty
// fields are left out: a MIG device made on demand has no UUID in the
// ResourceSlice, a full GPU has no parent or profile.
type Data struct {
	// UUID is the GPU's or MIG device's UUID.
	UUID string `json:"uuid,omitempty"`
	// ProductName is the GPU's product name, e.g. "NVIDIA H100 80GB HBM3".
	ProductName string `json:"productName,omitempty"`
	// PCIBusID is the PCI bus ID of the GPU (of the parent GPU for a MIG device).
	PCIBusID string `json:"pciBusID,omitempty"`
	// ParentUUID is the UUID of the GPU that holds a MIG device.
	ParentUUID string `json:"parentUUID,omitempty"`
	// Profile is a MIG device's profile, e.g. "1g.10gb".
	Profile string `json:"profile,omitempty"`
	// Type is the device's type attribute ("gpu", "mig", ...).
	Type string `json:"type,omitempty"`
}

// DataFromAttributes takes a device's Data from its published attributes.
func DataFromAttributes(attrs map[resourceapi.QualifiedName]resourceapi.DeviceAttribute) Data {
	s := func(name resourceapi.QualifiedName) string {
		if a, ok := attrs[name]; ok && a.StringValue != nil {
			return *a.StringValue
		}
		return ""
	}
	return Data{
		UUID: s(resourceslice.AttrUUID), ProductName: s(resourceslice.AttrProductName), PCIBusID: s(resourceslice.AttrPCIBusID),
		ParentUUID: s(resourceslice.AttrParentUUID), Profile: s(resourceslice.AttrProfile), Type: s(resourceslice.AttrType),
	}
}

// Entry is the desired status of one allocated device.
type Entry struct {
	Pool, Device, ShareID string
	Data                  Data
}

// Entries returns the desired entries of the claim: one per allocation
// result of driverName in pool, in the order of the results, with the Data
// lookup returns for the device (the zero Data when it knows none).
func Entries(claim *resourceapi.ResourceClaim, driverName, pool string, lookup func(device string) Data) []Entry {
	if claim.Status.Allocation == nil {
		return nil
	}
	var out []Entry
	for _, r := range claim.Status.Allocation.Devices.Results {
		if r.Driver != driverName || r.Pool != pool {
			continue
		}
		e := Entry{Pool: r.Pool, Device: r.Device, Data: lookup(r.Device)}
		if r.ShareID != nil {
			e.ShareID = string(*r.ShareID)
		}
		out = append(out, e)
	}
	return out
}

// UpToDate tells whether the claim's status already holds every entry, with
// the same data and a Ready condition that is True for the claim's
// generation: the write can then be skipped (the kubelet prepares a claim
// again for every pod that shares it, and after each plugin restart).
func UpToDate(claim *resourceapi.ResourceClaim, driverName string, entries []Entry) bool {
	for _, e := range entries {
		cur := find(claim, driverName, e)
		if cur == nil || cur.Data == nil {
			return false
		}
		var d Data
		if err := json.Unmarshal(cur.Data.Raw, &d); err != nil || d != e.Data {
			return false
		}
		ready := readyCondition(cur)
		if ready == nil || ready.Status != metav1.ConditionTrue || ready.Reason != ReasonPrepared || ready.ObservedGeneration != claim.Generation {
			return false
		}
	}
	return true
}

func find(claim *resourceapi.ResourceClaim, driverName string, e Entry) *resourceapi.AllocatedDeviceStatus {
	for i := range claim.Status.Devices {
		d := &claim.Status.Devices[i]
		if d.Driver == driverName && d.Pool == e.Pool && d.Device == e.Device && ptrString(d.ShareID) == e.ShareID {
			return d
		}
	}
	return nil
}

func readyCondition(d *resourceapi.AllocatedDeviceStatus) *metav1.Condition {
	for i := range d.Conditions {
		if d.Conditions[i].Type == ConditionReady {
			return &d.Conditions[i]
		}
	}
	return nil
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// ApplyConfiguration is the server-side apply request that sets the entries
// in the claim's status: the claim's UID is a precondition (a re-created
// claim of the same name is not written), and the Ready condition keeps the
// transition time of an entry that is already Ready. now is the transition
// time of a new Ready condition.
func ApplyConfiguration(claim *resourceapi.ResourceClaim, driverName string, entries []Entry, now time.Time) (*resourceac.ResourceClaimApplyConfiguration, error) {
	status := resourceac.ResourceClaimStatus()
	for _, e := range entries {
		raw, err := json.Marshal(e.Data)
		if err != nil {
			return nil, err
		}
		transition := metav1.NewTime(now.Truncate(time.Second))
		if cur := find(claim, driverName, e); cur != nil {
			if ready := readyCondition(cur); ready != nil && ready.Status == metav1.ConditionTrue {
				transition = ready.LastTransitionTime
			}
		}
		dev := resourceac.AllocatedDeviceStatus().WithDriver(driverName).WithPool(e.Pool).WithDevice(e.Device).
			WithData(runtime.RawExtension{Raw: raw}).
			WithConditions(metav1ac.Condition().WithType(ConditionReady).WithStatus(metav1.ConditionTrue).
				WithReason(ReasonPrepared).WithMessage("the device is prepared for the claim's containers").
				WithObservedGeneration(claim.Generation).WithLastTransitionTime(transition))
		if e.ShareID != "" {
			dev.WithShareID(e.ShareID)
		}
		status.WithDevices(dev)
	}
	return resourceac.ResourceClaim(claim.Name, claim.Namespace).WithUID(claim.UID).WithStatus(status), nil
}

// Writer writes the status entries of prepared claims.
type Writer struct {
	Client     kubernetes.Interface
	DriverName string
	// Pool is the node's pool: only devices of it are this plugin's.
	Pool string
	// Lookup returns a device's Data by its name in the pool.
	Lookup func(device string) Data
	// Backoff paces the retries of transient errors; the zero value tries once.
	Backoff wait.Backoff
}

// FieldManager is the server-side apply field manager of the entries.
func (w *Writer) FieldManager() string { return w.DriverName + "/kubelet-plugin" }

// Write sets the claim's entries unless they are up to date. It retries
// transient errors per Backoff; errors that retrying cannot fix (forbidden,
// invalid, the claim gone or replaced) are returned at once. written tells
// whether a request was sent and succeeded.
func (w *Writer) Write(ctx context.Context, claim *resourceapi.ResourceClaim) (written bool, err error) {
	entries := Entries(claim, w.DriverName, w.Pool, w.Lookup)
	if len(entries) == 0 || UpToDate(claim, w.DriverName, entries) {
		return false, nil
	}
	ac, err := ApplyConfiguration(claim, w.DriverName, entries, time.Now())
	if err != nil {
		return false, err
	}
	backoff := w.Backoff
	if backoff.Steps < 1 {
		backoff.Steps = 1
	}
	var lastErr error
	err = wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		_, lastErr = w.Client.ResourceV1().ResourceClaims(claim.Namespace).ApplyStatus(ctx, ac,
			metav1.ApplyOptions{FieldManager: w.FieldManager(), Force: true})
		if lastErr == nil {
			return true, nil
		}
		if permanent(lastErr) {
			return false, lastErr
		}
		klog.FromContext(ctx).V(4).Info("Writing the device status failed, retrying", "claim", klog.KObj(claim), "err", lastErr)
		return false, nil
	})
	if err != nil {
		if lastErr != nil && !permanent(err) {
			err = fmt.Errorf("%w (last error: %w)", err, lastErr)
		}
		return false, err
	}
	return true, nil
}

func permanent(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsNotFound(err) ||
		apierrors.IsConflict(err) || apierrors.IsUnauthorized(err) || apierrors.IsBadRequest(err)
}

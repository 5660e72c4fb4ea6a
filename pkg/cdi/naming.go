package cdi

import (
	"slices"
	"strings"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// ClaimClass is the CDI class of per-claim specs.
const ClaimClass = "claim"

// DriverClass is the CDI class of the driver-wide spec (see DriverSpec).
const DriverClass = "driver"

// DriverDevice is the name of the one device of the driver-wide spec.
const DriverDevice = "common"

// DeviceClass is the CDI class of the static device spec (see DeviceSpec).
const DeviceClass = "device"

// specExt is the encoding of the spec files this package writes.
const specExt = ".json"

// Naming derives every CDI name of one driver.
type Naming struct {
	// Vendor is the CDI vendor, "k8s.<driver name>".
	Vendor string
}

// NewNaming returns the naming for the DRA driver driverName.
func NewNaming(driverName string) Naming {
	return Naming{Vendor: "k8s." + driverName}
}

// Kind is the CDI kind of the claim specs, "<vendor>/claim".
func (n Naming) Kind() string { return n.Vendor + "/" + ClaimClass }

// DriverKind is the CDI kind of the driver-wide spec, "<vendor>/driver":
// the claims' vendor, so that it is unmistakably this driver's.
func (n Naming) DriverKind() string { return n.Vendor + "/" + DriverClass }

// DriverSpecFileName is the file name of the driver-wide spec,
// "<vendor>-driver.json". It never has the form of a claim spec's name.
func (n Naming) DriverSpecFileName() string {
	return cdiapi.GenerateSpecName(n.Vendor, DriverClass) + specExt
}

// DeviceSpecFileName is the file name of the static device spec,
// "<vendor>-device.json". It never has the form of a claim spec's name.
func (n Naming) DeviceSpecFileName() string {
	return cdiapi.GenerateSpecName(n.Vendor, DeviceClass) + specExt
}

// DeviceKind is the CDI kind of the static device spec, "<vendor>/device".
func (n Naming) DeviceKind() string { return n.Vendor + "/" + DeviceClass }

// StaticDeviceID is the fully qualified CDI ID of device (its name in the
// ResourceSlice) in the static device spec, "<vendor>/device=<device>".
func (n Naming) StaticDeviceID(device string) string {
	return parser.QualifiedName(n.Vendor, DeviceClass, device)
}

// StaticDeviceIDs are the CDI device IDs of a device prepared without a
// claim spec: the driver device, then the device's entry in the static
// device spec. A container gets the driver-wide edits once, then the
// device's own, as with DeviceIDs.
func (n Naming) StaticDeviceIDs(device string) []string {
	return []string{n.DriverDeviceID(), n.StaticDeviceID(device)}
}

// NeedsClaimSpec tells whether the CDI device IDs of a prepared device name
// a device of a claim spec; those of StaticDeviceIDs do not.
func (n Naming) NeedsClaimSpec(ids []string) bool {
	prefix := n.Kind() + "="
	return slices.ContainsFunc(ids, func(id string) bool { return strings.HasPrefix(id, prefix) })
}

// DriverDeviceID is the fully qualified CDI ID of the driver-wide spec's
// device, "<vendor>/driver=common".
func (n Naming) DriverDeviceID() string {
	return parser.QualifiedName(n.Vendor, DriverClass, DriverDevice)
}

// DeviceIDs are the CDI device IDs of a device prepared for claimUID whose
// claim spec references the driver-wide spec: the driver device first, then
// the claim's device. The CDI library applies a spec's own edits once per
// container and a device's edits once per reference, so a container gets
// the driver-wide edits once whatever number of the claim's devices it
// has, and in the order a self-contained claim spec applied them (the
// driver-wide edits before the device's own).
func (n Naming) DeviceIDs(claimUID, device string) []string {
	return []string{n.DriverDeviceID(), n.DeviceID(claimUID, device)}
}

// UsesDriverSpec tells whether the CDI device IDs of a prepared device
// reference the driver-wide spec; a device prepared by a plugin from before
// the driver spec has only its claim device's ID.
func (n Naming) UsesDriverSpec(ids []string) bool {
	return slices.Contains(ids, n.DriverDeviceID())
}

// StagingDirName is the name of the subdirectory of the CDI spec directory
// in which this driver stages its spec writes, ".<vendor>.staging": hidden,
// without a spec file's extension (CDI scanners skip it, and skip
// directories), and this driver's own.
func (n Naming) StagingDirName() string { return "." + n.Vendor + ".staging" }

// SpecFileName is the file name of the transient spec of claimUID.
func (n Naming) SpecFileName(claimUID string) string {
	return cdiapi.GenerateTransientSpecName(n.Vendor, ClaimClass, claimUID) + specExt
}

// claimUIDFromFileName is the inverse of SpecFileName; ok is false for files
// that are not claim specs of this driver.
func (n Naming) claimUIDFromFileName(name string) (string, bool) {
	prefix := cdiapi.GenerateTransientSpecName(n.Vendor, ClaimClass, "")
	if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, specExt) {
		return "", false
	}
	uid := strings.TrimSuffix(strings.TrimPrefix(name, prefix), specExt)
	return uid, uid != ""
}

// DeviceName is the CDI device name of the device named device (its name in
// the ResourceSlice) prepared for claimUID.
func (n Naming) DeviceName(claimUID, device string) string {
	return claimUID + "-" + device
}

// DeviceID is the fully qualified CDI device ID that the kubelet passes to the
// container runtime.
func (n Naming) DeviceID(claimUID, device string) string {
	return parser.QualifiedName(n.Vendor, ClaimClass, n.DeviceName(claimUID, device))
}

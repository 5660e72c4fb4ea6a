package cdi

import (
	"strings"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// ClaimClass is the CDI class of per-claim specs.
const ClaimClass = "claim"

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

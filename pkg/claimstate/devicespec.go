package claimstate

import (
	"fmt"

	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/devices"
)

// StaticDeviceSpec assembles the static device spec of a node
// (cdi.DeviceSpec, Options.DeviceSpec): every device of devs that exists
// for as long as the plugin runs (whole GPUs, MIG devices made outside the
// driver), with the edits that edits gives it. Dynamic MIG devices are
// made per claim and never in it. A device whose edits cannot be built is
// left out, with an error naming it in errs: its claims then get a spec
// of their own, whose prepare reports the same error, and the other
// devices are unaffected. The spec is nil when no device is left.
func StaticDeviceSpec(n cdi.Naming, devs *devices.Set, edits EditsSource) (spec *specs.Spec, errs []error, err error) {
	var entries []cdi.ClaimDevice
	for _, d := range devs.All() {
		if d.Dynamic != nil {
			continue
		}
		e, err := edits.Device(d.UUID)
		if err != nil {
			errs = append(errs, fmt.Errorf("device %s (%s) is left out of the static device CDI spec: %w", d.Name, d.UUID, err))
			continue
		}
		entries = append(entries, cdi.ClaimDevice{Name: d.Name, Edits: e})
	}
	spec, err = cdi.DeviceSpec(n, entries)
	return spec, errs, err
}

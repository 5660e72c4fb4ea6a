package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"

	"github.com/gpudra/gpudra/pkg/doctor"
	"github.com/gpudra/gpudra/pkg/flagenv"
	"github.com/gpudra/gpudra/pkg/node"
)

const defaultCDIDirs = "/etc/cdi,/var/run/cdi"

// listedDevice is one CDI device as `cdi list` reports it.
type listedDevice struct {
	Name string `json:"name"`
	// Spec is the host path of the spec file the device resolves from.
	Spec string `json:"spec"`
	// ShadowedBy, when set, is the higher-priority spec whose device of the
	// same name the runtime uses instead.
	ShadowedBy string `json:"shadowedBy,omitempty"`
}

// listing is the output of `cdi list --json`.
type listing struct {
	Devices []listedDevice `json:"devices"`
	// Errors are the CDI library's errors by spec file: specs it could not
	// load and conflicting devices (which resolve from neither spec).
	Errors map[string][]string `json:"errors,omitempty"`
}

func addCDIDirsFlag(f *flagenv.Set, p *string) {
	f.String(p, "cdi-dirs", "CDI_SPEC_DIRS", defaultCDIDirs, "the container runtime's CDI spec directories on the host (under --host-root), comma-separated, lowest priority first")
}

// runCDIList lists the CDI devices the container runtime would resolve
// from the spec directories, loading them with the CDI library as the
// runtime does.
func runCDIList(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	var h hostFlags
	var dirs, device string
	var asJSON bool
	fs, f := newFlagSet("cdi list", stderr, &h, node.Locate)
	addCDIDirsFlag(f, &dirs)
	fs.StringVar(&device, "device", "", "show only this device (nvidia.com/gpu=0) or the devices of this kind (nvidia.com/gpu); exit 1 when none resolves")
	fs.BoolVar(&asJSON, "json", false, "print one JSON document")
	if err := parse(f, fs, args); err != nil {
		return exitUsage, err
	}
	if err := validDeviceFilter(device); err != nil {
		return exitUsage, fmt.Errorf("%w: --device %q: %v (want vendor.com/class=name or vendor.com/class)", errUsage, device, err)
	}
	l := listDevices(h.hostRoot, splitList(dirs), device)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(l); err != nil {
			return exitFail, err
		}
	} else if err := writeListing(stdout, l); err != nil {
		return exitFail, err
	}
	if device != "" && !resolves(l) {
		fmt.Fprintf(stderr, "gpudra cdi list: %s does not resolve from %s\n", device, dirs)
		return exitFail, nil
	}
	return exitOK, nil
}

// listDevices loads dirs (host paths under hostRoot) and lists their
// devices, filtered by device when it is set.
func listDevices(hostRoot string, dirs []string, device string) listing {
	toHost := func(p string) string { return doctor.HostPathOf(hostRoot, p) }
	local := make([]string, 0, len(dirs))
	for _, d := range dirs {
		local = append(local, doctor.LocalPath(hostRoot, d))
	}
	cache, _ := cdiapi.NewCache(cdiapi.WithSpecDirs(local...), cdiapi.WithAutoRefresh(false))
	match := func(name string) bool {
		return device == "" || name == device || strings.HasPrefix(name, device+"=")
	}
	var l listing
	for _, name := range cache.ListDevices() {
		if match(name) {
			l.Devices = append(l.Devices, listedDevice{Name: name, Spec: toHost(cache.GetDevice(name).GetSpec().GetPath())})
		}
	}
	// Devices of lower-priority specs that a later directory overrides.
	for _, vendor := range cache.ListVendors() {
		for _, spec := range cache.GetVendorSpecs(vendor) {
			for _, d := range spec.Devices {
				name := parser.QualifiedName(vendor, spec.GetClass(), d.Name)
				winner := cache.GetDevice(name)
				if !match(name) || winner == nil || winner.GetSpec().GetPath() == spec.GetPath() {
					continue
				}
				l.Devices = append(l.Devices, listedDevice{Name: name, Spec: toHost(spec.GetPath()), ShadowedBy: toHost(winner.GetSpec().GetPath())})
			}
		}
	}
	sort.Slice(l.Devices, func(i, j int) bool {
		a, b := l.Devices[i], l.Devices[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ShadowedBy < b.ShadowedBy
	})
	for path, errs := range cache.GetErrors() {
		if l.Errors == nil {
			l.Errors = map[string][]string{}
		}
		for _, err := range errs {
			l.Errors[toHost(path)] = append(l.Errors[toHost(path)], err.Error())
		}
	}
	return l
}

// validDeviceFilter checks a --device value: a qualified device name or a
// kind; empty is no filter.
func validDeviceFilter(device string) error {
	switch {
	case device == "":
		return nil
	case strings.Contains(device, "="):
		_, _, _, err := parser.ParseQualifiedName(device)
		return err
	}
	vendor, class := parser.ParseQualifier(device)
	if err := parser.ValidateVendorName(vendor); err != nil {
		return err
	}
	return parser.ValidateClassName(class)
}

// resolves tells whether a listed device is one the runtime resolves.
func resolves(l listing) bool {
	for _, d := range l.Devices {
		if d.ShadowedBy == "" {
			return true
		}
	}
	return false
}

func writeListing(w io.Writer, l listing) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSPEC\tNOTE")
	for _, d := range l.Devices {
		note := "-"
		if d.ShadowedBy != "" {
			note = "shadowed by " + d.ShadowedBy
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, d.Spec, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(l.Errors) == 0 {
		return nil
	}
	paths := make([]string, 0, len(l.Errors))
	for p := range l.Errors {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	fmt.Fprintln(w, "\nERRORS (the runtime ignores these specs or devices):")
	for _, p := range paths {
		for _, e := range l.Errors[p] {
			fmt.Fprintf(w, "  %s: %s\n", p, e)
		}
	}
	return nil
}

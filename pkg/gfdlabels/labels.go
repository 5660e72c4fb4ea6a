// Package gfdlabels computes node labels with the names and value formats of
// NVIDIA's GPU Feature Discovery (GFD, part of NVIDIA/k8s-device-plugin), so
// that node selectors and affinities written for GFD keep working on nodes
// served by gpudra, and publishes them (publish.go).
//
// Compute is a pure function of the inventory and the plugin's settings.
package gfdlabels

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// Prefix is the prefix of every label this package computes.
const Prefix = "nvidia.com/"

// MIG strategies, as GFD and NVIDIA's device plugin name them.
const (
	MIGStrategyNone   = "none"
	MIGStrategySingle = "single"
	MIGStrategyMixed  = "mixed"
)

// Sharing strategies, the values of nvidia.com/gpu.sharing-strategy.
const (
	SharingNone        = "none"
	SharingTimeSlicing = "time-slicing"
	SharingMPS         = "mps"
)

// Settings are the plugin settings that GFD's labels depend on.
type Settings struct {
	// MIGStrategy is none, single or mixed; "" means none. With none no
	// MIG labels are computed (GFD's behavior).
	MIGStrategy string
	// Replicas is how many times each full GPU is advertised; 0 or 1 mean
	// no sharing.
	Replicas int
	// SharingStrategy is SharingTimeSlicing or SharingMPS when Replicas > 1;
	// "" means time-slicing then.
	SharingStrategy string
	// Renamed tells whether shared GPUs are advertised under another
	// resource name (GFD then does not append "-SHARED" to the product).
	Renamed bool
	// Machine is the host's DMI product name (/sys/class/dmi/id/product_name),
	// for nvidia.com/gpu.machine; "" leaves the label out.
	Machine string
	// GPUMode is "compute" or "graphics" (the PCI class of the GPUs),
	// for nvidia.com/gpu.mode; "" leaves the label out.
	GPUMode string
}

// Compute returns the labels of the node whose GPUs inv describes. A node
// without usable GPUs gets no labels at all (GFD's behavior). Values are
// valid label values.
func Compute(inv *inventory.Inventory, s Settings) (map[string]string, error) {
	if inv == nil || len(inv.Devices) == 0 {
		return map[string]string{}, nil
	}
	strategy := s.MIGStrategy
	if strategy == "" {
		strategy = MIGStrategyNone
	}
	switch strategy {
	case MIGStrategyNone, MIGStrategySingle, MIGStrategyMixed:
	default:
		return nil, fmt.Errorf("MIG strategy %q: want none, single or mixed", s.MIGStrategy)
	}
	replicas := max(s.Replicas, 1)
	sharing := SharingNone
	if replicas > 1 {
		sharing = s.SharingStrategy
		if sharing == "" {
			sharing = SharingTimeSlicing
		}
		if sharing != SharingTimeSlicing && sharing != SharingMPS {
			return nil, fmt.Errorf("sharing strategy %q: want time-slicing or mps", s.SharingStrategy)
		}
	}

	l := map[string]string{"nvidia.com/gpu.present": "true"}
	if err := versionLabels(l, inv); err != nil {
		return nil, err
	}
	capable, anyMIG := false, false
	for _, d := range inv.Devices {
		capable = capable || d.MIGCapable
		anyMIG = anyMIG || d.MIGEnabled
	}
	l["nvidia.com/mig.capable"] = strconv.FormatBool(capable)
	// GFD: mps.capable is true with the MPS sharing strategy, unless a GPU
	// is in MIG mode.
	l["nvidia.com/mps.capable"] = strconv.FormatBool(sharing == SharingMPS && !anyMIG)
	if s.Machine != "" {
		l["nvidia.com/gpu.machine"] = sanitize(s.Machine)
	}
	if s.GPUMode != "" {
		l["nvidia.com/gpu.mode"] = s.GPUMode
	}

	// Full GPU labels: GPUs in MIG mode count as GPUs (GFD counts every
	// GPU), but only GPUs outside MIG mode carry the sharing settings.
	// GFD labels from one product: the most common, the first on a tie.
	var full, migMode []inventory.Device
	for _, d := range inv.Devices {
		if d.MIGEnabled {
			migMode = append(migMode, d)
		} else {
			full = append(full, d)
		}
	}
	ref := inv.Devices[0]
	shared := len(full) > 0
	if len(full) > 0 {
		ref = full[0]
	}
	// GFD labels GPUs in MIG mode without sharing: replicas 0.
	gpuReplicas, gpuSharing := 0, SharingNone
	if shared {
		gpuReplicas, gpuSharing = replicas, sharing
	}
	product := sanitize(ref.ProductName)
	if shared && replicas > 1 && !s.Renamed {
		product += "-SHARED"
	}
	l["nvidia.com/gpu.product"] = product
	l["nvidia.com/gpu.count"] = strconv.Itoa(len(inv.Devices))
	l["nvidia.com/gpu.replicas"] = strconv.Itoa(gpuReplicas)
	l["nvidia.com/gpu.sharing-strategy"] = gpuSharing
	if mib := ref.MemoryBytes >> 20; mib != 0 {
		l["nvidia.com/gpu.memory"] = strconv.FormatUint(mib, 10)
	}
	if err := architectureLabels(l, "nvidia.com/gpu", ref.CUDAComputeCapability); err != nil {
		return nil, fmt.Errorf("GPU %d: %w", ref.Index, err)
	}

	if strategy == MIGStrategyNone {
		return l, nil
	}
	l["nvidia.com/mig.strategy"] = strategy
	switch strategy {
	case MIGStrategySingle:
		singleLabels(l, inv, full, migMode)
	case MIGStrategyMixed:
		mixedLabels(l, inv)
	}
	return l, nil
}

// versionLabels sets the driver and CUDA version labels, new and deprecated
// names.
func versionLabels(l map[string]string, inv *inventory.Inventory) error {
	parts := strings.Split(inv.DriverVersion, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return fmt.Errorf("driver version %q: want X.Y[.Z]", inv.DriverVersion)
	}
	rev := ""
	if len(parts) == 3 {
		rev = parts[2]
	}
	cuda := strings.Split(inv.CUDADriverVersion, ".")
	if len(cuda) != 2 {
		return fmt.Errorf("CUDA driver version %q: want X.Y", inv.CUDADriverVersion)
	}
	for _, p := range []string{"driver-version", "driver"} {
		l["nvidia.com/cuda."+p+".major"] = parts[0]
		l["nvidia.com/cuda."+p+".minor"] = parts[1]
	}
	l["nvidia.com/cuda.driver-version.revision"] = rev
	l["nvidia.com/cuda.driver.rev"] = rev
	l["nvidia.com/cuda.driver-version.full"] = inv.DriverVersion
	for _, p := range []string{"runtime-version", "runtime"} {
		l["nvidia.com/cuda."+p+".major"] = cuda[0]
		l["nvidia.com/cuda."+p+".minor"] = cuda[1]
	}
	l["nvidia.com/cuda.runtime-version.full"] = inv.CUDADriverVersion
	return nil
}

// architectureLabels sets <resource>.family, .compute.major and .compute.minor
// from a "<major>.<minor>" compute capability.
func architectureLabels(l map[string]string, resource, cc string) error {
	major, minor, ok := strings.Cut(cc, ".")
	maj, err1 := strconv.Atoi(major)
	mnr, err2 := strconv.Atoi(minor)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("compute capability %q: want <major>.<minor>", cc)
	}
	if maj == 0 {
		return nil
	}
	l[resource+".family"] = Family(maj, mnr)
	l[resource+".compute.major"] = strconv.Itoa(maj)
	l[resource+".compute.minor"] = strconv.Itoa(mnr)
	return nil
}

// Family is GFD's architecture family of a compute capability: "ampere",
// "hopper", ... "undefined" for one it does not know.
func Family(major, minor int) string {
	switch major {
	case 1:
		return "tesla"
	case 2:
		return "fermi"
	case 3:
		return "kepler"
	case 5:
		return "maxwell"
	case 6:
		return "pascal"
	case 7:
		if minor < 5 {
			return "volta"
		}
		return "turing"
	case 8:
		if minor < 9 {
			return "ampere"
		}
		return "ada-lovelace"
	case 9:
		return "hopper"
	case 10, 12:
		return "blackwell"
	}
	return "undefined"
}

// migGroup is the MIG devices of one profile.
type migGroup struct {
	profile string
	first   inventory.MIGDevice
	count   int
}

func groupMIG(inv *inventory.Inventory) []migGroup {
	byProfile := map[string]*migGroup{}
	var order []string
	for _, m := range inv.MIGDevices {
		g, ok := byProfile[m.Profile]
		if !ok {
			g = &migGroup{profile: m.Profile, first: m}
			byProfile[m.Profile] = g
			order = append(order, m.Profile)
		}
		g.count++
	}
	sort.Strings(order)
	out := make([]migGroup, 0, len(order))
	for _, p := range order {
		out = append(out, *byProfile[p])
	}
	return out
}

// singleLabels: with the single strategy the MIG devices are advertised as
// nvidia.com/gpu, so the gpu labels describe them when every GPU is in MIG
// mode with MIG devices of one profile; any other layout gets GFD's
// "-MIG-INVALID" labels. No GPU in MIG mode: the full GPU labels stay.
func singleLabels(l map[string]string, inv *inventory.Inventory, full, migMode []inventory.Device) {
	if len(migMode) == 0 {
		return
	}
	groups := groupMIG(inv)
	empty := false
	for _, d := range migMode {
		has := false
		for _, m := range inv.MIGDevices {
			has = has || m.ParentUUID == d.UUID
		}
		empty = empty || !has
	}
	if empty || len(full) != 0 || len(groups) != 1 {
		l["nvidia.com/gpu.product"] = sanitize(migMode[0].ProductName) + "-MIG-INVALID"
		l["nvidia.com/gpu.count"] = "0"
		l["nvidia.com/gpu.replicas"] = "0"
		l["nvidia.com/gpu.memory"] = "0"
		return
	}
	// The parent GPUs' family and compute capability stay (GFD's).
	migResourceLabels(l, "nvidia.com/gpu", groups[0])
}

// mixedLabels: with the mixed strategy each MIG profile is its own resource,
// nvidia.com/mig-<profile>, labeled nvidia.com/mig-<profile>.<attribute>.
func mixedLabels(l map[string]string, inv *inventory.Inventory) {
	for _, g := range groupMIG(inv) {
		migResourceLabels(l, "nvidia.com/mig-"+g.profile, g)
	}
}

var sliceRe = regexp.MustCompile(`^(?:(\d+)c\.)?(\d+)g\.`)

// migResourceLabels sets GFD's labels of a MIG resource: product
// ("<GPU product>-MIG-<profile>"), count, replicas (MIG devices are never
// shared), sharing-strategy and the profile's attributes.
func migResourceLabels(l map[string]string, resource string, g migGroup) {
	m := g.first
	l[resource+".product"] = sanitize(m.ProductName) + "-MIG-" + sanitize(g.profile)
	l[resource+".count"] = strconv.Itoa(g.count)
	l[resource+".replicas"] = "1"
	l[resource+".sharing-strategy"] = SharingNone
	l[resource+".memory"] = strconv.FormatUint(m.MemoryBytes>>20, 10)
	l[resource+".multiprocessors"] = strconv.FormatUint(uint64(m.Multiprocessors), 10)
	if sm := sliceRe.FindStringSubmatch(g.profile); sm != nil {
		ci := sm[1]
		if ci == "" {
			ci = sm[2]
		}
		l[resource+".slices.gi"] = sm[2]
		l[resource+".slices.ci"] = ci
	}
	l[resource+".engines.copy"] = strconv.FormatUint(uint64(m.CopyEngines), 10)
	l[resource+".engines.decoder"] = strconv.FormatUint(uint64(m.Decoders), 10)
	l[resource+".engines.encoder"] = strconv.FormatUint(uint64(m.Encoders), 10)
	l[resource+".engines.jpeg"] = strconv.FormatUint(uint64(m.JPEGs), 10)
	l[resource+".engines.ofa"] = strconv.FormatUint(uint64(m.OFAs), 10)
}

var unsafeRe = regexp.MustCompile(`[^A-Za-z0-9-_. ]`)

// sanitize is GFD's value sanitizer: characters other than letters, digits,
// '-', '_', '.' and ' ' are dropped, runs of blanks become one '-'. The
// result is cut to the 63 characters of a label value (and trimmed of
// trailing non-alphanumerics, which values may not end with).
func sanitize(s string) string {
	s = strings.Join(strings.Fields(unsafeRe.ReplaceAllString(s, "")), "-")
	if len(s) > 63 {
		s = s[:63]
	}
	return strings.TrimRight(s, "-_.")
}

// Package resourceslice turns a GPU inventory into the devices and
// ResourceSlices that the driver publishes through the kubeletplugin helper.
//
// The package is pure: it performs no API calls and, unless Options asks for
// it, no host I/O. The same inventory and options always give the same
// devices, in the same order, so that republishing an unchanged node does not
// churn its ResourceSlices.
//
// # Attribute schema
//
// The published devices are the node's preparable devices (package
// devices), in their order, with their names and their kind as the type
// attribute. Every GPU is published as one device named devices.GPUName(d).
// Attribute names
// without a domain belong to the driver's domain (for example
// device.attributes["gpu.nvidia.com"].productName in CEL); the two PCI
// attributes use the standard "resource.kubernetes.io" domain. The schema
// follows NVIDIA's reference DRA driver so that DeviceClasses and CEL
// selectors written for it keep working:
//
//	type                             string   always "gpu"
//	uuid                             string   "GPU-..."
//	productName                      string   "NVIDIA H100 80GB HBM3"
//	brand                            string   "Nvidia"
//	architecture                     string   "Hopper"
//	cudaComputeCapability            version  "9.0" published as "9.0.0"
//	driverVersion                    version  "550.54.15"; "560.28" as "560.28.0"; "535.04.01" as "535.4.1"
//	cudaDriverVersion                version  "12.4" published as "12.4.0"
//	index                            int      NVML index
//	minor                            int      /dev/nvidia<minor>
//	migCapable                       bool
//	resource.kubernetes.io/pciBusID  string   "0000:18:00.0", only when known
//	resource.kubernetes.io/pcieRoot  string   "pci0000:00", only when resolvable
//	resource.kubernetes.io/numaNode  int      0, only when the host reports one
//	addressingMode                   string   "HMM", "ATS" or "None", only when NVML reports it
//	gpuModuleID                      int      1-8 on an HGX board, only when NVML reports one
//	clusterUUID                      string   NVLink cluster UUID, only in a registered NVLink fabric
//	cliqueID                         string   "<clusterUUID>.<clique>", the NVLink domain, with clusterUUID
//
// (the topology attributes: see topology.go; every device of a GPU,
// MIG devices and partitions included, has its GPU's)
// and one capacity, memory, the framebuffer size in bytes (a binary-SI
// quantity such as "80Gi").
//
// With Options.ConsumableCapacity on, a whole GPU that is not
// partitionable is shared between claims: it allows multiple allocations,
// its memory capacity (rounded down to a whole MiB) has a request policy,
// and in the share-count mode it has a second capacity, shares, in the
// form of NVIDIA's reference driver (see consumable.go).
//
// A GPU that NVML enumerates but cannot use (inventory.Inventory.Unusable,
// e.g. one that fell off the bus) is published by UnusableDevices, not by
// Devices: under the name it has when it works, with the attributes NVML
// could read, no capacity, and the NoSchedule taint
// "<driver>/unhealthy=gpu-lost" (or "=unusable"); it is never prepared.
//
// A GPU in MIG mode is not published as a whole: each of its MIG devices
// is published instead, named devices.MIGName(m), with type "mig" (see
// mig.go for its extra attributes and capacities).
//
// A partitionable GPU (devices.Options.Partitionable: dynamic MIG,
// KEP-4815 partitionable devices) is published as its whole self and one
// device per MIG profile and placement, named devices.DynamicMIGName, which
// the driver creates when a claim is prepared. They share the GPU's
// counter set, "<GPU name>-counter-set", published by CounterSets: the
// whole GPU consumes all of it, a partition its profile's share and its
// memory slices, so the scheduler never allocates the whole GPU together
// with a partition, nor overlapping partitions (see partitions.go).
//
// An attribute whose value is unknown (an empty string) or that the API
// server would reject (a version that cannot be expressed as semver 2.0.0,
// a string longer than
// resourceapi.DeviceAttributeMaxValueLength, a malformed bus ID) is left out
// rather than published: one invalid attribute would make the API server
// reject the whole ResourceSlice, hiding every GPU of the node.
package resourceslice

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/deviceattribute"
	draresourceslice "k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// MaxDevicesPerSlice is the API limit on devices in one ResourceSlice.
const MaxDevicesPerSlice = resourceapi.ResourceSliceMaxDevices // 128

// MaxDevicesPerSliceWithTaintsOrCounters is the API limit on devices in one
// ResourceSlice when any of its devices has taints, consumes counters or has
// a list-typed attribute.
const MaxDevicesPerSliceWithTaintsOrCounters = resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures // 64

// Names of the published attributes. Unqualified names belong to the
// driver's domain.
const (
	AttrType                  resourceapi.QualifiedName = "type" // the device's devices.Kind
	AttrUUID                  resourceapi.QualifiedName = "uuid"
	AttrProductName           resourceapi.QualifiedName = "productName"
	AttrBrand                 resourceapi.QualifiedName = "brand"
	AttrArchitecture          resourceapi.QualifiedName = "architecture"
	AttrCUDAComputeCapability resourceapi.QualifiedName = "cudaComputeCapability"
	AttrDriverVersion         resourceapi.QualifiedName = "driverVersion"
	AttrCUDADriverVersion     resourceapi.QualifiedName = "cudaDriverVersion"
	AttrIndex                 resourceapi.QualifiedName = "index"
	AttrMinor                 resourceapi.QualifiedName = "minor"
	AttrMIGCapable            resourceapi.QualifiedName = "migCapable"
	AttrPCIBusID              resourceapi.QualifiedName = deviceattribute.StandardDeviceAttributePCIBusID // "resource.kubernetes.io/pciBusID"
	AttrPCIeRoot              resourceapi.QualifiedName = deviceattribute.StandardDeviceAttributePCIeRoot // "resource.kubernetes.io/pcieRoot"
)

// CapacityMemory is the name of the capacity holding the GPU memory in bytes.
const CapacityMemory resourceapi.QualifiedName = "memory"

// Options tunes Devices. The zero value is valid: it publishes every
// attribute except pcieRoot and touches nothing on the host.
type Options struct {
	// PCIeRoot resolves a PCI bus ID ("0000:18:00.0") to its PCIe root
	// complex ("pci0000:00"). It is called once per device that has a bus
	// ID. A nil PCIeRoot, an error or an empty result means the root is
	// unresolvable and the pcieRoot attribute is left out for that device;
	// Devices never fails because of it.
	//
	// DefaultOptions sets it to PCIeRootResolver(DefaultSysfsRoot), which
	// reads the host's /sys. Leave it nil for mock backends, whose bus IDs
	// are invented and may name unrelated devices of the host.
	PCIeRoot func(busID string) (string, error)

	// ConsumableCapacity, when Enabled, publishes every whole GPU that is
	// not partitionable as a device that several claims share, with
	// allowMultipleAllocations and the capacities and request policies
	// of its mode (see consumable.go). The zero value is disabled.
	ConsumableCapacity ConsumableCapacity
}

// DefaultSysfsRoot is where a process that shares the host's mount
// namespace sees the host's sysfs.
const DefaultSysfsRoot = "/sys"

// DefaultOptions returns the options for a real node: pcieRoot is resolved
// through the host's sysfs at DefaultSysfsRoot.
func DefaultOptions() Options {
	return Options{PCIeRoot: PCIeRootResolver(DefaultSysfsRoot)}
}

// nvidiaPCIVendor is the content of an NVIDIA device's sysfs vendor file.
const nvidiaPCIVendor = "0x10de"

// pcieRootPattern is the name of a PCIe root complex's directory in
// <sysfs>/devices: "pci<domain>:<bus>".
var pcieRootPattern = regexp.MustCompile(`^pci[0-9a-f]{4}:[0-9a-f]{2}$`)

// PCIeRootResolver returns a resolver of a GPU's bus ID ("0000:18:00.0")
// to its PCIe root complex ("pci0000:00") through the sysfs tree mounted at
// sysfsRoot (the host's /sys; the chart mounts it in the plugin container,
// see --sysfs-root). It follows <sysfsRoot>/bus/pci/devices/<busID>, the
// kernel's symlink into <sysfsRoot>/devices/pci<domain>:<bus>/.../<busID>,
// with deviceattribute.GetPCIeRootAttributeByPCIBusID over that root, which
// also checks that the entry the link resolves to is named after the bus
// ID. The resolver fails, so that the attribute is left out, unless that
// entry is an NVIDIA device (its vendor file reads 0x10de) and the root is
// of the form pci<domain>:<bus>: a malformed bus ID, a missing entry (a
// container without the host's /sys, a mock GPU), a link to another
// device, another vendor's device at that address.
func PCIeRootResolver(sysfsRoot string) func(busID string) (string, error) {
	return func(busID string) (string, error) {
		attr, err := deviceattribute.GetPCIeRootAttributeByPCIBusID(busID, deviceattribute.WithFSFromRoot(sysfsRoot))
		if err != nil {
			return "", fmt.Errorf("PCIe root of %s under %s: %w", busID, sysfsRoot, err)
		}
		if attr.Value.StringValue == nil {
			return "", fmt.Errorf("PCIe root of %s under %s: no value", busID, sysfsRoot)
		}
		root := *attr.Value.StringValue
		if !pcieRootPattern.MatchString(root) {
			return "", fmt.Errorf("PCIe root of %s under %s: %q is not of the form pci<domain>:<bus>", busID, sysfsRoot, root)
		}
		vendorFile := filepath.Join(sysfsRoot, "bus", "pci", "devices", busID, "vendor")
		vendor, err := os.ReadFile(vendorFile)
		if err != nil {
			return "", fmt.Errorf("PCIe root of %s: reading its vendor: %w", busID, err)
		}
		if v := strings.TrimSpace(string(vendor)); v != nvidiaPCIVendor {
			return "", fmt.Errorf("PCIe root of %s: the sysfs device at that address has vendor %s, not NVIDIA's %s", busID, v, nvidiaPCIVendor)
		}
		return root, nil
	}
}

// Devices returns one published device per device of set, in the set's
// publication order (devices.FromInventory: the GPUs not in MIG mode in
// NVML index order, then the MIG devices; devices.FromInventoryWith puts a
// partitionable GPU's whole self and its partitions in the GPU's place),
// with the attributes and capacities described in the package
// documentation; a partitionable GPU and its partitions also consume the
// GPU's counters (see CounterSets). With opts.ConsumableCapacity enabled,
// every other whole GPU allows multiple allocations and has the consumable
// capacities of that mode (see consumable.go), its memory capacity
// rounded down to a whole MiB; MIG devices are unchanged. inv gives only
// the driver-wide attributes (driverVersion, cudaDriverVersion), repeated
// on every device; a nil inv leaves them out. A nil set, or one without devices, gives an
// empty, non-nil result.
//
// The result shares no memory with inv or set, and each call returns fresh
// values: the caller may modify them (for example add Taints).
func Devices(inv *inventory.Inventory, set *devices.Set, opts Options) []resourceapi.Device {
	if set == nil {
		return []resourceapi.Device{}
	}
	// Driver-wide values are computed once. Each device still gets its own
	// copy of every pointer so that devices can be mutated independently.
	var v driverVersions
	if inv != nil {
		v.driver, v.driverOK = semverOf(inv.DriverVersion)
		v.cuda, v.cudaOK = semverOf(inv.CUDADriverVersion)
	}

	preparable := set.All()
	counters, _ := partitionCounters(preparable)
	out := make([]resourceapi.Device, 0, len(preparable))
	for _, d := range preparable {
		switch {
		case d.Kind == devices.KindGPU:
			dev := resourceapi.Device{
				Name:       d.Name,
				Attributes: gpuAttributes(d.GPU, v, opts),
				Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
					CapacityMemory: {Value: *resource.NewQuantity(clampInt64(d.GPU.MemoryBytes), resource.BinarySI)},
				},
			}
			if c, ok := counters[d.GPU.UUID]; ok && d.Partitionable {
				dev.ConsumesCounters = []resourceapi.DeviceCounterConsumption{{CounterSet: c.setName, Counters: c.all()}}
			}
			if consumableEligible(d) {
				opts.ConsumableCapacity.makeConsumable(&dev, d.GPU.MemoryBytes)
			}
			out = append(out, dev)
		case d.Kind == devices.KindMIG && d.MIG != nil:
			out = append(out, migDevice(d, v, opts))
		case d.Kind == devices.KindMIG && d.Dynamic != nil:
			out = append(out, dynamicMIGDevice(d, counters[d.GPU.UUID].setName, v, opts))
		}
	}
	return out
}

// driverVersions are the driver-wide versions in semver form; ok is false
// for a version that cannot be published.
type driverVersions struct {
	driver, cuda     string
	driverOK, cudaOK bool
}

// gpuAttributes returns the attributes of the full GPU g, type "gpu".
func gpuAttributes(g inventory.Device, v driverVersions, opts Options) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	attrs := make(map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, 18)
	putString(attrs, AttrType, string(devices.KindGPU))
	putString(attrs, AttrUUID, g.UUID)
	putString(attrs, AttrProductName, g.ProductName)
	putString(attrs, AttrBrand, g.Brand)
	putString(attrs, AttrArchitecture, g.Architecture)
	if cc, ok := semverOf(g.CUDAComputeCapability); ok {
		putVersion(attrs, AttrCUDAComputeCapability, cc)
	}
	if v.driverOK {
		putVersion(attrs, AttrDriverVersion, v.driver)
	}
	if v.cudaOK {
		putVersion(attrs, AttrCUDADriverVersion, v.cuda)
	}
	attrs[AttrIndex] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(g.Index))}
	attrs[AttrMinor] = resourceapi.DeviceAttribute{IntValue: ptrTo(int64(g.Minor))}
	attrs[AttrMIGCapable] = resourceapi.DeviceAttribute{BoolValue: ptrTo(g.MIGCapable)}
	putBusAttributes(attrs, g.PCIBusID, opts)
	putTopologyAttributes(attrs, g)
	return attrs
}

// putBusAttributes sets pciBusID, and pcieRoot when opts resolves it, for a
// valid bus ID.
func putBusAttributes(attrs map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, busID string, opts Options) {
	if !validBusID(busID) {
		return
	}
	putString(attrs, AttrPCIBusID, busID)
	if opts.PCIeRoot != nil {
		if root, err := opts.PCIeRoot(busID); err == nil && root != "" {
			putString(attrs, AttrPCIeRoot, root)
		}
	}
}

// MaxCounterSetsPerSlice is the API limit on counter sets in one
// ResourceSlice.
const MaxCounterSetsPerSlice = resourceapi.ResourceSliceMaxCounterSets // 8

// DriverResources returns what the kubeletplugin helper publishes for
// nodeName: a single pool, named nodeName, holding counters and devices
// split into ResourceSlices.
//
// A ResourceSlice holds either counter sets or devices, never both (an API
// rule), so the counter sets (CounterSets) come first, in their order, in
// slices of at most MaxCounterSetsPerSlice, and the devices follow in
// slices of their own. Devices keep the order in which they are given (put
// preferred devices first: the allocator is first-fit over slices and
// devices) and are packed greedily: every device slice but the last is
// full. A slice holds at most MaxDevicesPerSlice devices, or
// MaxDevicesPerSliceWithTaintsOrCounters when any of the given devices has
// taints, consumes counters or has a list-typed attribute: the advanced
// features that the API lists for that limit, among which
// allowMultipleAllocations and capacity request policies are not. The
// limit is chosen once for the whole pool so that tainting one device does
// not reshuffle only some slices. Every counter set and every device appears
// in exactly one slice, and the same input always gives the same slices.
// With neither devices nor counters the pool has a single empty slice,
// which tells the scheduler that the driver runs but the node has no GPU.
//
// The slices hold copies of the device and counter set structs (maps and
// pointers inside them are shared with the caller); neither the devices
// nor the counter sets are validated, nor that every counter set a device
// consumes is given.
func DriverResources(nodeName string, devices []resourceapi.Device, counters []resourceapi.CounterSet) draresourceslice.DriverResources {
	limit := MaxDevicesPerSlice
	if slices.ContainsFunc(devices, usesAdvancedFeatures) {
		limit = MaxDevicesPerSliceWithTaintsOrCounters
	}

	var pool draresourceslice.Pool
	pool.Slices = make([]draresourceslice.Slice, 0,
		(len(counters)+MaxCounterSetsPerSlice-1)/MaxCounterSetsPerSlice+(len(devices)+limit-1)/limit)
	for chunk := range slices.Chunk(counters, MaxCounterSetsPerSlice) {
		pool.Slices = append(pool.Slices, draresourceslice.Slice{SharedCounters: slices.Clone(chunk)})
	}
	for chunk := range slices.Chunk(devices, limit) {
		pool.Slices = append(pool.Slices, draresourceslice.Slice{Devices: slices.Clone(chunk)})
	}
	if len(pool.Slices) == 0 {
		pool.Slices = []draresourceslice.Slice{{}}
	}
	return draresourceslice.DriverResources{
		Pools: map[string]draresourceslice.Pool{nodeName: pool},
	}
}

// usesAdvancedFeatures reports whether d lowers the per-slice device limit
// to ResourceSliceMaxDevicesWithAdvancedFeatures: the features that the
// API lists for that constant (taints, counter consumption, list-typed
// attributes). Consumable capacity (allowMultipleAllocations, request
// policies) is not among them and keeps the limit at
// ResourceSliceMaxDevices.
func usesAdvancedFeatures(d resourceapi.Device) bool {
	if len(d.Taints) > 0 || len(d.ConsumesCounters) > 0 {
		return true
	}
	for _, a := range d.Attributes {
		if a.IntValues != nil || a.BoolValues != nil || a.StringValues != nil || a.VersionValues != nil {
			return true
		}
	}
	return false
}

// semverOf turns an NVIDIA version ("550.54.15", "560.28", "535.04.01",
// "9.0", "12") into a semver 2.0.0 version with exactly three numeric parts
// and no leading zeros ("550.54.15", "560.28.0", "535.4.1", "9.0.0",
// "12.0.0"). It reports false for anything else (empty, more than three
// parts, non-digits, a part overflowing uint64, a result longer than the
// API allows), so that no invalid version is ever published.
func semverOf(v string) (string, bool) {
	if v == "" {
		return "", false
	}
	parts := strings.Split(v, ".")
	if len(parts) > 3 {
		return "", false
	}
	var nums [3]uint64
	for i, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return "", false
		}
		n, err := strconv.ParseUint(p, 10, 64) // also strips leading zeros
		if err != nil {
			return "", false
		}
		nums[i] = n
	}
	s := strconv.FormatUint(nums[0], 10) + "." + strconv.FormatUint(nums[1], 10) + "." + strconv.FormatUint(nums[2], 10)
	if len(s) > resourceapi.DeviceAttributeMaxValueLength {
		return "", false
	}
	return s, true
}

// busIDPattern is the extended BDF form the standard pciBusID attribute
// requires, as accepted by deviceattribute.GetPCIBusIDAttribute.
var busIDPattern = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$`)

func validBusID(id string) bool {
	return id != "" && busIDPattern.MatchString(id)
}

// putString sets a string attribute unless the value is empty or too long
// for the API.
func putString(attrs map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, name resourceapi.QualifiedName, v string) {
	if v == "" || len(v) > resourceapi.DeviceAttributeMaxValueLength {
		return
	}
	attrs[name] = resourceapi.DeviceAttribute{StringValue: ptrTo(v)}
}

func putVersion(attrs map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, name resourceapi.QualifiedName, v string) {
	attrs[name] = resourceapi.DeviceAttribute{VersionValue: ptrTo(v)}
}

func ptrTo[T any](v T) *T { return &v }

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

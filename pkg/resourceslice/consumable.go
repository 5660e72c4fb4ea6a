package resourceslice

import (
	"fmt"
	"strconv"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/gpudra/gpudra/pkg/devices"
)

// Consumable capacity (KEP-5075, DRAConsumableCapacity) lets several claims
// share one whole GPU: the GPU is published with allowMultipleAllocations,
// every allocation of it gets its own share ID, and the scheduler keeps the
// sum of what the allocations consume within the GPU's capacities.
//
// The capacities and their request policies are those of NVIDIA's
// reference DRA driver (its "consumable shares" option), so that claims
// written for it work unchanged. With consumable capacity on, every whole
// GPU that Devices publishes and that is not partitionable has
//
//	allowMultipleAllocations: true
//	capacity memory: value M, the framebuffer rounded down to a multiple
//	                 of 1Mi, and the policy
//	    "unlimited": default 0,  validRange {min 0,   max M, step 1Mi}
//	    "memory":    default M,  validRange {min 1Mi, max M, step 1Mi}
//	    N:           as "unlimited"
//	capacity shares (N only): value N and the policy
//	                 default 1, validRange {min 1, max N, step 1}
//	                 (for N = 1 without step: the API requires
//	                 min + step <= value)
//
// so that a claim's capacity.requests.memory is rounded up to a whole MiB
// and must not exceed the GPU's memory. An unqualified claim (no capacity
// requests) consumes the defaults: with "memory" the whole GPU's memory,
// so no other share fits next to it; with "unlimited" nothing, so any
// number of such claims share the GPU; with N one share of N and no
// memory.
//
// MIG devices, partitionable GPUs and their partitions (which the counters
// of their counter sets arbitrate) and unusable GPUs (UnusableDevices) are
// published as without consumable capacity, and so is a GPU whose memory,
// once rounded, is too small for a valid policy (under 2Mi, e.g. unknown):
// a single invalid policy would make the API server reject the whole
// ResourceSlice.

// CapacityShares is the name of the capacity that counts a GPU's shares in
// ConsumableShares mode.
const CapacityShares resourceapi.QualifiedName = "shares"

// ConsumableMode says how a shared GPU's capacities are consumed.
type ConsumableMode int

const (
	// ConsumableDisabled publishes no consumable capacity: a GPU is
	// allocated to one claim at a time.
	ConsumableDisabled ConsumableMode = iota
	// ConsumableUnlimited shares GPUs by memory; a claim that requests
	// no memory consumes none.
	ConsumableUnlimited
	// ConsumableMemory shares GPUs by memory; a claim that requests no
	// memory consumes all of it, i.e. gets the whole GPU.
	ConsumableMemory
	// ConsumableShares shares GPUs by memory as ConsumableUnlimited and
	// also by ConsumableCapacity.Shares shares; a claim that requests no
	// shares consumes one.
	ConsumableShares
)

// MaxConsumableShares is the largest share count ConsumableShares accepts.
const MaxConsumableShares = 1000

// Flag values of the consumable capacity modes.
const (
	consumableDisabledFlag  = "disabled"
	consumableUnlimitedFlag = "unlimited"
	consumableMemoryFlag    = "memory"
)

// memoryStep is the step of the memory request policies: requests are
// rounded up to whole MiB.
const memoryStep = 1 << 20

// ConsumableCapacity selects how, if at all, whole GPUs are shared between
// claims through consumable capacity. The zero value is disabled.
type ConsumableCapacity struct {
	// Mode is the sharing mode.
	Mode ConsumableMode
	// Shares is the number of shares of each GPU in ConsumableShares mode,
	// 1 to MaxConsumableShares; it is 0 in the other modes.
	Shares int
}

// ParseConsumableCapacity parses the value of the consumable capacity
// option: "" or "disabled" (off), "unlimited", "memory", or a share count
// from 1 to MaxConsumableShares in canonical decimal ("4"; no sign, no
// leading zeros, no spaces). Anything else is an
// error naming the accepted values. String gives back the canonical form
// of the result.
func ParseConsumableCapacity(s string) (ConsumableCapacity, error) {
	switch s {
	case "", consumableDisabledFlag:
		return ConsumableCapacity{}, nil
	case consumableUnlimitedFlag:
		return ConsumableCapacity{Mode: ConsumableUnlimited}, nil
	case consumableMemoryFlag:
		return ConsumableCapacity{Mode: ConsumableMemory}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxConsumableShares || strconv.Itoa(n) != s {
		return ConsumableCapacity{}, fmt.Errorf("consumable capacity %q: use %q, %q, %q or a number of shares per GPU from 1 to %d",
			s, consumableDisabledFlag, consumableUnlimitedFlag, consumableMemoryFlag, MaxConsumableShares)
	}
	return ConsumableCapacity{Mode: ConsumableShares, Shares: n}, nil
}

// String returns the canonical option value: "disabled", "unlimited",
// "memory" or the share count. A value that ParseConsumableCapacity cannot
// return (an unknown mode, a share count out of range) gives
// "invalid(<mode>,<shares>)", which does not parse.
func (c ConsumableCapacity) String() string {
	if !c.valid() {
		return fmt.Sprintf("invalid(%d,%d)", int(c.Mode), c.Shares)
	}
	switch c.Mode {
	case ConsumableUnlimited:
		return consumableUnlimitedFlag
	case ConsumableMemory:
		return consumableMemoryFlag
	case ConsumableShares:
		return strconv.Itoa(c.Shares)
	}
	return consumableDisabledFlag
}

// Set parses s with ParseConsumableCapacity into c, so that
// *ConsumableCapacity is a flag.Value; on error c is unchanged.
func (c *ConsumableCapacity) Set(s string) error {
	v, err := ParseConsumableCapacity(s)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// Enabled reports whether c shares GPUs: it is valid and not disabled.
func (c ConsumableCapacity) Enabled() bool {
	return c.valid() && c.Mode != ConsumableDisabled
}

// valid reports whether ParseConsumableCapacity can return c.
func (c ConsumableCapacity) valid() bool {
	switch c.Mode {
	case ConsumableDisabled, ConsumableUnlimited, ConsumableMemory:
		return c.Shares == 0
	case ConsumableShares:
		return c.Shares >= 1 && c.Shares <= MaxConsumableShares
	}
	return false
}

// consumableEligible reports whether d is published with consumable
// capacity when it is on: a whole GPU that is not partitionable.
func consumableEligible(d devices.Device) bool {
	return d.Kind == devices.KindGPU && !d.Partitionable
}

// makeConsumable turns dev, the published whole GPU with memoryBytes of
// framebuffer, into a device that several claims share as c says. It
// leaves dev unchanged when c is not Enabled or the memory is too small
// for a valid policy.
func (c ConsumableCapacity) makeConsumable(dev *resourceapi.Device, memoryBytes uint64) {
	if !c.Enabled() {
		return
	}
	mem := clampInt64(memoryBytes) / memoryStep * memoryStep
	// "memory" needs min 1Mi + step 1Mi <= M; the other modes min 0 + step.
	if mem < 2*memoryStep {
		return
	}
	memory := func() *resource.Quantity { return resource.NewQuantity(mem, resource.BinarySI) }
	policy := &resourceapi.CapacityRequestPolicy{
		Default: resource.NewQuantity(0, resource.BinarySI),
		ValidRange: &resourceapi.CapacityRequestPolicyRange{
			Min:  resource.NewQuantity(0, resource.BinarySI),
			Max:  memory(),
			Step: resource.NewQuantity(memoryStep, resource.BinarySI),
		},
	}
	if c.Mode == ConsumableMemory {
		policy.Default = memory()
		policy.ValidRange.Min = resource.NewQuantity(memoryStep, resource.BinarySI)
	}
	capacity := make(map[resourceapi.QualifiedName]resourceapi.DeviceCapacity, len(dev.Capacity)+1)
	for name, v := range dev.Capacity {
		capacity[name] = v
	}
	capacity[CapacityMemory] = resourceapi.DeviceCapacity{Value: *memory(), RequestPolicy: policy}
	if c.Mode == ConsumableShares {
		shares := func() *resource.Quantity { return resource.NewQuantity(int64(c.Shares), resource.DecimalSI) }
		one := func() *resource.Quantity { return resource.NewQuantity(1, resource.DecimalSI) }
		r := &resourceapi.CapacityRequestPolicyRange{Min: one(), Max: shares()}
		if c.Shares > 1 {
			r.Step = one()
		}
		capacity[CapacityShares] = resourceapi.DeviceCapacity{
			Value:         *shares(),
			RequestPolicy: &resourceapi.CapacityRequestPolicy{Default: one(), ValidRange: r},
		}
	}
	dev.Capacity = capacity
	dev.AllowMultipleAllocations = ptrTo(true)
}

package health

import (
	"fmt"
	"time"
)

// Problem is what is wrong with a GPU, ordered by severity: a worse problem
// replaces a milder one, never the other way round.
type Problem int

const (
	// None: the GPU is healthy.
	None Problem = iota
	// Unmonitored: nothing is known to be wrong, but nothing is watched
	// either: the NVML event loop is down, or the GPU does not support
	// events. Not a device's own problem; it never hides a real one.
	Unmonitored
	// CriticalXID: the GPU reported a critical XID error that is not on the
	// ignore list.
	CriticalXID
	// DoubleBitECC: the GPU reported an uncorrectable (double-bit) ECC error.
	DoubleBitECC
	// GPULost: the GPU has fallen off the bus (XID 79, or NVML answers
	// ERROR_GPU_IS_LOST for it).
	GPULost
)

func (p Problem) String() string {
	switch p {
	case None:
		return "none"
	case Unmonitored:
		return "unmonitored"
	case CriticalXID:
		return "critical-xid"
	case DoubleBitECC:
		return "double-bit-ecc"
	case GPULost:
		return "gpu-lost"
	}
	return fmt.Sprintf("problem-%d", int(p))
}

// Reasons, the short names of problems (see DeviceState.Reason). They are
// valid Kubernetes label values, so they can be taint values.
const (
	ReasonUnmonitored  = "unmonitored"
	ReasonDoubleBitECC = "double-bit-ecc"
	ReasonGPULost      = "gpu-lost"
	// ReasonXIDPrefix is followed by the XID number: "xid-48".
	ReasonXIDPrefix = "xid-"
)

// DeviceState is the health of one GPU.
type DeviceState struct {
	// UUID names the GPU.
	UUID string
	// Problem is None for a healthy GPU.
	Problem Problem
	// Reason is "" for a healthy GPU, else a short label-value-safe name of
	// the problem: "xid-<n>" (also "xid-79" for a GPU lost with XID 79),
	// "double-bit-ecc", "gpu-lost" or "unmonitored".
	Reason string
	// Message explains the problem and the fix to an operator.
	Message string
	// Since is when the current problem began; zero when healthy. It does
	// not move while the problem lasts, even when more errors arrive.
	Since time.Time
}

// Healthy tells whether the GPU has no problem at all (an unmonitored GPU
// is not healthy).
func (s DeviceState) Healthy() bool { return s.Problem == None }

// Snapshot is the health of every monitored GPU at one point in time.
type Snapshot struct {
	// Devices are in the order of the UUIDs given to New.
	Devices []DeviceState
	// Monitored is false while the NVML event loop is down (then every GPU
	// without a problem of its own is Unmonitored).
	Monitored bool
}

// Device returns the state of the GPU with this UUID.
func (s Snapshot) Device(uuid string) (DeviceState, bool) {
	for _, d := range s.Devices {
		if d.UUID == uuid {
			return d, true
		}
	}
	return DeviceState{}, false
}

// Unhealthy counts the GPUs that are not healthy (unmonitored ones included).
func (s Snapshot) Unhealthy() int {
	n := 0
	for _, d := range s.Devices {
		if !d.Healthy() {
			n++
		}
	}
	return n
}

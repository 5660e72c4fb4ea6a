package health

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// DefaultIgnoredXIDs are XIDs that an application causes (and that the
// application, not the GPU, suffers from), so they do not make a GPU
// unhealthy:
//
//	13   graphics engine exception (e.g. an out-of-bounds access in a kernel)
//	31   GPU memory page fault
//	43   GPU stopped processing (the faulting context was killed)
//	45   preemptive cleanup, after a process was killed
//	68   video decoder (NVDEC) exception
//	109  context switch timeout
func DefaultIgnoredXIDs() []uint64 { return []uint64{13, 31, 43, 45, 68, 109} }

// XIDLost is the XID of a GPU that has fallen off the bus.
const XIDLost = 79

// IgnoredXIDs returns the effective ignore list: DefaultIgnoredXIDs plus
// additional, or additional alone when replace is set (replace with an empty
// list ignores nothing). The result is sorted and without duplicates.
func IgnoredXIDs(additional []uint64, replace bool) []uint64 {
	var out []uint64
	if !replace {
		out = DefaultIgnoredXIDs()
	}
	out = append(out, additional...)
	slices.Sort(out)
	return slices.Compact(out)
}

// ParseXIDs parses a comma-separated list of XIDs ("48, 63"); an empty
// string gives an empty list.
func ParseXIDs(s string) ([]uint64, error) {
	var out []uint64
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		x, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("XID %q is not a number: give a comma-separated list such as \"13,31\"", f)
		}
		out = append(out, x)
	}
	return out, nil
}

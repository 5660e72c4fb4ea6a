package deviceplugin

import (
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/inventory"
)

// Pair scores: how well two GPUs work together. Higher is better.
const (
	scoreSameNUMA  = 10
	scorePerNVLink = 100
)

// topology is the interconnect of the node's GPUs, read once at start.
type topology struct {
	// numa[i] is GPU i's NUMA node, -1 when unknown.
	numa []int
	// score[i][j] rates the pair (i, j); symmetric, zero diagonal.
	score [][]int
	// sources names what the scores are based on, for the log.
	sources []string
}

// extend returns t for n >= len(t.numa) GPUs: the GPUs added at the end
// (the unusable ones) have no NUMA node and score 0 with every GPU.
func (t topology) extend(n int) topology {
	for len(t.numa) < n {
		t.numa = append(t.numa, -1)
	}
	for i := range t.score {
		for len(t.score[i]) < n {
			t.score[i] = append(t.score[i], 0)
		}
	}
	for len(t.score) < n {
		t.score = append(t.score, make([]int, n))
	}
	return t
}

// nvmlCall runs f and reports success. go-nvml's mock panics for methods a
// mock machine does not implement; that counts as unsupported.
func nvmlCall[T any](f func() (T, nvml.Return)) (v T, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
		}
	}()
	v, ret := f()
	return v, ret == nvml.SUCCESS
}

// readTopology asks NVML (nil: nothing known) for the GPUs' NUMA nodes, their
// PCIe common ancestors and NVLinks. Every source that is unsupported is
// skipped for all GPUs.
func readTopology(logger klog.Logger, lib nvml.Interface, devs []inventory.Device) topology {
	n := len(devs)
	t := topology{numa: make([]int, n), score: make([][]int, n)}
	for i := range t.score {
		t.score[i] = make([]int, n)
		t.numa[i] = -1
	}
	if lib == nil || n == 0 {
		return t
	}
	handles := make([]nvml.Device, n)
	for i, d := range devs {
		h, ok := nvmlCall(func() (nvml.Device, nvml.Return) { return lib.DeviceGetHandleByIndex(d.Index) })
		if !ok {
			logger.Info("Cannot get an NVML handle of a GPU; no topology-aware preferred allocation", "index", d.Index)
			return t
		}
		handles[i] = h
	}

	// NUMA nodes.
	numaOK := true
	for i, h := range handles {
		node, ok := nvmlCall(h.GetNumaNodeId)
		if !ok {
			numaOK = false
			break
		}
		t.numa[i] = node
	}
	if numaOK {
		t.sources = append(t.sources, "numa")
		for i := range n {
			for j := range n {
				if i != j && t.numa[i] >= 0 && t.numa[i] == t.numa[j] {
					t.score[i][j] += scoreSameNUMA
				}
			}
		}
	} else {
		for i := range t.numa {
			t.numa[i] = -1
		}
	}

	// PCIe common ancestors: closer is better.
	anc := make([][]int, n)
	ancOK := true
	for i := 0; i < n && ancOK; i++ {
		anc[i] = make([]int, n)
		for j := i + 1; j < n; j++ {
			level, ok := nvmlCall(func() (nvml.GpuTopologyLevel, nvml.Return) {
				return handles[i].GetTopologyCommonAncestor(handles[j])
			})
			if !ok {
				ancOK = false
				break
			}
			anc[i][j] = ancestorScore(level)
		}
	}
	if ancOK {
		t.sources = append(t.sources, "pcie")
		for i := range n {
			for j := i + 1; j < n; j++ {
				t.score[i][j] += anc[i][j]
				t.score[j][i] += anc[i][j]
			}
		}
	}

	// NVLinks: count the active links between every pair.
	byBus := map[string]int{}
	for i, d := range devs {
		if d.PCIBusID != "" {
			byBus[normalizeBusID(d.PCIBusID)] = i
		}
	}
	links := make([][]int, n)
	linkOK := true
	for i := 0; i < n && linkOK; i++ {
		links[i] = make([]int, n)
		for l := range nvml.NVLINK_MAX_LINKS {
			state, ok := nvmlCall(func() (nvml.EnableState, nvml.Return) { return handles[i].GetNvLinkState(l) })
			if !ok {
				if l == 0 {
					linkOK = false // no NVLink support at all
				}
				break
			}
			if state != nvml.FEATURE_ENABLED {
				continue
			}
			pci, ok := nvmlCall(func() (nvml.PciInfo, nvml.Return) { return handles[i].GetNvLinkRemotePciInfo(l) })
			if !ok {
				continue
			}
			if j, found := byBus[normalizeBusID(cString(pci.BusId[:]))]; found && j != i {
				links[i][j]++
			}
		}
	}
	if linkOK {
		t.sources = append(t.sources, "nvlink")
		for i := range n {
			for j := range n {
				// Count each link once even if both ends report it.
				t.score[i][j] += scorePerNVLink * max(links[i][j], links[j][i])
			}
		}
	}
	return t
}

func ancestorScore(level nvml.GpuTopologyLevel) int {
	switch level {
	case nvml.TOPOLOGY_INTERNAL:
		return 60
	case nvml.TOPOLOGY_SINGLE:
		return 50
	case nvml.TOPOLOGY_MULTIPLE:
		return 40
	case nvml.TOPOLOGY_HOSTBRIDGE:
		return 30
	case nvml.TOPOLOGY_NODE:
		return 20
	}
	return 0
}

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// normalizeBusID turns NVML's "00000000:88:00.0" and the inventory's
// "0000:88:00.0" into the same lower-case string.
func normalizeBusID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	domain, rest, ok := strings.Cut(s, ":")
	if !ok {
		return s
	}
	if len(domain) > 4 {
		domain = domain[len(domain)-4:]
	}
	return domain + ":" + rest
}

// project returns the topology of the devices whose GPUs are at positions
// (in the order of the topology's GPUs; -1: an unusable GPU, no NUMA node
// and score 0): two MIG devices of one GPU score 0, like a GPU with itself.
func (t topology) project(positions []int) topology {
	out := topology{sources: t.sources, numa: make([]int, len(positions)), score: make([][]int, len(positions))}
	for i, a := range positions {
		out.numa[i] = -1
		if a >= 0 && a < len(t.numa) {
			out.numa[i] = t.numa[a]
		}
		out.score[i] = make([]int, len(positions))
		for j, b := range positions {
			if a >= 0 && b >= 0 && a < len(t.score) && b < len(t.score[a]) {
				out.score[i][j] = t.score[a][b]
			}
		}
	}
	return out
}

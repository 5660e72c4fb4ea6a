package deviceplugin

import (
	"context"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// GetPreferredAllocation picks, per container, AllocationSize of the
// available devices including the must-include ones: for full GPUs the set
// with the best interconnect (NVLink, PCIe proximity, same NUMA node); for
// replicas, replicas of the least-used GPUs.
func (p *Plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{ContainerResponses: make([]*pluginapi.ContainerPreferredAllocationResponse, 0, len(req.GetContainerRequests()))}
	for _, creq := range req.GetContainerRequests() {
		ids, err := p.preferred(creq.GetAvailableDeviceIDs(), creq.GetMustIncludeDeviceIDs(), int(creq.GetAllocationSize()))
		if err != nil {
			return nil, err
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

func (p *Plugin) preferred(available, must []string, size int) ([]string, error) {
	if size < len(must) || size > len(available) {
		return nil, status.Errorf(codes.InvalidArgument, "preferred allocation: size %d with %d must-include and %d available devices", size, len(must), len(available))
	}
	if p.cfg.Replicas > 1 {
		return p.preferredReplicas(available, must, size)
	}
	return p.preferredGPUs(available, must, size)
}

// preferredGPUs grows the must-include set greedily by the available GPU
// with the highest summed pair score to the set; without must-include GPUs it
// tries every available GPU as the seed and keeps the best set.
func (p *Plugin) preferredGPUs(available, must []string, size int) ([]string, error) {
	n := len(p.gpus)
	// state per GPU: 0 not available, 1 available, 2 chosen.
	state := make([]uint8, n)
	for _, id := range available {
		i, ok := p.byID[id]
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "preferred allocation: unknown device %q", id)
		}
		state[i] = 1
	}
	chosen := make([]int, 0, size)
	for _, id := range must {
		i, ok := p.byID[id]
		if !ok || state[i] == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "preferred allocation: must-include device %q is not available", id)
		}
		if state[i] == 1 {
			state[i] = 2
			chosen = append(chosen, i)
		}
	}
	gain := make([]int, n)
	best := chosen
	if len(chosen) == 0 && size > 0 {
		bestScore := -1
		buf := make([]int, 0, size)
		for seed := range n {
			if state[seed] != 1 {
				continue
			}
			set, score := p.grow(state, gain, append(buf[:0], seed), size)
			if score > bestScore {
				bestScore = score
				best = append(best[:0:0], set...)
			}
		}
	} else {
		best, _ = p.grow(state, gain, chosen, size)
	}
	// Report in GPU order.
	inSet := make([]bool, n)
	for _, i := range best {
		inSet[i] = true
	}
	out := make([]string, 0, size)
	for i := range n {
		if inSet[i] {
			out = append(out, p.gpus[i].id)
		}
	}
	return out, nil
}

// grow extends set to size from the GPUs with state 1 and returns it with its
// total pair score. state and gain are scratch space, restored on return.
func (p *Plugin) grow(state []uint8, gain []int, set []int, size int) ([]int, int) {
	score := p.topo.score
	for i := range gain {
		gain[i] = 0
	}
	total := 0
	for k, a := range set {
		for _, b := range set[:k] {
			total += score[a][b]
		}
		for c := range gain {
			gain[c] += score[c][a]
		}
	}
	for len(set) < size {
		pick := -1
		for c, s := range state {
			if s == 1 && !contains(set, c) && (pick < 0 || gain[c] > gain[pick]) {
				pick = c
			}
		}
		total += gain[pick]
		set = append(set, pick)
		for c := range gain {
			gain[c] += score[c][pick]
		}
	}
	return set, total
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// preferredReplicas takes the must-include replicas, then one replica at a
// time of the GPU with the fewest replicas in use (allocated elsewhere or
// already picked), lowest GPU first on ties.
func (p *Plugin) preferredReplicas(available, must []string, size int) ([]string, error) {
	n := len(p.gpus)
	free := make([][]string, n)
	used := make([]int, n)
	for i := range used {
		used[i] = p.cfg.Replicas
	}
	isAvail := make(map[string]bool, len(available))
	for _, id := range available {
		i, ok := p.gpuOf(id)
		if !ok || id == p.gpus[i].id {
			return nil, status.Errorf(codes.InvalidArgument, "preferred allocation: unknown device %q", id)
		}
		if isAvail[id] {
			continue
		}
		isAvail[id] = true
		used[i]--
	}
	out := make([]string, 0, size)
	taken := make(map[string]bool, size)
	for _, id := range must {
		if !isAvail[id] {
			return nil, status.Errorf(codes.InvalidArgument, "preferred allocation: must-include device %q is not available", id)
		}
		if taken[id] {
			continue
		}
		taken[id] = true
		i, _ := p.gpuOf(id)
		used[i]++
		out = append(out, id)
	}
	for _, id := range available {
		if !taken[id] {
			i, _ := p.gpuOf(id)
			free[i] = append(free[i], id)
		}
	}
	for i := range free {
		sortReplicas(free[i])
	}
	for len(out) < size {
		pick := -1
		for i := range n {
			if len(free[i]) > 0 && (pick < 0 || used[i] < used[pick]) {
				pick = i
			}
		}
		if pick < 0 {
			break
		}
		out = append(out, free[pick][0])
		free[pick] = free[pick][1:]
		used[pick]++
	}
	return out, nil
}

// sortReplicas orders the replica IDs of one GPU by replica number (few:
// insertion sort).
func sortReplicas(ids []string) {
	num := func(id string) int {
		for k := len(id) - 1; k >= 0; k-- {
			if id[k] == ':' {
				v, _ := strconv.Atoi(id[k+1:])
				return v
			}
		}
		return 0
	}
	for a := 1; a < len(ids); a++ {
		for b := a; b > 0 && num(ids[b]) < num(ids[b-1]); b-- {
			ids[b], ids[b-1] = ids[b-1], ids[b]
		}
	}
}

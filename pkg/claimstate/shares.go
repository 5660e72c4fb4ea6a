package claimstate

import (
	"fmt"
	"sort"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// Shares of GPUs (consumable capacity, KEP-5075): a GPU published with
// allowMultipleAllocations is allocated to several claims, each with a
// share ID and the capacity it consumed (its memory and, with a share
// count, its "shares" of the GPU's compute). The State holds a GPU either
// exclusively (one claim; a share that consumed all of the GPU's capacity
// counts as exclusive) or as shares (any number of claims whose consumed
// capacities fit the GPU); it checks both at prepare, whatever the
// scheduler decided, and refuses a violation with an error naming both
// claims.

// Capacity names of a shared GPU; those of the published slices.
const (
	CapacityMemory resourceapi.QualifiedName = "memory"
	CapacityShares resourceapi.QualifiedName = "shares"
)

// shareOf returns the share ID of r and the limits of its share of dev:
// nil limits when the allocation has no share ID or consumed all of the
// device's capacity (the claim then uses it exclusively).
func (s *State) shareOf(r resourceapi.DeviceRequestAllocationResult, dev devices.Device) (string, *checkpoint.Share) {
	if r.ShareID == nil || *r.ShareID == "" {
		return "", nil
	}
	id := string(*r.ShareID)
	sh := &checkpoint.Share{}
	if q, ok := r.ConsumedCapacity[CapacityMemory]; ok {
		sh.MemoryBytes = q.Value()
	}
	if q, ok := r.ConsumedCapacity[CapacityShares]; ok && s.opts.ComputeShares > 0 {
		sh.ComputeShares, sh.ComputeTotal = q.Value(), s.opts.ComputeShares
	}
	memWhole := sh.MemoryBytes >= memoryCapacity(dev)
	computeWhole := sh.ComputeTotal == 0 || sh.ComputeShares >= sh.ComputeTotal
	if memWhole && computeWhole {
		return id, nil
	}
	return id, sh
}

// memoryCapacity is the published memory capacity of dev: its memory
// rounded down to a MiB (the step of the memory request policy).
func memoryCapacity(dev devices.Device) int64 {
	return int64(dev.GPU.MemoryBytes>>20) << 20
}

// sharingShare is the sharing view of a recorded share.
func sharingShare(d checkpoint.PreparedDevice) *sharing.Share {
	if d.Share == nil {
		return nil
	}
	return &sharing.Share{ID: d.ShareID, MemoryBytes: d.Share.MemoryBytes, ComputeShares: d.Share.ComputeShares, ComputeTotal: d.Share.ComputeTotal}
}

// checkOneShareEach refuses a claim that got two shares of one device (two
// requests each given part of the same GPU): its container sees the GPU
// once, with one set of limits.
func checkOneShareEach(devs []checkpoint.PreparedDevice, ref string) error {
	shares := map[string][]string{}
	for _, d := range devs {
		if d.ShareID != "" {
			shares[d.Device] = append(shares[d.Device], d.Requests...)
		}
	}
	for name, reqs := range shares {
		if len(reqs) > 1 {
			return fmt.Errorf("%s: requests %s each got a share of device %s: a container sees a GPU once, with one set of limits; "+
				"ask for the GPU in one request with the sum of their capacities", ref, strings.Join(reqs, ", "), name)
		}
	}
	return nil
}

// shareConflictLocked returns why rec's share d cannot be prepared: the
// device is held exclusively by another claim, or the shares that other
// claims hold leave too little capacity. The caller holds s.mu.
func (s *State) shareConflictLocked(rec *checkpoint.ClaimRecord, d checkpoint.PreparedDevice) *conflict {
	if holder := s.owners[d.Device]; holder != nil && holder.ClaimUID != rec.ClaimUID {
		return &conflict{device: d, holder: holder}
	}
	dev, ok := s.opts.Devices.Get(d.Device)
	if !ok {
		return nil
	}
	var mem, compute int64
	var holders []*checkpoint.ClaimRecord
	for uid, other := range s.shares[d.Device] {
		if uid == rec.ClaimUID {
			continue
		}
		for _, od := range other.Devices {
			if od.Device == d.Device && od.Share != nil {
				mem += od.Share.MemoryBytes
				compute += od.Share.ComputeShares
				holders = append(holders, other)
				break
			}
		}
	}
	if len(holders) == 0 {
		return nil // alone on the GPU: the scheduler checked it against the device's capacity
	}
	sort.Slice(holders, func(a, b int) bool { return holders[a].ClaimUID < holders[b].ClaimUID })
	switch {
	case mem+d.Share.MemoryBytes > memoryCapacity(dev):
		return &conflict{device: d, holder: holders[0], capacity: fmt.Sprintf("memory: it consumed %d MiB, and the shares of %s hold %d MiB of the GPU's %d MiB",
			d.Share.MemoryBytes>>20, claimRefs(holders), mem>>20, memoryCapacity(dev)>>20)}
	case d.Share.ComputeTotal > 0 && compute+d.Share.ComputeShares > d.Share.ComputeTotal:
		return &conflict{device: d, holder: holders[0], capacity: fmt.Sprintf("shares: it consumed %d, and the shares of %s hold %d of the GPU's %d",
			d.Share.ComputeShares, claimRefs(holders), compute, d.Share.ComputeTotal)}
	}
	return nil
}

// exclusiveConflictLocked returns the claim holding a share of device d,
// which an exclusive use of d conflicts with. The caller holds s.mu.
func (s *State) exclusiveConflictLocked(rec *checkpoint.ClaimRecord, d checkpoint.PreparedDevice) *conflict {
	uids := make([]string, 0, len(s.shares[d.Device]))
	for uid := range s.shares[d.Device] {
		if uid != rec.ClaimUID {
			uids = append(uids, uid)
		}
	}
	if len(uids) == 0 {
		return nil
	}
	sort.Strings(uids)
	return &conflict{device: d, holder: s.shares[d.Device][uids[0]]}
}

func claimRefs(recs []*checkpoint.ClaimRecord) string {
	refs := make([]string, 0, len(recs))
	for _, r := range recs {
		refs = append(refs, claimRef(r.Namespace, r.Name, types.UID(r.ClaimUID)))
	}
	return strings.Join(refs, ", ")
}

// holdsShare tells whether rec holds a share of the device named name.
func holdsShare(rec *checkpoint.ClaimRecord, name string) bool {
	for _, d := range rec.Devices {
		if d.Device == name && d.Share != nil {
			return true
		}
	}
	return false
}

// HoldsShares tells whether the prepared claim with this UID holds a share
// of a GPU that leaves room for others (a device with Share limits).
func (s *State) HoldsShares(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	pc := s.prepared[uid]
	if pc == nil {
		return false
	}
	for _, d := range pc.rec.Devices {
		if d.Share != nil {
			return true
		}
	}
	return false
}

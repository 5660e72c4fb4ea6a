package inventory_test

import (
	"regexp"
	"testing"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

func TestDiscoverMIGMock(t *testing.T) {
	for _, tc := range []struct {
		machine string
		want0   []string // profiles of GPU 0's MIG devices
		want1   []string
	}{
		{"dgxa100-mig", []string{"1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"}, []string{"7g.40gb"}},
		{"dgxh100-mig", []string{"1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"}, []string{"7g.80gb"}},
	} {
		t.Run(tc.machine, func(t *testing.T) {
			lib, err := mockmachine.New(tc.machine, "node-a")
			if err != nil {
				t.Fatal(err)
			}
			inv, err := inventory.Discover(lib)
			if err != nil {
				t.Fatal(err)
			}
			if !inv.Devices[0].MIGEnabled || !inv.Devices[1].MIGEnabled || inv.Devices[2].MIGEnabled {
				t.Fatalf("MIGEnabled = %v %v %v, want true true false", inv.Devices[0].MIGEnabled, inv.Devices[1].MIGEnabled, inv.Devices[2].MIGEnabled)
			}
			got := map[int][]string{}
			uuids := map[string]bool{}
			migUUID := regexp.MustCompile(`^MIG-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
			for _, m := range inv.MIGDevices {
				got[m.ParentIndex] = append(got[m.ParentIndex], m.Profile)
				if !migUUID.MatchString(m.UUID) || uuids[m.UUID] {
					t.Errorf("MIG UUID %q malformed or repeated", m.UUID)
				}
				uuids[m.UUID] = true
				if m.ParentUUID != inv.Devices[m.ParentIndex].UUID || m.ParentMinor != inv.Devices[m.ParentIndex].Minor {
					t.Errorf("%s: parent %s/%d, want %s/%d", m.UUID, m.ParentUUID, m.ParentMinor, inv.Devices[m.ParentIndex].UUID, inv.Devices[m.ParentIndex].Minor)
				}
				if m.Multiprocessors == 0 || m.MemoryBytes == 0 || m.CopyEngines == 0 {
					t.Errorf("%s (%s): capacities missing: %+v", m.UUID, m.Profile, m)
				}
			}
			if len(inv.MIGDevices) != 5 || !equal(got[0], tc.want0) || !equal(got[1], tc.want1) {
				t.Errorf("profiles = %v, want GPU 0 %v and GPU 1 %v", got, tc.want0, tc.want1)
			}
			// Same seed, same UUIDs: a restarted plugin sees the same devices.
			lib2, _ := mockmachine.New(tc.machine, "node-a")
			inv2, err := inventory.Discover(lib2)
			if err != nil {
				t.Fatal(err)
			}
			for i := range inv.MIGDevices {
				if inv.MIGDevices[i] != inv2.MIGDevices[i] {
					t.Errorf("MIG device %d differs between two discoveries: %+v vs %+v", i, inv.MIGDevices[i], inv2.MIGDevices[i])
				}
			}
		})
	}
}

func TestPlainMockHasNoMIG(t *testing.T) {
	lib, err := mockmachine.New("dgxa100", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.MIGDevices) != 0 || inv.Devices[0].MIGEnabled {
		t.Errorf("plain mock has MIG devices %v", inv.MIGDevices)
	}
}

func TestMIGProfileName(t *testing.T) {
	for _, tc := range []struct {
		gi, giSlices, ciSlices int
		mem, gpuMem            uint64
		want                   string
	}{
		{0, 1, 1, 4864, 40960, "1g.5gb"},
		{0, 1, 1, 9856, 81920, "1g.10gb"},
		{2, 3, 1, 19968, 40960, "1c.3g.20gb"},
		{7, 1, 1, 4864, 40960, "1g.5gb+me"},
		{4, 7, 7, 40192, 40960, "7g.40gb"},
	} {
		if got := inventory.MIGProfileName(tc.gi, uint32(tc.giSlices), uint32(tc.ciSlices), tc.mem, tc.gpuMem); got != tc.want {
			t.Errorf("inventory.MIGProfileName(%+v) = %q, want %q", tc, got, tc.want)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

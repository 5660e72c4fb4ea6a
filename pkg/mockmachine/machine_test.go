package mockmachine

import (
	"strings"
	"testing"

	"github.com/gpudra/gpudra/pkg/inventory"
)

func discoverMock(t *testing.T, machine, seed string) *inventory.Inventory {
	t.Helper()
	lib, err := New(machine, seed)
	if err != nil {
		t.Fatalf("New(%q, %q): %v", machine, seed, err)
	}
	t.Cleanup(func() { lib.Shutdown() })
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatalf("Discover(%q): %v", machine, err)
	}
	return inv
}

func TestMockMachines(t *testing.T) {
	got := strings.Join(Names(), ",")
	if got != "dgxa100,dgxa100-80gb,dgxb200,dgxh100,dgxh200" {
		t.Errorf("Names() = %s", got)
	}
}

func TestMockUUIDsAreDeterministic(t *testing.T) {
	uuids := func(machine, seed string) []string {
		var out []string
		for _, d := range discoverMock(t, machine, seed).Devices {
			out = append(out, d.UUID)
		}
		return out
	}
	seen := map[string]string{}
	for _, machine := range Names() {
		a := uuids(machine, "node-1")
		b := uuids(machine, "node-1")
		c := uuids(machine, "node-2")
		if strings.Join(a, ",") != strings.Join(b, ",") {
			t.Errorf("%s: same seed, different UUIDs:\n%v\n%v", machine, a, b)
		}
		for i := range a {
			if a[i] == c[i] {
				t.Errorf("%s: GPU %d has UUID %s with two different seeds", machine, i, a[i])
			}
		}
		// Two machines never share UUIDs either.
		for _, u := range append(a, c...) {
			if other, dup := seen[u]; dup && other != machine {
				t.Errorf("UUID %s on both %s and %s", u, other, machine)
			}
			seen[u] = machine
		}
	}
}

func TestNewUnknownMachine(t *testing.T) {
	if _, err := New("nope", ""); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("New(nope): %v", err)
	}
	if Known("nope") || !Known("dgxh100") || !Known("dgxa100"+MIGSuffix) {
		t.Error("Known disagrees with New")
	}
}

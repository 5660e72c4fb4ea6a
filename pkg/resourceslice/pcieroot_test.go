package resourceslice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gpudra/gpudra/pkg/devices"
)

// fakeSysfs is a sysfs tree in a temp dir, laid out as the kernel does:
// devices/pci<domain>:<bus>/<bridge>/.../<bus ID> with a vendor file, and
// bus/pci/devices/<bus ID> a relative symlink to it.
type fakeSysfs struct {
	t    *testing.T
	root string
}

func newFakeSysfs(t *testing.T) *fakeSysfs {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bus", "pci", "devices"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &fakeSysfs{t: t, root: root}
}

// device creates the device directory at devPath (relative to devices/)
// with the vendor file, unless vendor is empty.
func (s *fakeSysfs) device(devPath, vendor string) {
	s.t.Helper()
	dir := filepath.Join(s.root, "devices", devPath)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	if vendor != "" {
		if err := os.WriteFile(filepath.Join(dir, "vendor"), []byte(vendor+"\n"), 0o444); err != nil {
			s.t.Fatal(err)
		}
	}
}

// link makes bus/pci/devices/<name> point at devices/<devPath>, relatively,
// as the kernel's links do ("../../../devices/...").
func (s *fakeSysfs) link(name, devPath string) {
	s.t.Helper()
	if err := os.Symlink(filepath.Join("..", "..", "..", "devices", devPath), filepath.Join(s.root, "bus", "pci", "devices", name)); err != nil {
		s.t.Fatal(err)
	}
}

func TestPCIeRootResolver(t *testing.T) {
	s := newFakeSysfs(t)
	// An NVIDIA GPU behind two bridges, as on a DGX.
	s.device("pci0000:17/0000:17:00.0/0000:18:00.0", "")
	s.device("pci0000:17/0000:17:00.0/0000:18:00.0/0000:19:00.0", "0x10de")
	s.link("0000:19:00.0", "pci0000:17/0000:17:00.0/0000:18:00.0/0000:19:00.0")
	// A GPU in a second PCI domain, directly below its root.
	s.device("pci0001:80/0001:80:00.0", "0x10de")
	s.link("0001:80:00.0", "pci0001:80/0001:80:00.0")
	// A NIC (Mellanox) at an address NVML could report for a mock GPU.
	s.device("pci0000:3a/0000:3b:00.0", "0x15b3")
	s.link("0000:3b:00.0", "pci0000:3a/0000:3b:00.0")
	// A link that resolves to another device than its name.
	s.device("pci0000:50/0000:51:00.0", "0x10de")
	s.link("0000:52:00.0", "pci0000:50/0000:51:00.0")
	// An entry without a vendor file.
	s.device("pci0000:60/0000:61:00.0", "")
	s.link("0000:61:00.0", "pci0000:60/0000:61:00.0")
	// A link outside devices/pci*.
	s.device("platform/0000:70:00.0", "0x10de")
	s.link("0000:70:00.0", "platform/0000:70:00.0")

	resolve := PCIeRootResolver(s.root)
	for busID, want := range map[string]string{
		"0000:19:00.0": "pci0000:17",
		"0001:80:00.0": "pci0001:80",
	} {
		got, err := resolve(busID)
		if err != nil || got != want {
			t.Errorf("resolve(%s) = %q, %v; want %q", busID, got, err, want)
		}
	}

	for _, c := range []struct {
		name, busID, want string
	}{
		{"bus ID mismatch", "0000:52:00.0", "must end with 0000:52:00.0"},
		{"not NVIDIA", "0000:3b:00.0", "vendor 0x15b3"},
		{"no vendor file", "0000:61:00.0", "reading its vendor"},
		{"missing entry", "0000:99:00.0", "0000:99:00.0"},
		{"not below a PCI root", "0000:70:00.0", "must start with"},
		{"malformed bus ID", "00000000:19:00.0", "invalid PCI Bus ID"},
		{"upper-case bus ID", "0000:3B:00.0", "invalid PCI Bus ID"},
		{"path in bus ID", "../../../etc", "invalid PCI Bus ID"},
		{"empty bus ID", "", "empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := resolve(c.busID)
			if err == nil || got != "" {
				t.Fatalf("resolve(%q) = %q, %v; want an error", c.busID, got, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("resolve(%q): error %q does not say %q", c.busID, err, c.want)
			}
		})
	}

	// Another root: nothing there.
	if got, err := PCIeRootResolver(t.TempDir())("0000:19:00.0"); err == nil {
		t.Errorf("resolving in an empty sysfs root: %q", got)
	}
}

// TestPCIeRootResolverInDevices: Devices publishes the pcieRoot of the GPUs
// the resolver finds, and leaves it out for the others.
func TestPCIeRootResolverInDevices(t *testing.T) {
	inv := mockInventory(t, "dgxh100", "node-1")
	s := newFakeSysfs(t)
	g := inv.Devices[0]
	s.device("pci0000:00/"+g.PCIBusID, "0x10de")
	s.link(g.PCIBusID, "pci0000:00/"+g.PCIBusID)
	devs := Devices(inv, devices.FromInventory(inv), Options{PCIeRoot: PCIeRootResolver(s.root)})
	for i, d := range devs {
		root, ok := d.Attributes[AttrPCIeRoot]
		if i == 0 {
			if !ok || root.StringValue == nil || *root.StringValue != "pci0000:00" {
				t.Errorf("%s: pcieRoot %v, want pci0000:00", d.Name, root)
			}
			continue
		}
		if ok {
			t.Errorf("%s: pcieRoot %v without a sysfs entry", d.Name, root)
		}
	}
}

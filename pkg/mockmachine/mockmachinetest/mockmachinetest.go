// Package mockmachinetest gives tests a mock GPU machine and its host files in
// one call, and skips tests that need device nodes where they cannot be made.
package mockmachinetest

import (
	"errors"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// Machine returns the initialized go-nvml mock machine (e.g. "dgxh100") with
// UUIDs seeded by seed, and its inventory.
func Machine(t testing.TB, machine, seed string) (*server.Server, *inventory.Inventory) {
	t.Helper()
	lib, err := mockmachine.New(machine, seed)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	return lib, inv
}

// Host lays out inv's mock driver files and device nodes with root as both
// driver root and device root.
func Host(t testing.TB, root string, inv *inventory.Inventory) {
	t.Helper()
	SkipWithoutMknod(t, mockmachine.LayOutHost(mockmachine.HostOptions{DriverRoot: root, DevRoot: root}, inv))
}

// SkipWithoutMknod skips the test when err says that device nodes could not
// be created (no CAP_MKNOD), and fails it on any other error.
func SkipWithoutMknod(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, mockmachine.ErrNoMknod) {
		t.Skipf("needs CAP_MKNOD for mock device nodes: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Command fakedriverroot lays out a fake NVIDIA driver root for the e2e
// phase that runs the chart without mock mode (hack/e2e.sh, phase "real
// NVML"): the driver files and device nodes of a mock machine
// (mockmachine.LayOutHost, as the plugin lays out its mock host), with the
// mock NVML library of test/mocknvml as the driver's libnvidia-ml, where the
// real backend finds it (inventory.FindNVMLLibrary). Pointed at by the
// chart's nvidiaDriverRoot, the plugins then discover, publish, prepare and
// watch the GPUs through the NVML C interface.
//
//	go run ./test/e2e/fakedriverroot -root DIR -lib bin/mocknvml/libnvidia-ml.so.1 -machine dgxh100 -seed SEED
//
// The library answers for the machine and seed of its environment
// (GPUDRA_MOCK_NVML_MACHINE, GPUDRA_MOCK_NVML_SEED); -machine and -seed must
// be the same, so that nvidia-smi and the device nodes match its GPUs. It
// needs root (device nodes). Running it again updates the root in place.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gpudra/gpudra/pkg/durable"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

func main() {
	root := flag.String("root", "", "the driver root to lay out (created if missing)")
	lib := flag.String("lib", "bin/mocknvml/libnvidia-ml.so.1", "the mock NVML library (make mocknvml)")
	machine := flag.String("machine", "dgxh100", "mock machine, as GPUDRA_MOCK_NVML_MACHINE")
	seed := flag.String("seed", "", "seed of the UUIDs, as GPUDRA_MOCK_NVML_SEED")
	flag.Parse()
	if *root == "" || *seed == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: fakedriverroot -root DIR -seed SEED [-lib FILE] [-machine NAME]")
		os.Exit(2)
	}
	if err := layOut(*root, *lib, *machine, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "fakedriverroot:", err)
		os.Exit(1)
	}
}

func layOut(root, lib, machine, seed string) error {
	data, err := os.ReadFile(lib)
	if err != nil {
		return fmt.Errorf("the mock NVML library: %w (make mocknvml builds it)", err)
	}
	srv, err := mockmachine.New(machine, seed)
	if err != nil {
		return err
	}
	inv, err := inventory.Discover(srv)
	if err != nil {
		return err
	}
	if err := mockmachine.LayOutHost(mockmachine.HostOptions{DriverRoot: root, DevRoot: root}, inv); err != nil {
		return err
	}
	// LayOutHost's libnvidia-ml.so.<version> is a placeholder (the SONAME
	// link libnvidia-ml.so.1 points at it): make it the library.
	path := filepath.Join(root, mockmachine.LibDir, "libnvidia-ml.so."+inv.DriverVersion)
	if err := durable.WriteFile(path, data, 0o755); err != nil {
		return err
	}
	if got := inventory.FindNVMLLibrary(root); got == "" {
		return fmt.Errorf("%s: no libnvidia-ml.so.1 where the real backend looks", root)
	}
	fmt.Printf("fake driver root %s: driver %s, %d GPUs of mock %s (seed %q), NVML library %s\n",
		root, inv.DriverVersion, len(inv.Devices), machine, seed, path)
	return nil
}

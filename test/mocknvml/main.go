// Command mocknvml is a mock of the NVIDIA driver's NVML library,
// libnvidia-ml.so.1, for tests on machines without GPUs. Build it with
//
//	go build -buildmode=c-shared -o libnvidia-ml.so.1 ./test/mocknvml
//
// (make mocknvml: bin/mocknvml/libnvidia-ml.so.1) and load it the way the
// driver's library is loaded: go-nvml's nvml.New(nvml.WithLibraryPath(p)),
// or inventory.LoadNVML with a driver root that holds it, or the dynamic
// linker. It exports the NVML C functions that this project (discovery, MIG
// discovery, CDI generation through NVIDIA's nvcdi, the health monitor, the
// device plugin's topology) calls, under the versioned names the real
// library has (nvmlInit_v2, nvmlDeviceGetCount_v2,
// nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetPciInfo_v3,
// nvmlEventSetWait_v2, nvmlComputeInstanceGetInfo_v2, ...), with the C
// types of NVML's header (mocknvml.h): the exports_*.go files. It exports
// only the struct versions it implements (nvmlDeviceGetPciInfo_v3, not
// nvmlDeviceGetPciInfo), so that go-nvml, which probes the versioned names,
// never calls it with an older struct. Load it lazily (RTLD_LAZY, as go-nvml
// does): the go-nvml code inside it leaves the NVML functions the mock does
// not implement undefined.
//
// Behind the C functions is one of the project's mock machines
// (pkg/mockmachine: dgxa100, dgxh100, dgxh200, dgxb200 and their -mig
// variants) with its injectable events (mockmachine.Events), so the library
// answers exactly what the Go mock of the same machine and seed answers,
// MIG profiles, placements and GPU/compute instances included. It ships in
// no production image: it is for test images and tests only.
//
// # MIG lifecycle
//
// The library also exports the calls that change MIG state, bridged to the
// mock machine, which decides what they do (pkg/mockmachine: MIG mode
// taking effect at once on Hopper and later, pending a reset on Ampere;
// placements that overlap an instance, ERROR_INSUFFICIENT_RESOURCES; a GPU
// instance with compute instances, ERROR_IN_USE): nvmlDeviceSetMigMode,
// nvmlDeviceCreateGpuInstance(WithPlacement),
// nvmlGpuInstanceCreateComputeInstance(WithPlacement),
// nvmlGpuInstanceDestroy and nvmlComputeInstanceDestroy. The MIG queries
// (nvmlDeviceGetGpuInstances, nvmlDeviceGetMigDeviceHandleByIndex, ...)
// answer what exists at the time of the call. The handle of a destroyed
// GPU or compute instance, and of the MIG device it made, is never reused:
// every call on it returns ERROR_INVALID_ARGUMENT. By default the MIG state
// lives as long as the process; with migState (GPUDRA_MOCK_NVML_MIG_STATE)
// it is kept in that JSON file, loaded at the first nvmlInit and written at
// every change, so that it survives the process (mockmachine.WithMIGState).
//
// # Configuration
//
// The library reads its configuration at the first nvmlInit of the process
// (the machine then stays for the life of the process, so that lost GPUs
// stay lost across nvmlShutdown and nvmlInit). Environment variables
// override the config file; those marked "live" are read again at every
// call, so that a test may change them while the library is loaded (with
// setenv, while no other thread is calling NVML).
//
//	GPUDRA_MOCK_NVML_CONFIG       path of a config file, YAML or JSON (below)
//	GPUDRA_MOCK_NVML_MACHINE      mock machine (default dgxh100)
//	GPUDRA_MOCK_NVML_SEED         seed of the UUIDs (default: the host name)
//	GPUDRA_MOCK_NVML_INIT_ERROR   live: nvmlInit fails with this NVML return
//	                              code: a name (ERROR_DRIVER_NOT_LOADED,
//	                              DRIVER_NOT_LOADED) or a number (9); empty
//	                              or SUCCESS: nvmlInit works
//	GPUDRA_MOCK_NVML_DELAY        live: slow calls: a duration for every call
//	                              ("20ms"), or per function
//	                              ("nvmlDeviceGetMemoryInfo=2s,*=1ms")
//	GPUDRA_MOCK_NVML_LOST         GPUs lost from the start: NVML indexes or
//	                              UUIDs, comma separated
//	GPUDRA_MOCK_NVML_EVENTS_FILE  command file to watch for injected events
//	GPUDRA_MOCK_NVML_EVENTS_POLL  how often to look at it (default 500ms)
//	GPUDRA_MOCK_NVML_LOG          "off": no log lines on stderr
//	GPUDRA_MOCK_NVML_MIG_STATE    file that keeps the MIG state (MIG modes,
//	                              GPU and compute instances) across processes;
//	                              empty (default): none
//
// The config file has the same knobs:
//
//	machine: dgxa100-mig
//	seed: node-1
//	initError: ERROR_DRIVER_NOT_LOADED
//	delays: {"*": 1ms, nvmlDeviceGetMemoryInfo: 2s}
//	lost: ["3"]
//	eventsFile: /run/mocknvml/inject-events
//	eventsPoll: 100ms
//	log: off
//	migState: /run/mocknvml/mig-state.json
//
// # Faults
//
//   - nvmlInit failing: initError / GPUDRA_MOCK_NVML_INIT_ERROR.
//   - A slow call: delays / GPUDRA_MOCK_NVML_DELAY, by C function name.
//   - Injected events, written to the events file one command a line (the
//     commands of mockmachine.Events.Apply; the file is consumed):
//     "xid <gpu> <xid>" a critical XID, "dbe <gpu>" a double-bit ECC error,
//     "sbe <gpu>" a single-bit one, "lost <gpu>" the GPU is lost (waiting
//     event sets get ERROR_GPU_IS_LOST), "found <gpu>" it is back,
//     "wait-error" / "wait-ok" every event wait fails / works again. A GPU
//     fallen off the bus is "xid <gpu> 79" then "lost <gpu>".
//   - A lost GPU (lost / GPUDRA_MOCK_NVML_LOST, or the lost command): its
//     handle lookups and every call on it or its MIG devices return
//     ERROR_GPU_IS_LOST, except the identity of a handle already held
//     (UUID, index, minor number, MIG handle relations), which NVML keeps.
//
// A call the mock machine does not implement returns ERROR_NOT_SUPPORTED; a
// call before nvmlInit (or after the last nvmlShutdown) returns
// ERROR_UNINITIALIZED, as the real library does.
package main

func main() {}

// Package mockmachine is everything a GPU node needs from NVIDIA's side when
// it has no GPU: go-nvml's mock DGX machines (dgxa100, dgxa100-80gb,
// dgxh100, dgxh200, dgxb200, their MIG variants "-mig" and their MIG-mode
// variants "-migon") made deterministic and complete enough for discovery
// and CDI generation, with
//
//   - the MIG profile and placement tables of the real GPUs and the MIG
//     instance lifecycle of real NVML (MIG mode per architecture, GPU and
//     compute instances created and destroyed on demand, MIG devices that
//     follow them), optionally kept across restarts (WithMIGState,
//     MIGStateFile);
//   - injectable NVML events (Events: XIDs, ECC errors, lost GPUs; from
//     tests, or from EventsFile under the mock host root);
//   - discovery-time faults (FailDevice: a GPU whose NVML calls fail, as a
//     lost or broken GPU's do; from tests, or from FaultsFile in the mock
//     driver root);
//   - the host side of a driver installation (LayOutHost: libraries,
//     binaries and device nodes, the MIG capability minors), so that the CDI
//     specs written on such a node name paths that exist;
//   - a time slicer that records intervals in a file (TimeSliceFile) instead
//     of calling nvidia-smi.
//
// Production code reaches this package only through the NVML backend of
// pkg/node (--nvml=mock:<machine>); nothing else decides whether a node is a
// mock one.
package mockmachine

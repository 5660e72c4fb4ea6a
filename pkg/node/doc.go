// Package node owns the bring-up of a GPU node, the sequence every binary
// of the driver needs before it does its own job: parse the NVML backend
// (the NVIDIA driver, or a mock machine of package mockmachine), open NVML,
// discover the GPUs, lay out the mock host, resolve the driver and device
// roots, install the CDI hook and build the container edits. The kubelet
// plugin, the device plugin and the gpudra host tool all call Open with the
// same Flags; none repeats the sequence.
//
// The Backend is the only place that knows whether the node is a mock one;
// what differs (time slicer, MIG capability minors, PCIe roots, the health
// probe, injected events) is asked of it.
package node

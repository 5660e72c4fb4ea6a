// Package cdi produces the Container Device Interface (CDI) specs that give a
// container its GPUs.
//
// Edits (edits.go) computes the container edits of the running driver once:
// the driver-wide edits (control device nodes, libraries and binaries of the
// running driver version, hooks) and each GPU's own edits (its device node).
// ClaimSpec (spec.go) assembles one transient spec per ResourceClaim from
// them, and SpecDir (specdir.go) writes, removes and lists those specs
// durably in a CDI spec directory.
//
// Naming: a driver named D owns the CDI kind "k8s.D/claim"; the spec of claim
// U is the file GenerateTransientSpecName("k8s.D", "claim", U) + ".json" and
// its devices are named "<U>-<device>", so a CDI name is never reused across
// claims. D also owns the kind "k8s.D/driver": the driver-wide spec
// (DriverSpec), file "k8s.D-driver.json", whose spec-level edits are the
// driver-wide ones and whose one device, "common", a claim's devices
// reference beside their own (Naming.DeviceIDs), so that claim specs hold
// only what is the claim's and the container runtime, which re-reads every
// spec of the directory at each change, reads the driver-wide edits once.
package cdi

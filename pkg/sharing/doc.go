// Package sharing is the seam between the claim state and the ways several
// containers share one device: CUDA time-slicing (package timeslicing) and
// MPS (package mps).
//
// The claim state owns the order of a prepare: it records the claim, calls
// Applier.Apply, writes the claim's CDI spec with the edits Apply returned,
// and, on unprepare, removes the spec, calls Applier.Undo and deletes the
// record. An Applier never touches CDI specs or the checkpoint itself.
//
// Composite dispatches each device of a claim to the applier of its
// strategy, so that the claim state holds one Applier.
package sharing

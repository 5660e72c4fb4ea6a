// Package publisher makes the API writes of a node's ResourceSlices that the
// kubeletplugin helper's resourceslice controller does not: creating the
// node's first slices directly, with exactly the names, pool generation and
// owner the controller would give them (so it adopts them), and deleting
// every slice of the driver after an uninstall. Building the slices
// themselves is package resourceslice's job; keeping them in line is the
// controller's.
package publisher

// Package benchmark measures what publishing partitionable GPUs (dynamic
// MIG: KEP-4815 counters, pkg/resourceslice) costs the scheduler: the time
// the scheduler's structured allocator (k8s.io/dynamic-resource-allocation
// /structured) takes to place one claim for one device on a node with 8
// partitionable H100 GPUs (8 whole GPUs and 200 partitions, 8 counter sets)
// against a node with the same 8 GPUs published whole (8 devices, no
// counters).
//
// Run it with
//
//	go test -run '^$' -bench . -count 6 ./test/bench/partitions
//
// The package has no code besides its benchmarks.
package benchmark

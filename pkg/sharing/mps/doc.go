// Package mps implements the MPS sharing strategy: one CUDA MPS control
// daemon per ResourceClaim, serving all the claim's devices whose opaque
// config says sharing.strategy MPS. Manager is the sharing.Applier of the
// strategy. It also enforces the limits of shares of GPUs (consumable
// capacity): SharedGPUs runs one daemon per shared GPU, serving every claim
// with a share of it (see "Shared GPUs" below). Both run their daemons the
// same way, with the same Pod, directory and client-edit code.
//
// # How the daemon runs
//
// The daemon runs in a Pod of its own, created by the plugin through the API
// server in the plugin's namespace and pinned to the node (spec.nodeName),
// not as a child process of the plugin. A plugin restart, crash or upgrade
// therefore never touches a running daemon, so the workloads connected to
// it keep running; the kubelet restarts a crashed daemon container and
// brings the Pod back after a reboot. The Pod's name is derived from the
// claim UID alone ("gpudra-mps-<uid>"), and it carries the label
// gpudra.io/mps-claim-uid, so a repeated Apply finds it instead of creating a
// second one, and Undo finds it after a restart from the claim's checkpoint
// record alone. A bare Pod rather than a Deployment: the daemon's lifetime is
// exactly the prepare/unprepare of one claim on one node, which the plugin
// drives; a controller that re-creates it elsewhere or at another time would
// only be in the way.
//
// A running daemon is kept as long as its devices and limits are those the
// claim asks for (annotation gpudra.io/mps-config-hash covers these only,
// never the Pod template), so a plugin upgrade that changes the template or
// the image never restarts the daemon of a prepared claim.
//
// # Host directories
//
// Each claim gets <BaseDir>/<claim UID>/ on the host with
//
//	pipe/  CUDA_MPS_PIPE_DIRECTORY: the control pipe and the server sockets
//	log/   CUDA_MPS_LOG_DIRECTORY: control.log, server.log
//	shm/   the daemon's and the clients' /dev/shm: MPS clients and the MPS
//	       server exchange shared memory segments, so both must see the same
//	       /dev/shm. A plain directory (disk-backed page cache) rather than a
//	       tmpfs, so that the plugin needs no mount privileges on the host.
//
// The plugin sees BaseDir at the same path as the host (the chart mounts it
// there). Apply creates the directories before the Pod; Undo removes them
// after the Pod is gone, so nothing is left behind.
//
// # The daemon Pod
//
// With the real NVIDIA driver the container chroots into the host's driver
// root (mounted at /driver-root, with the claim's directories mounted over
// /driver-root/tmp/nvidia-mps, /driver-root/var/log/nvidia-mps and
// /driver-root/dev/shm) and runs the driver's own nvidia-cuda-mps-control -f
// with CUDA_VISIBLE_DEVICES set to the UUIDs of the claim's MPS devices. Once
// its control pipe exists it applies the limits with the control commands
// set_default_active_thread_percentage and
// set_default_device_pinned_mem_limit <UUID> <n>M, then writes log/ready. On
// SIGTERM it sends "quit" to the daemon. (The container runtime creates the
// mount points tmp/nvidia-mps and var/log/nvidia-mps in the driver root once;
// they stay as empty directories, shared by all claims, and are never
// mounted on the host itself.) The Pod runs privileged with hostPID
// (the MPS server must see the PIDs of clients in other Pods); it does not
// need hostIPC, because the shared memory goes through the shm directory.
//
// With a mock NVML backend (clusters without GPUs) the container runs
// gpu-mps-mock-daemon from the plugin image instead: it creates the control
// pipe, writes the limits it was given to log/limits.json and log/ready, and
// waits for SIGTERM.
//
// The readiness probe checks that the control pipe exists and log/ready was
// written; Apply returns only once the Pod is Ready, so no client starts
// before the limits are in place.
//
// # What a client container gets
//
// Each MPS device's CDI edits add, for the containers that get the device:
// CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps and
// CUDA_MPS_LOG_DIRECTORY=/var/log/nvidia-mps; bind mounts of the claim's
// pipe directory (read-write) at /tmp/nvidia-mps, of its log directory
// (read-only) at /var/log/nvidia-mps, and of its shm directory at /dev/shm.
// The paths are the daemon's own paths, so nothing that MPS passes between
// processes names a path the other side cannot see. Edits are per device
// rather than claim-wide, so a container that gets only a non-MPS device of
// the claim is not pointed at a daemon that does not serve it.
//
// # Rules of a claim's MPS config
//
// One claim has one daemon, and a container has one CUDA_MPS_PIPE_DIRECTORY,
// so all MPS devices of a claim must have the same mpsConfig. Keys of
// defaultPerDevicePinnedMemoryLimit are a device UUID of the claim or the
// index of a device among the claim's MPS devices in allocation order (the
// CUDA device ordinal that the clients see). CUDA enumerates one MIG device
// per process, so a daemon serves either full GPUs or exactly one MIG
// device. Devices with admin access are shared with other claims and cannot
// get a daemon. Violations fail Apply with an error that names the claim,
// the field and the accepted values, before anything is created.
//
// # Shared GPUs
//
// SharedGPUs is the sharing.Applier of sharing.Composite's Shares: it gets
// only the claims' devices with a sharing.Share. A shared GPU has one
// daemon, whatever the number of claims holding shares of it:
//
//   - Pod "gpudra-mps-<GPU UUID in lower case>" (GPUPodName; a hash when
//     that is no DNS label), labels app.kubernetes.io/component and
//     gpudra.io/mps-gpu-uuid (LabelGPUUUID, the UUID or its hash), the
//     UUID itself in the annotation of the same name, and no claim label:
//     the daemon belongs to the GPU, not to a claim. Manager's Sweep never
//     touches it.
//   - Host directories <BaseDir>/gpu-<GPU UUID>/{pipe,log,shm}.
//   - CUDA_VISIBLE_DEVICES=<GPU UUID>, and no default limits: the limits
//     are each client's own. The config hash covers the UUID only, so the
//     daemon survives plugin restarts and upgrades exactly like a claim's.
//
// Apply refuses a claim with shares of more than one GPU (a CUDA process
// connects to one daemon: one CUDA_MPS_PIPE_DIRECTORY) or of a MIG device,
// before anything is created. Otherwise it makes the directories, finds or
// creates the Pod by name, and waits for it to be ready, as Manager does;
// then each share device gets CUDA_MPS_PIPE_DIRECTORY, the pipe and shm
// mounts (not the log directory, whose logs name the processes of every
// claim on the GPU), and its share's client limits:
// CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=<MiB>M when the share consumed memory
// (the GPU is device 0 in a container that sees only it), and
// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=<n> when it consumed compute shares.
// A repeated Apply returns the same edits.
//
// Undo stops the daemon and removes the directories when no other claim
// holds a share of the GPU: none of the claim state's recorded claims
// (other than the one undone, by UID) and no Apply in progress. It decides
// from the records and the Claim alone, so it works after a restart.
// For one GPU, the ensure step of Apply (directories and Pod) and Undo's
// decision and teardown hold a mutex of that GPU; Apply waits for
// readiness without it. So the last Undo and a new Apply of a GPU never
// race into a deleted daemon (the Apply either finds the daemon kept, or
// starts a new one after the old is gone), and shares of a GPU whose
// daemon runs are prepared in parallel. Sweep, at start-up, removes the
// daemons and directories of GPUs without a prepared share.
package mps

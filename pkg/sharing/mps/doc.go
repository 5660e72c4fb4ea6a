// Package mps implements the MPS sharing strategy: one CUDA MPS control
// daemon per ResourceClaim, serving all the claim's devices whose opaque
// config says sharing.strategy MPS. Manager is the sharing.Applier of the
// strategy.
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
package mps

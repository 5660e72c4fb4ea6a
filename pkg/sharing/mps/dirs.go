package mps

import (
	"fmt"
	"os"
	"path/filepath"
)

// Paths inside the daemon (after its chroot) and inside client containers.
// They are MPS's own defaults, so a client that ignores the environment
// still finds the daemon.
const (
	containerPipeDir = "/tmp/nvidia-mps"
	containerLogDir  = "/var/log/nvidia-mps"
	containerShmDir  = "/dev/shm"
	// readyFile, in the log directory, is written by the daemon container
	// once the daemon runs with its limits.
	readyFile = "ready"
)

// gpuDirPrefix starts the name of a shared GPU's directory in BaseDir
// ("gpu-GPU-<uuid>"); a claim's directory is named by its UID, which never
// starts with it (claim UIDs are UUIDs, in hex).
const gpuDirPrefix = "gpu-"

// daemonDirs are the host directories of one daemon: a claim's (Manager)
// or a shared GPU's (SharedGPUs).
type daemonDirs struct {
	Root, Pipe, Log, Shm string
}

// newClaimDirs returns the directories of the daemon of a claim:
// <baseDir>/<claim UID>.
func newClaimDirs(baseDir, claimUID string) daemonDirs {
	return newDaemonDirs(baseDir, claimUID)
}

// newGPUDirs returns the directories of the daemon of a shared GPU:
// <baseDir>/gpu-<GPU UUID>.
func newGPUDirs(baseDir, gpuUUID string) daemonDirs {
	return newDaemonDirs(baseDir, gpuDirPrefix+gpuUUID)
}

func newDaemonDirs(baseDir, name string) daemonDirs {
	root := filepath.Join(baseDir, name)
	return daemonDirs{
		Root: root,
		Pipe: filepath.Join(root, "pipe"),
		Log:  filepath.Join(root, "log"),
		Shm:  filepath.Join(root, "shm"),
	}
}

// create makes the directories; idempotent. Mode 0755: clients that run as
// another user reach the pipes through them, the files in them carry their
// own modes.
func (d daemonDirs) create() error {
	for _, dir := range []string{d.Root, d.Pipe, d.Log, d.Shm} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating MPS directory %s: %w: check that the MPS base directory is writable by the plugin", dir, err)
		}
	}
	return nil
}

// remove deletes the directories and what the daemon left in them;
// idempotent. The caller makes sure that no daemon uses them any more.
func (d daemonDirs) remove() error {
	if err := os.RemoveAll(d.Root); err != nil {
		return fmt.Errorf("removing MPS directory %s: %w: remove it by hand once the MPS daemon pod that used it is gone", d.Root, err)
	}
	return nil
}

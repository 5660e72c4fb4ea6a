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

// claimDirs are the host directories of one claim's daemon.
type claimDirs struct {
	Root, Pipe, Log, Shm string
}

func newClaimDirs(baseDir, claimUID string) claimDirs {
	root := filepath.Join(baseDir, claimUID)
	return claimDirs{
		Root: root,
		Pipe: filepath.Join(root, "pipe"),
		Log:  filepath.Join(root, "log"),
		Shm:  filepath.Join(root, "shm"),
	}
}

// create makes the directories; idempotent. Mode 0755: clients that run as
// another user reach the pipes through them, the files in them carry their
// own modes.
func (d claimDirs) create() error {
	for _, dir := range []string{d.Root, d.Pipe, d.Log, d.Shm} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating MPS directory %s: %w: check that the MPS base directory is writable by the plugin", dir, err)
		}
	}
	return nil
}

// remove deletes the directories and what the daemon left in them;
// idempotent. The caller makes sure that no daemon uses them any more.
func (d claimDirs) remove() error {
	if err := os.RemoveAll(d.Root); err != nil {
		return fmt.Errorf("removing MPS directory %s: %w: remove it by hand once no MPS daemon pod of the claim is left", d.Root, err)
	}
	return nil
}

package mps

import (
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/sharing"
)

// clientEdits returns what a container that gets one of the daemon's devices
// needs to reach the daemon (see the package documentation). Every MPS
// device gets the same edits; the CDI library keeps one mount per container
// path and one value per variable, so a container with several of them gets
// each once.
func clientEdits(d daemonDirs, c *daemonConfig) sharing.Edits {
	out := sharing.Edits{Devices: map[string]specs.ContainerEdits{}}
	for _, name := range c.Names {
		out.Devices[name] = connectEdits(d, true)
	}
	return out
}

// connectEdits returns the environment and mounts that connect a client
// container to the daemon whose directories are d: its pipe directory
// (read-write) and its shm directory, and with withLog its log directory
// (read-only). Every call returns new slices and mounts, so that no two
// devices' edits share memory.
func connectEdits(d daemonDirs, withLog bool) specs.ContainerEdits {
	e := specs.ContainerEdits{Env: []string{"CUDA_MPS_PIPE_DIRECTORY=" + containerPipeDir}}
	e.Mounts = append(e.Mounts, &specs.Mount{HostPath: d.Pipe, ContainerPath: containerPipeDir, Type: "bind", Options: []string{"rbind", "rw", "nosuid", "nodev"}})
	if withLog {
		e.Env = append(e.Env, "CUDA_MPS_LOG_DIRECTORY="+containerLogDir)
		e.Mounts = append(e.Mounts, &specs.Mount{HostPath: d.Log, ContainerPath: containerLogDir, Type: "bind", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
	}
	e.Mounts = append(e.Mounts, &specs.Mount{HostPath: d.Shm, ContainerPath: containerShmDir, Type: "bind", Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"}})
	return e
}

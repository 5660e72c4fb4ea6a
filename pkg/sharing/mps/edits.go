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
func clientEdits(d claimDirs, c *daemonConfig) sharing.Edits {
	edits := specs.ContainerEdits{
		Env: []string{
			"CUDA_MPS_PIPE_DIRECTORY=" + containerPipeDir,
			"CUDA_MPS_LOG_DIRECTORY=" + containerLogDir,
		},
		Mounts: []*specs.Mount{
			{HostPath: d.Pipe, ContainerPath: containerPipeDir, Type: "bind", Options: []string{"rbind", "rw", "nosuid", "nodev"}},
			{HostPath: d.Log, ContainerPath: containerLogDir, Type: "bind", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
			{HostPath: d.Shm, ContainerPath: containerShmDir, Type: "bind", Options: []string{"rbind", "rw", "nosuid", "nodev", "noexec"}},
		},
	}
	out := sharing.Edits{Devices: map[string]specs.ContainerEdits{}}
	for _, name := range c.Names {
		out.Devices[name] = copyEdits(edits)
	}
	return out
}

// copyEdits copies e so that no two devices share slices or mounts.
func copyEdits(e specs.ContainerEdits) specs.ContainerEdits {
	out := specs.ContainerEdits{Env: append([]string(nil), e.Env...)}
	for _, m := range e.Mounts {
		mc := *m
		mc.Options = append([]string(nil), m.Options...)
		out.Mounts = append(out.Mounts, &mc)
	}
	return out
}

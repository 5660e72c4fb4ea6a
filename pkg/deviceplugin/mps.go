package deviceplugin

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"tags.cncf.io/container-device-interface/specs-go"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/sharing"
	"github.com/gpudra/gpudra/pkg/sharing/mps"
)

// MPSDaemons runs the MPS control daemons of MPS sharing.
type MPSDaemons interface {
	// Ensure starts the MPS control daemon of GPU gpu (or keeps the one
	// running with the same limits) with NVIDIA's per-client limits for
	// replicas clients: an active thread percentage of 100/replicas and a
	// pinned device memory limit of memory/replicas (whole MiB). It
	// returns once the daemon is ready, with the edits that connect a
	// client container to it.
	Ensure(ctx context.Context, gpu inventory.Device, replicas int) (specs.ContainerEdits, error)
	// Retain removes the daemons (pods and directories) that the device
	// plugin runs for GPUs not in keep: those of a config that no longer
	// shares them by MPS, also from an earlier run of the plugin. Daemons
	// of DRA claims are never touched. It must not run at the same time as
	// Ensure; it goes on after an error and returns all errors joined.
	Retain(ctx context.Context, keep []inventory.Device) error
}

// NewMPSDaemons returns the MPSDaemons of the DRA plugin's daemon code
// (package mps): each GPU's daemon runs in a Pod of its own, as a claim's
// does, found again by name after a plugin restart, so that a restart of
// the device plugin never stops a daemon in use.
func NewMPSDaemons(opts mps.Options) (MPSDaemons, error) {
	m, err := mps.New(opts)
	if err != nil {
		return nil, err
	}
	return mpsDaemons{m}, nil
}

type mpsDaemons struct{ m *mps.Manager }

// MPSDaemonClaimUID is the UID under which the daemon of GPU uuid runs, as
// if it were a claim's: "dp-" and the UUID in lower case. Its Pod is
// mps.PodName of it.
func MPSDaemonClaimUID(uuid string) string { return mpsDaemonUIDPrefix + strings.ToLower(uuid) }

// mpsDaemonUIDPrefix starts the UIDs of MPSDaemonClaimUID; no claim UID
// (an RFC 4122 UUID) has it.
const mpsDaemonUIDPrefix = "dp-"

func (d mpsDaemons) Ensure(ctx context.Context, gpu inventory.Device, replicas int) (specs.ContainerEdits, error) {
	if replicas < 1 {
		return specs.ContainerEdits{}, fmt.Errorf("MPS: %d replicas", replicas)
	}
	pct := 100 / replicas
	if pct < 1 {
		pct = 1
	}
	cfg := &configapi.MpsConfig{DefaultActiveThreadPercentage: &pct}
	if mib := gpu.MemoryBytes / uint64(replicas) / (1 << 20); mib > 0 {
		q := resource.NewQuantity(int64(mib)<<20, resource.BinarySI)
		cfg.DefaultPinnedDeviceMemoryLimit = q
	}
	name := fmt.Sprintf("gpu-%d", gpu.Index)
	c := sharing.Claim{
		UID:       MPSDaemonClaimUID(gpu.UUID),
		Namespace: "device-plugin",
		Name:      name,
		Devices: []sharing.Device{{
			Name: name, Type: devices.KindGPU, UUID: gpu.UUID,
			Config: &configapi.GpuConfig{Sharing: &configapi.GpuSharing{Strategy: configapi.MpsStrategy, MpsConfig: cfg}},
		}},
	}
	e, err := d.m.Apply(ctx, c)
	if err != nil {
		return specs.ContainerEdits{}, err
	}
	return e.Devices[name], nil
}

func (d mpsDaemons) Retain(ctx context.Context, keep []inventory.Device) error {
	kept := make(map[string]bool, len(keep))
	for _, g := range keep {
		kept[MPSDaemonClaimUID(g.UUID)] = true
	}
	return d.m.Sweep(ctx, func(uid string) bool {
		return !strings.HasPrefix(uid, mpsDaemonUIDPrefix) || kept[uid]
	})
}

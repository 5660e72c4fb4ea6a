package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// gpu is one advertised device as the plugin knows it: a whole GPU, or a
// MIG device (mig set; dev is then its parent GPU).
type gpu struct {
	dev inventory.Device
	// mig is set for a MIG device.
	mig *inventory.MIGDevice
	// id names the device to the kubelet and runtime: the GPU's UUID or
	// index, the MIG device's UUID or "<gpu index>:<mig index>".
	id string
	// cdiID is the fully qualified CDI device ID of the device under id.
	cdiID string
	numa  int
	// unusable is set for a GPU that NVML cannot use
	// (inventory.Inventory.Unusable): it is advertised Unhealthy for good
	// and never allocated.
	unusable *inventory.UnusableDevice
	// nodes are the device nodes of PassDeviceSpecs: /dev/nvidia<minor>,
	// and a MIG device's capability nodes.
	nodes []string
	// mps are the edits that connect a client to the GPU's MPS control
	// daemon (MPS sharing only).
	mps *specs.ContainerEdits
}

// uuid is the device's own UUID (GPU-... or MIG-...).
func (g *gpu) uuid() string {
	if g.mig != nil {
		return g.mig.UUID
	}
	return g.dev.UUID
}

// Plugin is the device plugin of one resource. Create it with New (one
// resource) or NewSet, then Start it.
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	// cfg is the plugin's own: ResourceName is its resource (before a
	// rename), Replicas and RenameResource its sharing, SocketName its
	// socket.
	cfg    Config
	logger klog.Logger

	gpus []gpu
	// byID maps a GPU's id to its position in gpus.
	byID map[string]int
	topo topology
	// advertised are the device IDs given to the kubelet, GPU-major.
	advertised []string
	// mpsShared: the replicas are MPS clients (sharing.mps).
	mpsShared bool
	// failGreaterThanOne refuses requests of more than one replica.
	failGreaterThanOne bool

	mu      sync.Mutex
	healthy []bool        // per GPU
	changed chan struct{} // closed and replaced on every health change

	// CDISpecPath is where the CDI spec was written ("" without CDI).
	cdiSpecPath string

	srv *server
}

// Inputs are what NewSet builds the plugins from.
type Inputs struct {
	// Inventory holds the GPUs, MIG devices and unusable GPUs.
	Inventory *inventory.Inventory
	// NVML reads the GPU topology once; nil: no topology.
	NVML nvml.Interface
	// Edits are the driver's CDI edits: needed with a CDI strategy.
	Edits *cdi.Edits
	// DeviceEdits answer for the MIG devices too (node.Node.DeviceEdits):
	// needed when MIG devices are advertised with a CDI strategy or
	// PassDeviceSpecs. Nil: Edits.
	DeviceEdits cdi.DeviceEdits
	// MPS runs the MPS control daemons: needed with Sharing.Strategy mps.
	MPS MPSDaemons
}

// New builds the plugin for inv's GPUs when the configuration yields one
// resource (NewSet otherwise): reads the GPU topology once through lib (nil:
// no topology), and, when a CDI strategy is configured, writes the CDI spec
// from edits into cfg.CDIRoot. The GPUs NVML cannot use (inv.Unusable) are
// advertised too, Unhealthy for good, as NVIDIA's device plugin does, so
// that the node's capacity shows them (one without a readable UUID only
// under the index strategy; otherwise it is logged).
func New(ctx context.Context, cfg Config, inv *inventory.Inventory, lib nvml.Interface, edits *cdi.Edits) (*Plugin, error) {
	set, err := NewSet(ctx, cfg, Inputs{Inventory: inv, NVML: lib, Edits: edits})
	if err != nil {
		return nil, err
	}
	if len(set.Plugins) != 1 {
		return nil, fmt.Errorf("device plugin: the configuration gives %d resources: use NewSet", len(set.Plugins))
	}
	return set.Plugins[0], nil
}

// NewSet builds one plugin per resource of in.Inventory under cfg (see the
// package documentation), writes the CDI spec of all their devices when a
// CDI strategy is configured, and, for MPS sharing, starts (or finds) the
// MPS control daemon of every GPU it shares and waits until each is ready.
func NewSet(ctx context.Context, cfg Config, in Inputs) (*Set, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	inv := in.Inventory
	if inv == nil || len(inv.Devices)+len(inv.Unusable) == 0 {
		return nil, errors.New("device plugin: no GPUs to advertise")
	}
	logger := klog.FromContext(ctx).WithName("deviceplugin")
	resources, err := buildResources(&cfg, inv)
	if err != nil {
		return nil, err
	}
	for _, r := range cfg.Sharing.Resources {
		if !slices.ContainsFunc(resources, func(ru resourceUnits) bool { return ru.name == r.Name }) {
			// NVIDIA skips them too: one config serves nodes of different
			// MIG layouts.
			logger.Info("Sharing configured for a resource this node does not advertise: ignored", "resource", r.Name, "strategy", cfg.Sharing.Strategy)
		}
	}
	devEdits := in.DeviceEdits
	if devEdits == nil && in.Edits != nil {
		devEdits = in.Edits
	}
	topo := readTopology(logger, in.NVML, inv.Devices)
	set := &Set{}
	var specDevs []cdiDevice
	for _, r := range resources {
		p, devs, err := newPlugin(ctx, logger, cfg, r, topo, devEdits, in.MPS)
		if err != nil {
			return nil, err
		}
		set.Plugins = append(set.Plugins, p)
		specDevs = append(specDevs, devs...)
	}
	if cfg.usesCDI() && len(inv.Devices) == 0 {
		logger.Error(nil, "No usable GPU: writing no CDI spec", "unusable", len(inv.Unusable))
	} else if cfg.usesCDI() {
		if in.Edits == nil {
			return nil, errors.New("device plugin: the CDI strategies need the driver's CDI edits")
		}
		path, err := writeCDISpec(cfg, inv, in.Edits, specDevs)
		if err != nil {
			return nil, err
		}
		set.cdiSpecPath = path
		for _, p := range set.Plugins {
			p.cdiSpecPath = path
		}
		logger.Info("Wrote CDI spec", "path", path, "kind", CDIKind)
	}
	return set, nil
}

// newPlugin builds the plugin of resource r; it returns the CDI devices of
// its MIG devices (whole GPUs are in the spec anyway).
func newPlugin(ctx context.Context, logger klog.Logger, cfg Config, r resourceUnits, topo topology, devEdits cdi.DeviceEdits, daemons MPSDaemons) (*Plugin, []cdiDevice, error) {
	pcfg := cfg
	pcfg.ResourceName = r.name
	pcfg.SocketName = cfg.socketFor(r.name)
	p := &Plugin{
		cfg:     pcfg,
		logger:  logger.WithValues("resource", r.name),
		byID:    make(map[string]int, len(r.units)),
		healthy: make([]bool, 0, len(r.units)),
		changed: make(chan struct{}),
	}
	if rep := cfg.replication(r.name); rep != nil {
		p.cfg.Replicas, p.cfg.RenameResource = rep.Replicas, rep.Rename
		p.failGreaterThanOne = cfg.Sharing.FailRequestsGreaterThanOne
		p.mpsShared = cfg.Sharing.Strategy == SharingMPS
	}
	var positions []int
	var specDevs []cdiDevice
	for _, u := range r.units {
		g := gpu{dev: u.dev, mig: u.mig, unusable: u.unusable, numa: -1}
		g.id = pcfg.gpuID(u.dev.Index, u.dev.UUID)
		if u.mig != nil {
			g.id = u.mig.UUID
			if pcfg.DeviceIDStrategy == IDStrategyIndex {
				g.id = fmt.Sprintf("%d:%d", u.dev.Index, u.migIndex)
			}
		}
		if g.id == "" {
			logger.Error(u.unusable.Err, "Cannot advertise an unusable GPU without its UUID (use --device-id-strategy=index to see it as Unhealthy)",
				"index", u.dev.Index, "fix", u.unusable.Fix())
			continue
		}
		if strings.Contains(g.id, replicaSep) {
			return nil, nil, fmt.Errorf("device ID %q contains %q", g.id, replicaSep)
		}
		if _, dup := p.byID[g.id]; dup {
			return nil, nil, fmt.Errorf("two devices with ID %q", g.id)
		}
		if u.gpuPos >= 0 && u.gpuPos < len(topo.numa) {
			g.numa = topo.numa[u.gpuPos]
		}
		g.nodes = []string{fmt.Sprintf("/dev/nvidia%d", u.dev.Minor)}
		if u.mig != nil {
			if devEdits == nil && (pcfg.usesCDI() || pcfg.PassDeviceSpecs) {
				return nil, nil, fmt.Errorf("device plugin: MIG device %s of GPU %d needs the CDI edits of its capability device nodes", u.mig.UUID, u.dev.Index)
			}
			if devEdits != nil {
				e, err := devEdits.Device(u.mig.UUID)
				if err != nil {
					return nil, nil, fmt.Errorf("device plugin: %w", err)
				}
				for _, n := range e.DeviceNodes {
					if strings.HasPrefix(n.Path, cdi.MIGCapsDir+"/") {
						g.nodes = append(g.nodes, n.Path)
					}
				}
				specDevs = append(specDevs, cdiDevice{names: []string{u.mig.UUID, fmt.Sprintf("%d:%d", u.dev.Index, u.migIndex)}, edits: e})
			}
		}
		if p.mpsShared && g.unusable == nil {
			if u.mig != nil {
				return nil, nil, fmt.Errorf("MPS sharing of %s: sharing using MPS is not supported for MIG devices (MIG device %s of GPU %d), as in NVIDIA's device plugin: "+
					"share it by time-slicing, or share whole GPUs (nvidia.com/gpu) with MPS", r.name, u.mig.UUID, u.dev.Index)
			}
			if daemons == nil {
				return nil, nil, fmt.Errorf("MPS sharing of %s: no MPS daemon manager: set --mps-daemon-image and --namespace", r.name)
			}
			e, err := daemons.Ensure(ctx, u.dev, p.cfg.Replicas)
			if err != nil {
				return nil, nil, fmt.Errorf("MPS sharing of %s: GPU %d (%s): %w", r.name, u.dev.Index, u.dev.UUID, err)
			}
			g.mps = &e
		}
		p.byID[g.id] = len(p.gpus)
		g.cdiID = parser.QualifiedName(CDIVendor, CDIClass, g.id)
		p.gpus = append(p.gpus, g)
		p.healthy = append(p.healthy, g.unusable == nil)
		positions = append(positions, u.gpuPos)
		if p.cfg.Replicas == 1 {
			p.advertised = append(p.advertised, g.id)
		} else {
			for k := range p.cfg.Replicas {
				p.advertised = append(p.advertised, g.id+replicaSep+strconv.Itoa(k))
			}
		}
		if g.unusable != nil {
			logger.Error(g.unusable.Err, "Advertising an unusable GPU as Unhealthy", "id", g.id, "index", g.dev.Index, "fix", g.unusable.Fix())
		}
	}
	p.topo = topo.project(positions)
	p.logger.Info("Device plugin configured", "advertised", p.cfg.AdvertisedResourceName(), "devices", len(p.gpus),
		"replicas", p.cfg.Replicas, "sharing", sharingName(p), "migStrategy", cfg.MIGStrategy, "socket", pcfg.SocketName,
		"deviceListStrategies", cfg.DeviceListStrategies, "deviceIDStrategy", cfg.DeviceIDStrategy, "topologySources", p.topo.sources)
	return p, specDevs, nil
}

func sharingName(p *Plugin) string {
	switch {
	case p.cfg.Replicas == 1:
		return "none"
	case p.mpsShared:
		return SharingMPS
	default:
		return SharingTimeSlicing
	}
}

// gpuID is the ID a GPU is advertised under: its UUID, or its index with
// the index strategy; "" for the UUID strategy without a UUID.
func (cfg Config) gpuID(index int, uuid string) string {
	if cfg.DeviceIDStrategy == IDStrategyIndex {
		return strconv.Itoa(index)
	}
	return uuid
}

// CDISpecPath is the path of the plugin's CDI spec, or "" without a CDI
// strategy.
func (p *Plugin) CDISpecPath() string { return p.cdiSpecPath }

// ResourceName is the resource registered with the kubelet.
func (p *Plugin) ResourceName() string { return p.cfg.AdvertisedResourceName() }

// SocketPath is the plugin's socket.
func (p *Plugin) SocketPath() string { return filepath.Join(p.cfg.DevicePluginPath, p.cfg.SocketName) }

// SetHealth marks the GPU named id (its UUID, its index, its ID or one of its
// replica IDs) healthy or not; every open ListAndWatch stream gets the new
// list if that changes anything.
func (p *Plugin) SetHealth(id string, healthy bool) error {
	idx := p.lookupGPUs(id)
	if len(idx) == 0 {
		return fmt.Errorf("%w %q", errNoDevice, id)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	for _, i := range idx {
		if u := p.gpus[i].unusable; u != nil {
			if healthy {
				return fmt.Errorf("GPU %q is unusable (%v): it stays Unhealthy until the plugin restarts after the fix", id, u.Err)
			}
			continue
		}
		if p.healthy[i] == healthy {
			continue
		}
		p.healthy[i] = healthy
		changed = true
		p.logger.Info("Device health changed", "uuid", p.gpus[i].uuid(), "gpu", p.gpus[i].dev.UUID, "healthy", healthy)
	}
	if changed {
		close(p.changed)
		p.changed = make(chan struct{})
	}
	return nil
}

// errNoDevice: SetHealth of an ID the plugin does not advertise.
var errNoDevice = errors.New("no device")

// lookupGPUs finds the devices named id: by id or replica ID, or by UUID or
// index of the GPU (all of its MIG devices) or of a MIG device.
func (p *Plugin) lookupGPUs(id string) []int {
	if i, ok := p.gpuOf(id); ok {
		return []int{i}
	}
	var out []int
	for i, g := range p.gpus {
		if g.dev.UUID == id || strconv.Itoa(g.dev.Index) == id || g.mig != nil && g.mig.UUID == id {
			out = append(out, i)
		}
	}
	return out
}

// gpuOf maps an advertised device ID ("<id>" or "<id>::<n>") to its GPU.
func (p *Plugin) gpuOf(deviceID string) (int, bool) {
	base, replica, ok := strings.Cut(deviceID, replicaSep)
	if ok != (p.cfg.Replicas > 1) {
		return 0, false // replica IDs exactly when time-slicing
	}
	if ok {
		r, err := strconv.Atoi(replica)
		if err != nil || r < 0 || r >= p.cfg.Replicas {
			return 0, false
		}
		deviceID = base
	}
	i, ok := p.byID[deviceID]
	return i, ok
}

// deviceList is what ListAndWatch sends, and the channel that is closed on
// the next change.
func (p *Plugin) deviceList() (*pluginapi.ListAndWatchResponse, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	resp := &pluginapi.ListAndWatchResponse{Devices: make([]*pluginapi.Device, 0, len(p.advertised))}
	for _, id := range p.advertised {
		i, _ := p.gpuOf(id)
		d := &pluginapi.Device{ID: id, Health: pluginapi.Unhealthy}
		if p.healthy[i] {
			d.Health = pluginapi.Healthy
		}
		if n := p.gpus[i].numa; n >= 0 {
			d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(n)}}}
		}
		resp.Devices = append(resp.Devices, d)
	}
	return resp, p.changed
}

// GetDevicePluginOptions implements the DevicePlugin service.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch sends the device list, then again on every health change,
// until the kubelet closes the stream or the plugin stops.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	for {
		resp, changed := p.deviceList()
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// PreStartContainer is not required (see GetDevicePluginOptions).
func (p *Plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// Allocate tells the runtime, per container, which GPUs to inject.
func (p *Plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{ContainerResponses: make([]*pluginapi.ContainerAllocateResponse, 0, len(req.GetContainerRequests()))}
	for _, creq := range req.GetContainerRequests() {
		cresp, err := p.containerResponse(creq.GetDevicesIds())
		if err != nil {
			return nil, err
		}
		resp.ContainerResponses = append(resp.ContainerResponses, cresp)
	}
	return resp, nil
}

func (p *Plugin) containerResponse(deviceIDs []string) (*pluginapi.ContainerAllocateResponse, error) {
	if len(deviceIDs) == 0 {
		return nil, status.Error(codes.InvalidArgument, "allocate: a container request without devices")
	}
	if p.failGreaterThanOne && len(deviceIDs) > 1 {
		return nil, status.Errorf(codes.InvalidArgument, "allocate: %d devices of the shared resource %s requested: a container may request only one "+
			"(failRequestsGreaterThanOne; always so with MPS sharing, whose limits are per replica); request 1, or use a resource that is not shared",
			len(deviceIDs), p.ResourceName())
	}
	// The GPUs in the order first requested, without replica duplicates.
	var sel []int
	seen := make([]bool, len(p.gpus))
	for _, id := range deviceIDs {
		i, ok := p.gpuOf(id)
		if !ok {
			return nil, status.Errorf(codes.InvalidArgument, "allocate: unknown device %q of resource %s", id, p.ResourceName())
		}
		if u := p.gpus[i].unusable; u != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "allocate: device %q of resource %s is %s, which NVML cannot use (%v): it is advertised Unhealthy; %s",
				id, p.ResourceName(), u, u.Err, u.Fix())
		}
		if !seen[i] {
			seen[i] = true
			sel = append(sel, i)
		}
	}
	ids := make([]string, len(sel))
	cdiIDs := make([]string, len(sel))
	for k, i := range sel {
		ids[k] = p.gpus[i].id
		cdiIDs[k] = p.gpus[i].cdiID
	}
	r := &pluginapi.ContainerAllocateResponse{}
	if p.cfg.has(StrategyEnvvar) {
		r.Envs = map[string]string{VisibleDevicesEnv: strings.Join(ids, ",")}
	}
	if p.cfg.has(StrategyVolumeMounts) {
		if r.Envs == nil {
			// Keep an image's NVIDIA_VISIBLE_DEVICES=all from giving the
			// container every GPU: the runtime reads the mounts instead.
			r.Envs = map[string]string{VisibleDevicesEnv: VolumeMountsRoot}
		}
		for _, id := range ids {
			r.Mounts = append(r.Mounts, &pluginapi.Mount{
				ContainerPath: VolumeMountsRoot + "/" + id,
				HostPath:      "/dev/null",
				ReadOnly:      true,
			})
		}
	}
	if p.cfg.has(StrategyCDIAnnotations) {
		ann, err := cdiapi.UpdateAnnotations(nil, CDIAnnotationPlugin, ids[0], cdiIDs)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "allocate: CDI annotations: %v", err)
		}
		r.Annotations = ann
	}
	if p.cfg.has(StrategyCDICRI) {
		for _, id := range cdiIDs {
			r.CdiDevices = append(r.CdiDevices, &pluginapi.CDIDevice{Name: id})
		}
	}
	for _, i := range sel {
		if e := p.gpus[i].mps; e != nil {
			addEdits(r, *e)
		}
	}
	if p.cfg.PassDeviceSpecs {
		for _, i := range sel {
			for _, n := range p.gpus[i].nodes {
				r.Devices = append(r.Devices, p.deviceSpec(n))
			}
		}
		for _, n := range []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"} {
			r.Devices = append(r.Devices, p.deviceSpec(n))
		}
	}
	return r, nil
}

func (p *Plugin) deviceSpec(path string) *pluginapi.DeviceSpec {
	return &pluginapi.DeviceSpec{ContainerPath: path, HostPath: filepath.Join(p.cfg.DevRoot, path), Permissions: "rw"}
}

// addEdits adds the environment and bind mounts of e (an MPS client's) to r:
// through the Allocate response, so that they reach the container whatever
// the device-list strategy. Mounts are read-only when e says "ro".
func addEdits(r *pluginapi.ContainerAllocateResponse, e specs.ContainerEdits) {
	for _, kv := range e.Env {
		k, v, _ := strings.Cut(kv, "=")
		if r.Envs == nil {
			r.Envs = map[string]string{}
		}
		r.Envs[k] = v
	}
	for _, m := range e.Mounts {
		if slices.ContainsFunc(r.Mounts, func(o *pluginapi.Mount) bool { return o.ContainerPath == m.ContainerPath }) {
			continue
		}
		r.Mounts = append(r.Mounts, &pluginapi.Mount{ContainerPath: m.ContainerPath, HostPath: m.HostPath, ReadOnly: slices.Contains(m.Options, "ro")})
	}
}

package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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

	"github.com/gpudra/gpudra/pkg/cdi"
	"github.com/gpudra/gpudra/pkg/inventory"
)

// gpu is one physical GPU as the plugin knows it.
type gpu struct {
	dev inventory.Device
	// id names the GPU to the kubelet and runtime (UUID or index).
	id string
	// cdiID is the fully qualified CDI device ID of the GPU under id.
	cdiID string
	numa  int
	// unusable is set for a GPU that NVML cannot use
	// (inventory.Inventory.Unusable): it is advertised Unhealthy for good
	// and never allocated.
	unusable *inventory.UnusableDevice
}

// Plugin is the device plugin. Create it with New, then Start it.
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	cfg    Config
	logger klog.Logger

	gpus []gpu
	// byID maps a GPU's id to its position in gpus.
	byID map[string]int
	topo topology
	// advertised are the device IDs given to the kubelet, GPU-major.
	advertised []string

	mu      sync.Mutex
	healthy []bool        // per GPU
	changed chan struct{} // closed and replaced on every health change

	// CDISpecPath is where the CDI spec was written ("" without CDI).
	cdiSpecPath string

	srv *server
}

// New builds the plugin for inv's GPUs: reads the GPU topology once through
// lib (nil: no topology), and, when a CDI strategy is configured, writes the
// CDI spec from edits into cfg.CDIRoot. The GPUs NVML cannot use
// (inv.Unusable) are advertised too, Unhealthy for good, as NVIDIA's device
// plugin does, so that the node's capacity shows them (one without a
// readable UUID only under the index strategy; otherwise it is logged).
func New(ctx context.Context, cfg Config, inv *inventory.Inventory, lib nvml.Interface, edits *cdi.Edits) (*Plugin, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if inv == nil || len(inv.Devices)+len(inv.Unusable) == 0 {
		return nil, errors.New("device plugin: no GPUs to advertise")
	}
	logger := klog.FromContext(ctx).WithName("deviceplugin")
	n := len(inv.Devices) + len(inv.Unusable)
	p := &Plugin{
		cfg:     cfg,
		logger:  logger,
		byID:    make(map[string]int, n),
		healthy: make([]bool, 0, n),
		changed: make(chan struct{}),
	}
	p.topo = readTopology(logger, lib, inv.Devices)
	add := func(g gpu) error {
		if strings.Contains(g.id, replicaSep) {
			return fmt.Errorf("GPU ID %q contains %q", g.id, replicaSep)
		}
		if _, dup := p.byID[g.id]; dup {
			return fmt.Errorf("two GPUs with ID %q", g.id)
		}
		p.byID[g.id] = len(p.gpus)
		g.cdiID = parser.QualifiedName(CDIVendor, CDIClass, g.id)
		p.gpus = append(p.gpus, g)
		p.healthy = append(p.healthy, g.unusable == nil)
		if cfg.Replicas == 1 {
			p.advertised = append(p.advertised, g.id)
			return nil
		}
		for r := range cfg.Replicas {
			p.advertised = append(p.advertised, g.id+replicaSep+strconv.Itoa(r))
		}
		return nil
	}
	for i, d := range inv.Devices {
		if err := add(gpu{dev: d, id: cfg.gpuID(d.Index, d.UUID), numa: p.topo.numa[i]}); err != nil {
			return nil, err
		}
	}
	for _, u := range inv.Unusable {
		id := cfg.gpuID(u.Index, u.UUID)
		if id == "" {
			logger.Error(u.Err, "Cannot advertise an unusable GPU without its UUID (use --device-id-strategy=index to see it as Unhealthy)",
				"index", u.Index, "fix", u.Fix())
			continue
		}
		if err := add(gpu{dev: inventory.Device{Index: u.Index, UUID: u.UUID, Minor: u.Minor, PCIBusID: u.PCIBusID, ProductName: u.ProductName},
			id: id, numa: -1, unusable: &u}); err != nil {
			return nil, err
		}
		logger.Error(u.Err, "Advertising an unusable GPU as Unhealthy", "id", id, "index", u.Index, "fix", u.Fix())
	}
	p.topo = p.topo.extend(len(p.gpus))
	if cfg.usesCDI() && len(inv.Devices) == 0 {
		logger.Error(nil, "No usable GPU: writing no CDI spec", "unusable", len(inv.Unusable))
	} else if cfg.usesCDI() {
		if edits == nil {
			return nil, errors.New("device plugin: the CDI strategies need the driver's CDI edits")
		}
		path, err := writeCDISpec(cfg, inv, edits)
		if err != nil {
			return nil, err
		}
		p.cdiSpecPath = path
		logger.Info("Wrote CDI spec", "path", path, "kind", CDIKind)
	}
	logger.Info("Device plugin configured", "resource", cfg.AdvertisedResourceName(), "gpus", len(p.gpus), "unusable", len(inv.Unusable),
		"replicas", cfg.Replicas, "deviceListStrategies", cfg.DeviceListStrategies, "deviceIDStrategy", cfg.DeviceIDStrategy,
		"topologySources", p.topo.sources)
	return p, nil
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
	i, ok := p.lookupGPU(id)
	if !ok {
		return fmt.Errorf("no GPU %q", id)
	}
	if u := p.gpus[i].unusable; u != nil {
		if healthy {
			return fmt.Errorf("GPU %q is unusable (%v): it stays Unhealthy until the plugin restarts after the fix", id, u.Err)
		}
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.healthy[i] == healthy {
		return nil
	}
	p.healthy[i] = healthy
	close(p.changed)
	p.changed = make(chan struct{})
	p.logger.Info("GPU health changed", "uuid", p.gpus[i].dev.UUID, "healthy", healthy)
	return nil
}

// lookupGPU finds a GPU by id, replica ID, UUID or index.
func (p *Plugin) lookupGPU(id string) (int, bool) {
	if i, ok := p.gpuOf(id); ok {
		return i, true
	}
	for i, g := range p.gpus {
		if g.dev.UUID == id || strconv.Itoa(g.dev.Index) == id {
			return i, true
		}
	}
	return 0, false
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
	if p.cfg.PassDeviceSpecs {
		for _, i := range sel {
			r.Devices = append(r.Devices, p.deviceSpec(fmt.Sprintf("/dev/nvidia%d", p.gpus[i].dev.Minor)))
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

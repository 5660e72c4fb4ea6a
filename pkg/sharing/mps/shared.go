package mps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// gpuUUIDPattern is what the UUID of a shared GPU may look like. It keeps
// the UUID, which names the GPU's directory, free of path syntax.
var gpuUUIDPattern = regexp.MustCompile(`^GPU-[A-Za-z0-9][A-Za-z0-9-]*$`)

// SharedGPUs enforces the limits of shares of GPUs (devices with a
// sharing.Share): one MPS control daemon per shared GPU, serving every
// claim that holds a share of it, and each share's own limits in its
// client containers. It implements sharing.Applier for sharing.Composite's
// Shares field, which hands it only the claims' share devices.
//
// Ownership: a GPU's daemon belongs to no claim. Apply starts it for the
// first share; Undo stops it with the last one, deciding from the claim
// state's recorded claims (the claims function), so a restarted plugin
// decides the same way from the checkpoint alone. The only memory it keeps
// is a mutex per GPU and the Applies in progress, neither of which is
// needed after a restart.
//
// Safe for concurrent use: calls for different GPUs run in parallel; for
// one GPU, only the decision to start or stop its daemon (and the stop
// itself) is serialized, so shares of a GPU whose daemon runs are prepared
// in parallel.
type SharedGPUs struct {
	daemons
	claims func() []sharing.Claim

	mu   sync.Mutex
	gpus map[string]*sharedGPU // by GPU UUID; entries are never removed
}

// sharedGPU serializes the start and stop of one GPU's daemon.
type sharedGPU struct {
	mu sync.Mutex
	// applying counts, by claim UID, the Applies that have ensured the
	// daemon and wait for it to be ready or have not returned yet. Undo
	// and Sweep keep a daemon that one of them uses even when the claim
	// state does not list its claim (yet). Guarded by mu.
	applying map[string]int
}

var _ sharing.Applier = (*SharedGPUs)(nil)

// NewSharedGPUs checks opts and returns a SharedGPUs. claims returns the
// claim state's recorded claims: the prepared ones and those recorded and
// being prepared, including a claim being unprepared until its record is
// removed. Undo calls it, holding the GPU's mutex, to learn whether another
// claim still holds a share of the GPU; so it must be safe for concurrent
// use, and must not wait for an Apply or Undo in progress.
func NewSharedGPUs(opts Options, claims func() []sharing.Claim) (*SharedGPUs, error) {
	opts, err := checkOptions(opts)
	if claims == nil {
		err = errors.Join(err, errors.New("MPS: shared GPUs need the claim state's recorded claims (claims function)"))
	}
	if err != nil {
		return nil, err
	}
	return &SharedGPUs{daemons: daemons{opts: opts}, claims: claims, gpus: map[string]*sharedGPU{}}, nil
}

// Apply ensures the MPS control daemon of the GPU that the claim's shares
// are on and returns, once the daemon is ready, each share device's client
// edits: the connection to the GPU's daemon (CUDA_MPS_PIPE_DIRECTORY, the
// pipe and shm directories; not the log directory, which names the
// processes of every claim on the GPU) and the share's limits,
// CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=<MiB>M (memory rounded down to a MiB,
// at least 1) when it has a memory limit and
// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=<n> when it has a compute limit. The
// GPU is ordinal 0: a client container sees only it.
//
// Idempotent: a repeated Apply finds the daemon by name and returns the
// same edits; a daemon started before a plugin restart or upgrade is kept.
// A claim with shares on more than one GPU, or of a MIG device, fails
// before anything is created. After an error the claim state calls Undo.
// Devices without a Share are ignored.
func (s *SharedGPUs) Apply(ctx context.Context, c sharing.Claim) (sharing.Edits, error) {
	shares, err := shareDevices(c)
	if err != nil || len(shares) == 0 {
		return sharing.Edits{}, err
	}
	gpu := shares[0].GPUUUID()
	for _, d := range shares[1:] {
		if d.GPUUUID() != gpu {
			return sharing.Edits{}, fmt.Errorf("%s: devices %s (%s) and %s (%s) are shares of two GPUs: a CUDA process connects to "+
				"one MPS control daemon (one CUDA_MPS_PIPE_DIRECTORY), and each shared GPU has a daemon of its own; "+
				"request shares of one GPU per claim (one claim per GPU), or request the GPUs whole",
				c.Ref(), shares[0].Name, gpu, d.Name, d.GPUUUID())
		}
	}
	logger := klog.FromContext(ctx).WithValues("claim", klog.KRef(c.Namespace, c.Name), "claimUID", c.UID, "gpu", gpu)
	dirs := newGPUDirs(s.opts.BaseDir, gpu)
	pod := s.pod(gpuPodMeta(gpu), &daemonConfig{UUIDs: []string{gpu}}, dirs)
	where := func(err error) error {
		return fmt.Errorf("%s: MPS control daemon pod %s/%s of shared GPU %s: %w", c.Ref(), pod.Namespace, pod.Name, gpu, err)
	}

	g := s.gpu(gpu)
	g.mu.Lock()
	err = dirs.create()
	if err == nil {
		err = s.ensurePod(ctx, pod)
	}
	if err == nil {
		g.applying[c.UID]++
	}
	g.mu.Unlock()
	if err != nil {
		return sharing.Edits{}, where(err)
	}
	err = s.waitReady(ctx, pod.Name)
	g.mu.Lock()
	if g.applying[c.UID]--; g.applying[c.UID] <= 0 {
		delete(g.applying, c.UID)
	}
	g.mu.Unlock()
	if err != nil {
		return sharing.Edits{}, where(err)
	}
	out := sharing.Edits{Devices: map[string]specs.ContainerEdits{}}
	for _, d := range shares {
		out.Devices[d.Name] = shareEdits(dirs, d.Share)
	}
	logger.V(2).Info("MPS control daemon of shared GPU ready", "pod", klog.KObj(pod), "shares", len(shares))
	return out, nil
}

// Undo stops the daemon of each GPU that the claim has shares of, and
// removes the GPU's directories, unless another claim still holds a share
// of the GPU: one that claims returns (other than c, by UID) or one whose
// Apply is in progress. It works from the Claim alone, so it cleans up
// after a failed or partial Apply and after a restart. Idempotent. It goes
// on after an error and returns all errors joined.
func (s *SharedGPUs) Undo(ctx context.Context, c sharing.Claim) error {
	var gpus []string
	for _, d := range c.Devices {
		if d.Share != nil && gpuUUIDPattern.MatchString(d.GPUUUID()) && !slices.Contains(gpus, d.GPUUUID()) {
			gpus = append(gpus, d.GPUUUID())
		}
	}
	slices.Sort(gpus)
	var errs []error
	for _, gpu := range gpus {
		if err := s.release(ctx, c, gpu); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Ref(), err))
		}
	}
	return errors.Join(errs...)
}

// release stops the GPU's daemon unless a claim other than c holds a
// share of it.
func (s *SharedGPUs) release(ctx context.Context, c sharing.Claim, gpu string) error {
	logger := klog.FromContext(ctx).WithValues("claim", klog.KRef(c.Namespace, c.Name), "claimUID", c.UID, "gpu", gpu)
	g := s.gpu(gpu)
	g.mu.Lock()
	defer g.mu.Unlock()
	if holder := s.holderLocked(g, gpu, c.UID); holder != "" {
		logger.V(4).Info("MPS control daemon of shared GPU kept: another claim holds a share", "holder", holder)
		return nil
	}
	if err := s.stopLocked(ctx, gpu); err != nil {
		return err
	}
	logger.V(2).Info("MPS control daemon of shared GPU stopped: its last share was released", "pod", klog.KRef(s.opts.Namespace, GPUPodName(gpu)))
	return nil
}

// holderLocked returns a claim other than the one with UID except that
// holds a share of gpu: a recorded claim, or an Apply in progress; "" when
// none. The caller holds g.mu.
func (s *SharedGPUs) holderLocked(g *sharedGPU, gpu, except string) string {
	for uid := range g.applying {
		if uid != except {
			return uid
		}
	}
	for _, other := range s.claims() {
		if other.UID == except {
			continue
		}
		for _, d := range other.Devices {
			if d.Share != nil && d.GPUUUID() == gpu {
				return other.UID
			}
		}
	}
	return ""
}

// stopLocked deletes the GPU's daemon Pod, waits for it to be gone, then
// removes the GPU's directories. The caller holds the GPU's mutex.
func (s *SharedGPUs) stopLocked(ctx context.Context, gpu string) error {
	name := GPUPodName(gpu)
	if err := s.deletePod(ctx, name); err != nil {
		return fmt.Errorf("stopping MPS control daemon pod %s/%s of shared GPU %s: %w", s.opts.Namespace, name, gpu, err)
	}
	return newGPUDirs(s.opts.BaseDir, gpu).remove()
}

// Sweep removes the daemons and directories of shared GPUs that hold no
// prepared share: those a crash left behind between starting a daemon and
// recording the claim, or between removing the last share's record and
// its Undo. held reports whether a prepared claim holds a share of the GPU
// with the given UUID. Daemons of claims (Manager's) are left alone. Call
// it once at start-up, after the claim state is loaded and before the
// plugin serves the kubelet; it still takes each GPU's mutex and keeps a
// daemon that an Apply in progress uses. It goes on after an error and
// returns all errors joined.
func (s *SharedGPUs) Sweep(ctx context.Context, held func(gpuUUID string) bool) error {
	logger := klog.FromContext(ctx)
	var errs []error
	list, err := s.opts.Client.CoreV1().Pods(s.opts.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelComponent + "=" + componentValue + "," + LabelGPUUUID,
		FieldSelector: "spec.nodeName=" + s.opts.NodeName,
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("MPS: listing the shared-GPU daemon pods of node %s: %w", s.opts.NodeName, err))
	} else {
		for i := range list.Items {
			p := &list.Items[i]
			gpu := p.Annotations[annotationGPUUUID]
			if p.Spec.NodeName != s.opts.NodeName || !gpuUUIDPattern.MatchString(gpu) || p.Name != GPUPodName(gpu) || held(gpu) {
				continue
			}
			logger.Info("Removing MPS control daemon of a shared GPU without prepared shares", "pod", klog.KObj(p), "gpu", gpu)
			if err := s.sweepGPU(ctx, gpu); err != nil {
				errs = append(errs, fmt.Errorf("MPS: removing the daemon of shared GPU %s, which holds no prepared share: %w", gpu, err))
			}
		}
	}
	entries, err := os.ReadDir(s.opts.BaseDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("MPS: reading %s: %w", s.opts.BaseDir, err))
	}
	for _, e := range entries {
		gpu, ok := strings.CutPrefix(e.Name(), gpuDirPrefix)
		if !e.IsDir() || !ok || !gpuUUIDPattern.MatchString(gpu) || held(gpu) {
			continue
		}
		// Its pod, if any, was deleted above; one that was not is still
		// using the directories.
		if s.podExists(ctx, GPUPodName(gpu)) {
			continue
		}
		logger.Info("Removing MPS directories of a shared GPU without prepared shares", "gpu", gpu)
		if err := s.sweepGPU(ctx, gpu); err != nil {
			errs = append(errs, fmt.Errorf("MPS: %w", err))
		}
	}
	return errors.Join(errs...)
}

// sweepGPU stops the GPU's daemon unless an Apply in progress uses it.
func (s *SharedGPUs) sweepGPU(ctx context.Context, gpu string) error {
	g := s.gpu(gpu)
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.applying) > 0 {
		return nil
	}
	return s.stopLocked(ctx, gpu)
}

// gpu returns the GPU's entry, making it on first use.
func (s *SharedGPUs) gpu(uuid string) *sharedGPU {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gpus[uuid]
	if g == nil {
		g = &sharedGPU{applying: map[string]int{}}
		s.gpus[uuid] = g
	}
	return g
}

// shareDevices returns the claim's share devices, each once, in allocation
// order, after checking them: a share is of a full GPU with a valid UUID,
// and a device that appears for several requests has one share.
func shareDevices(c sharing.Claim) ([]sharing.Device, error) {
	var out []sharing.Device
	for _, d := range c.Devices {
		if d.Share == nil {
			continue
		}
		if i := slices.IndexFunc(out, func(o sharing.Device) bool { return o.Name == d.Name }); i >= 0 {
			if out[i].Share.ID != d.Share.ID {
				return nil, fmt.Errorf("%s: device %s holds two shares (%s and %s): a container sees a GPU once, with one set of limits; "+
					"ask for the GPU in one request with the sum of their capacities", c.Ref(), d.Name, out[i].Share.ID, d.Share.ID)
			}
			continue
		}
		if d.Type == devices.KindMIG || d.ParentUUID != "" {
			return nil, fmt.Errorf("%s: device %s (%s) is a share of a MIG device: the limits of shares are enforced on full GPUs only; "+
				"request the MIG device whole, or a share of a GPU", c.Ref(), d.Name, d.UUID)
		}
		if !gpuUUIDPattern.MatchString(d.UUID) {
			return nil, fmt.Errorf("%s: device %s has UUID %q, which is not a GPU UUID (GPU-...): "+
				"the node's inventory is inconsistent; restart the plugin so that it discovers the devices again", c.Ref(), d.Name, d.UUID)
		}
		out = append(out, d)
	}
	return out, nil
}

// shareEdits returns the client edits of one share of a GPU whose daemon
// uses the directories d (see Apply).
func shareEdits(d daemonDirs, sh *sharing.Share) specs.ContainerEdits {
	e := connectEdits(d, false)
	if sh.MemoryBytes > 0 {
		e.Env = append(e.Env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0="+strconv.FormatInt(max(1, sh.MemoryBytes/mib), 10)+"M")
	}
	if p := sh.ActiveThreadPercentage(); p > 0 {
		e.Env = append(e.Env, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="+strconv.FormatInt(p, 10))
	}
	return e
}

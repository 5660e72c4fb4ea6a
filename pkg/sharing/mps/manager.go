package mps

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/checkpoint"
	"github.com/gpudra/gpudra/pkg/sharing"
)

// Manager runs one MPS control daemon per claim; it implements
// sharing.Applier. It keeps no state of its own: everything it needs after
// a restart is in the API server (the Pod) and on the host (the
// directories), found from the claim UID. Safe for concurrent use.
type Manager struct {
	daemons
}

var _ sharing.Applier = (*Manager)(nil)

// New checks opts and returns a Manager.
func New(opts Options) (*Manager, error) {
	opts, err := checkOptions(opts)
	if err != nil {
		return nil, err
	}
	return &Manager{daemons{opts: opts}}, nil
}

// Apply starts the claim's MPS control daemon, when a device of the claim
// has sharing.strategy MPS, and returns the devices' client edits once the
// daemon is ready. Idempotent: a daemon that already runs with the claim's
// devices and limits is kept (also one started before a plugin restart);
// one with other settings is replaced. An invalid config fails before
// anything is created. After any error, Undo removes what was created.
func (m *Manager) Apply(ctx context.Context, c sharing.Claim) (sharing.Edits, error) {
	cfg, err := resolve(c)
	if err != nil || cfg == nil {
		return sharing.Edits{}, err
	}
	if err := checkpoint.ValidateClaimUID(c.UID); err != nil {
		return sharing.Edits{}, fmt.Errorf("%s: %w", c.Ref(), err)
	}
	logger := klog.FromContext(ctx).WithValues("claim", klog.KRef(c.Namespace, c.Name), "claimUID", c.UID)
	dirs := newClaimDirs(m.opts.BaseDir, c.UID)
	if err := dirs.create(); err != nil {
		return sharing.Edits{}, fmt.Errorf("%s: %w", c.Ref(), err)
	}
	pod := m.pod(claimPodMeta(c), cfg, dirs)
	if err := m.ensurePod(ctx, pod); err != nil {
		return sharing.Edits{}, fmt.Errorf("%s: MPS control daemon pod %s/%s: %w", c.Ref(), pod.Namespace, pod.Name, err)
	}
	if err := m.waitReady(ctx, pod.Name); err != nil {
		return sharing.Edits{}, fmt.Errorf("%s: MPS control daemon pod %s/%s: %w", c.Ref(), pod.Namespace, pod.Name, err)
	}
	logger.V(2).Info("MPS control daemon ready", "pod", klog.KObj(pod), "devices", cfg.Names,
		"activeThreadPercentage", cfg.ActiveThreadPercentage, "pinnedLimits", cfg.PinnedLimits)
	return clientEdits(dirs, cfg), nil
}

// Undo stops the claim's MPS control daemon and removes its directories.
// It works from the claim UID alone, so it cleans up after a failed or
// partial Apply and after a plugin restart. Idempotent. Claims without an
// MPS device cost nothing: no API call is made for them.
func (m *Manager) Undo(ctx context.Context, c sharing.Claim) error {
	if len(mpsDevices(c)) == 0 {
		return nil
	}
	if err := checkpoint.ValidateClaimUID(c.UID); err != nil {
		return nil // never prepared: such a claim cannot have a daemon
	}
	name := PodName(c.UID)
	if err := m.deletePod(ctx, name); err != nil {
		return fmt.Errorf("%s: stopping MPS control daemon pod %s/%s: %w", c.Ref(), m.opts.Namespace, name, err)
	}
	if err := newClaimDirs(m.opts.BaseDir, c.UID).remove(); err != nil {
		return fmt.Errorf("%s: %w", c.Ref(), err)
	}
	klog.FromContext(ctx).V(2).Info("MPS control daemon stopped", "claim", klog.KRef(c.Namespace, c.Name), "claimUID", c.UID,
		"pod", klog.KRef(m.opts.Namespace, name))
	return nil
}

// Sweep removes the daemons and directories of claims that are not
// prepared on this node (never those of shared GPUs, which
// SharedGPUs.Sweep handles): those a crash left behind between Apply and the
// claim's checkpoint record, or between the record's removal and Undo.
// prepared reports whether a claim UID is prepared. Call it once at start-up,
// after the claim state is loaded and before the plugin serves the kubelet,
// so that no Apply runs at the same time. It goes on after an error and
// returns all errors joined.
func (m *Manager) Sweep(ctx context.Context, prepared func(claimUID string) bool) error {
	logger := klog.FromContext(ctx)
	var errs []error
	list, err := m.opts.Client.CoreV1().Pods(m.opts.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: LabelComponent + "=" + componentValue,
		FieldSelector: "spec.nodeName=" + m.opts.NodeName,
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("MPS: listing the daemon pods of node %s: %w", m.opts.NodeName, err))
	} else {
		for i := range list.Items {
			p := &list.Items[i]
			uid := p.Annotations[annotationClaimUID]
			if p.Spec.NodeName != m.opts.NodeName || uid == "" || prepared(uid) {
				continue
			}
			logger.Info("Removing MPS control daemon of a claim that is not prepared", "pod", klog.KObj(p), "claimUID", uid)
			if err := m.deletePod(ctx, p.Name); err != nil {
				errs = append(errs, fmt.Errorf("MPS: removing daemon pod %s/%s of unprepared claim %s: %w", p.Namespace, p.Name, uid, err))
			}
		}
	}
	entries, err := os.ReadDir(m.opts.BaseDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("MPS: reading %s: %w", m.opts.BaseDir, err))
	}
	for _, e := range entries {
		uid := e.Name()
		// Directories of shared GPUs (gpu-GPU-...) are SharedGPUs'.
		if !e.IsDir() || strings.HasPrefix(uid, gpuDirPrefix) || checkpoint.ValidateClaimUID(uid) != nil || prepared(uid) {
			continue
		}
		// Its pod, if any, was deleted above; one that was not is still
		// using the directories.
		if m.podExists(ctx, PodName(uid)) {
			continue
		}
		logger.Info("Removing MPS directories of a claim that is not prepared", "claimUID", uid)
		if err := newClaimDirs(m.opts.BaseDir, uid).remove(); err != nil {
			errs = append(errs, fmt.Errorf("MPS: %w", err))
		}
	}
	return errors.Join(errs...)
}

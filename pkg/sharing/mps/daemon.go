package mps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// Defaults of Options.
const (
	DefaultReadyTimeout  = 60 * time.Second
	DefaultDeleteTimeout = 60 * time.Second
	DefaultPollInterval  = 500 * time.Millisecond
)

// Options configure a Manager or a SharedGPUs.
type Options struct {
	// Client creates, reads and deletes the daemon Pods.
	Client kubernetes.Interface
	// Namespace of the daemon Pods: the plugin's own.
	Namespace string
	// NodeName is the node the Pods are pinned to: the plugin's node.
	NodeName string
	// Image of the daemon container: the driver image, which holds busybox
	// (sh, chroot) and gpu-mps-mock-daemon.
	Image string
	// BaseDir is the host directory of the claims' MPS directories; the
	// plugin must see it at the same path.
	BaseDir string
	// HostDriverRoot is the host path of the NVIDIA driver installation
	// ("/" or "/run/nvidia/driver"); unused with Mock.
	HostDriverRoot string
	// Mock runs gpu-mps-mock-daemon instead of the driver's MPS control
	// daemon (nodes with a mock NVML backend).
	Mock bool
	// PriorityClassName of the daemon Pods; empty: none.
	PriorityClassName string
	// ReadyTimeout bounds how long Apply waits for a daemon to become
	// ready; DefaultReadyTimeout when zero.
	ReadyTimeout time.Duration
	// DeleteTimeout bounds how long Undo waits for a daemon Pod to be gone;
	// DefaultDeleteTimeout when zero.
	DeleteTimeout time.Duration
	// PollInterval is how often the Pod is read while waiting;
	// DefaultPollInterval when zero.
	PollInterval time.Duration
}

// checkOptions checks opts and fills in the defaults.
func checkOptions(opts Options) (Options, error) {
	var errs []error
	if opts.Client == nil {
		errs = append(errs, errors.New("MPS: a Kubernetes client is required"))
	}
	if opts.Namespace == "" {
		errs = append(errs, errors.New("MPS: the namespace of the daemon pods is required: set --namespace (POD_NAMESPACE) to the plugin's namespace"))
	}
	if opts.NodeName == "" {
		errs = append(errs, errors.New("MPS: the node name is required (--node-name or NODE_NAME)"))
	}
	if opts.Image == "" {
		errs = append(errs, errors.New("MPS: the daemon image is required: set --mps-daemon-image (MPS_DAEMON_IMAGE) to the driver image"))
	}
	if !filepath.IsAbs(opts.BaseDir) {
		errs = append(errs, fmt.Errorf("MPS: the base directory %q is not an absolute path: set --mps-base-dir (MPS_BASE_DIR) to a host directory that the plugin sees at the same path", opts.BaseDir))
	}
	if !opts.Mock && !filepath.IsAbs(opts.HostDriverRoot) {
		errs = append(errs, fmt.Errorf("MPS: the host driver root %q is not an absolute path: set it to where the NVIDIA driver is installed on the host", opts.HostDriverRoot))
	}
	if err := errors.Join(errs...); err != nil {
		return Options{}, err
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.DeleteTimeout <= 0 {
		opts.DeleteTimeout = DefaultDeleteTimeout
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	opts.BaseDir = filepath.Clean(opts.BaseDir)
	return opts, nil
}

// daemons builds, starts, waits for and deletes daemon Pods: the Pod
// handling that Manager (a daemon per claim) and SharedGPUs (a daemon per
// shared GPU) share. It holds no state besides its options; what a daemon
// is lives in the API server and on the host.
type daemons struct {
	opts Options
}

// pod returns the daemon Pod identified by meta that serves cfg's devices
// from the directories dirs.
func (m daemons) pod(meta podMeta, cfg *daemonConfig, dirs daemonDirs) *corev1.Pod {
	return buildPod(podSpec{
		Meta: meta, Config: cfg, Dirs: dirs, Namespace: m.opts.Namespace, NodeName: m.opts.NodeName,
		Image: m.opts.Image, HostDriverRoot: m.opts.HostDriverRoot, Mock: m.opts.Mock, PriorityClassName: m.opts.PriorityClassName,
	})
}

// podExists reports whether the Pod named name exists (also while being
// deleted); an error reading it counts as existing, so that callers that
// clean up leave things alone when unsure.
func (m daemons) podExists(ctx context.Context, name string) bool {
	_, err := m.opts.Client.CoreV1().Pods(m.opts.Namespace).Get(ctx, name, metav1.GetOptions{})
	return !apierrors.IsNotFound(err)
}

// ensurePod makes sure that the wanted Pod exists: it keeps one with the
// same settings (hash) and replaces any other.
func (m daemons) ensurePod(ctx context.Context, want *corev1.Pod) error {
	logger := klog.FromContext(ctx)
	pods := m.opts.Client.CoreV1().Pods(m.opts.Namespace)
	have, err := pods.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading it: %w", err)
	case have.DeletionTimestamp == nil && have.Annotations[annotationHash] == want.Annotations[annotationHash] && !podFinished(have):
		logger.V(4).Info("MPS control daemon pod exists", "pod", klog.KObj(have))
		return nil
	default:
		logger.Info("Replacing MPS control daemon pod", "pod", klog.KObj(have), "hash", have.Annotations[annotationHash],
			"wantHash", want.Annotations[annotationHash], "phase", have.Status.Phase, "deleting", have.DeletionTimestamp != nil)
		if err := m.deletePod(ctx, want.Name); err != nil {
			return err
		}
	}
	if _, err := pods.Create(ctx, want, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating it: %w: check that the plugin's service account may create pods in namespace %s", err, m.opts.Namespace)
	}
	logger.Info("Created MPS control daemon pod", "pod", klog.KObj(want), "node", m.opts.NodeName)
	return nil
}

// deletePod deletes the Pod and waits until it is gone.
func (m daemons) deletePod(ctx context.Context, name string) error {
	pods := m.opts.Client.CoreV1().Pods(m.opts.Namespace)
	err := pods.Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting it: %w", err)
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, m.opts.PollInterval, m.opts.DeleteTimeout, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return true, nil
		case err != nil:
			last = err.Error()
		default:
			last = "phase " + string(p.Status.Phase)
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("it is still there after %v (%s): %w; the kubelet of node %s stops it, check the node", m.opts.DeleteTimeout, last, err, m.opts.NodeName)
	}
	return nil
}

// waitReady waits until the Pod is Ready, fails early when it cannot become
// ready, and otherwise times out after ReadyTimeout with what it last saw.
func (m daemons) waitReady(ctx context.Context, name string) error {
	pods := m.opts.Client.CoreV1().Pods(m.opts.Namespace)
	last := "not created yet"
	err := wait.PollUntilContextTimeout(ctx, m.opts.PollInterval, m.opts.ReadyTimeout, true, func(ctx context.Context) (bool, error) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return false, errors.New("it was deleted while starting: prepare the claim again")
		case err != nil:
			last = err.Error()
			return false, nil
		case p.DeletionTimestamp != nil:
			return false, errors.New("it is being deleted while starting: prepare the claim again")
		case podFinished(p):
			return false, fmt.Errorf("it stopped (phase %s): %s; see kubectl -n %s logs %s", p.Status.Phase, podState(p), m.opts.Namespace, name)
		case podReady(p):
			return true, nil
		}
		last = podState(p)
		return false, nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted while waiting for it to become ready (%s): %w", last, err)
	}
	if wait.Interrupted(err) {
		return fmt.Errorf("not ready after %v: %s; see kubectl -n %s describe pod %s and kubectl -n %s logs %s",
			m.opts.ReadyTimeout, last, m.opts.Namespace, name, m.opts.Namespace, name)
	}
	return err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded
}

// podState describes why a Pod is not ready, in the words of its status.
func podState(p *corev1.Pod) string {
	parts := []string{"phase " + string(p.Status.Phase)}
	if p.Status.Phase == "" {
		parts[0] = "not scheduled yet"
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			parts = append(parts, fmt.Sprintf("%s: %s", c.Type, c.Message))
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			parts = append(parts, fmt.Sprintf("container %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message))
		case cs.State.Terminated != nil:
			parts = append(parts, fmt.Sprintf("container %s terminated: %s (exit code %d) %s", cs.Name,
				cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message))
		case cs.State.Running != nil && !cs.Ready:
			parts = append(parts, fmt.Sprintf("container %s running, readiness probe not passed yet (restarts: %d)", cs.Name, cs.RestartCount))
		}
	}
	return strings.TrimSpace(strings.Join(parts, "; "))
}

package mps

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/gpudra/gpudra/pkg/sharing"
)

// Labels and annotations of a daemon Pod.
const (
	// LabelClaimUID holds the claim UID (hashed when it is no valid label
	// value); it finds the daemon of a claim.
	LabelClaimUID = "gpudra.io/mps-claim-uid"
	// LabelGPUUUID holds the UUID of the shared GPU that a SharedGPUs
	// daemon serves (hashed when it is no valid label value); it marks
	// the daemons of shared GPUs. Their annotation of the same name holds
	// the UUID itself.
	LabelGPUUUID = "gpudra.io/mps-gpu-uuid"
	// LabelComponent marks every daemon Pod of the plugin.
	LabelComponent      = "app.kubernetes.io/component"
	componentValue      = "mps-control-daemon"
	labelManagedBy      = "app.kubernetes.io/managed-by"
	managedByValue      = "gpu-kubelet-plugin"
	annotationClaim     = "gpudra.io/mps-claim"
	annotationClaimUID  = "gpudra.io/mps-claim-uid"
	annotationGPUUUID   = "gpudra.io/mps-gpu-uuid"
	annotationNode      = "gpudra.io/mps-node"
	annotationHash      = "gpudra.io/mps-config-hash"
	containerName       = "mps-control-daemon"
	podNamePrefix       = "gpudra-mps-"
	driverRootMount     = "/driver-root"
	mockDaemonBinary    = "/usr/bin/gpu-mps-mock-daemon"
	mpsControlBinary    = "nvidia-cuda-mps-control"
	terminationGraceSec = 10
)

// PodName returns the name of the daemon Pod of the claim with the given
// UID: deterministic, so that Apply and Undo find it without any state.
func PodName(claimUID string) string {
	return podNamePrefix + uidKey(claimUID, 63-len(podNamePrefix), validation.IsDNS1123Label)
}

// GPUPodName returns the name of the daemon Pod of the shared GPU with the
// given UUID: "gpudra-mps-" and the UUID in lower case (a DNS label), so
// that Apply and Undo of every share of the GPU find the same Pod without
// any state. It never equals a PodName: claim UIDs never start with "gpu-".
func GPUPodName(gpuUUID string) string {
	return podNamePrefix + uidKey(strings.ToLower(gpuUUID), 63-len(podNamePrefix), validation.IsDNS1123Label)
}

func gpuUUIDLabel(gpuUUID string) string {
	return uidKey(gpuUUID, validation.LabelValueMaxLength, validation.IsValidLabelValue)
}

func claimUIDLabel(claimUID string) string {
	return uidKey(claimUID, validation.LabelValueMaxLength, validation.IsValidLabelValue)
}

// uidKey returns uid when it is valid and fits in max characters, else a
// hash of it.
func uidKey(uid string, max int, valid func(string) []string) string {
	if len(uid) <= max && len(valid(uid)) == 0 {
		return uid
	}
	sum := sha256.Sum256([]byte(uid))
	return "h" + hex.EncodeToString(sum[:])[:40]
}

// podMeta is what tells one daemon Pod from another: its name and the
// labels and annotations that find it (a claim's or a shared GPU's).
// buildPod adds the labels and annotations common to all daemon Pods.
type podMeta struct {
	Name        string
	Labels      map[string]string
	Annotations map[string]string
}

// claimPodMeta is the identity of the daemon Pod of a claim (Manager).
func claimPodMeta(c sharing.Claim) podMeta {
	return podMeta{
		Name:   PodName(c.UID),
		Labels: map[string]string{LabelClaimUID: claimUIDLabel(c.UID)},
		Annotations: map[string]string{
			annotationClaim:    fmt.Sprintf("%s/%s (uid %s)", c.Namespace, c.Name, c.UID),
			annotationClaimUID: c.UID,
		},
	}
}

// gpuPodMeta is the identity of the daemon Pod of a shared GPU
// (SharedGPUs).
func gpuPodMeta(gpuUUID string) podMeta {
	return podMeta{
		Name:        GPUPodName(gpuUUID),
		Labels:      map[string]string{LabelGPUUUID: gpuUUIDLabel(gpuUUID)},
		Annotations: map[string]string{annotationGPUUUID: gpuUUID},
	}
}

// podSpec holds the inputs of buildPod.
type podSpec struct {
	Meta              podMeta
	Config            *daemonConfig
	Dirs              daemonDirs
	Namespace         string
	NodeName          string
	Image             string
	HostDriverRoot    string
	Mock              bool
	PriorityClassName string
}

// buildPod returns a daemon Pod: one serving Config's devices with its
// limits, using the directories Dirs, named and labelled by Meta.
func buildPod(s podSpec) *corev1.Pod {
	root := "" // where the daemon's file system is, seen from the container
	if !s.Mock {
		root = driverRootMount
	}
	env := []corev1.EnvVar{
		{Name: "CUDA_VISIBLE_DEVICES", Value: strings.Join(s.Config.UUIDs, ",")},
		{Name: "CUDA_MPS_PIPE_DIRECTORY", Value: containerPipeDir},
		{Name: "CUDA_MPS_LOG_DIRECTORY", Value: containerLogDir},
	}
	hostPathDir := corev1.HostPathDirectory
	volumes := []corev1.Volume{
		{Name: "mps-pipe", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: s.Dirs.Pipe, Type: &hostPathDir}}},
		{Name: "mps-log", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: s.Dirs.Log, Type: &hostPathDir}}},
		{Name: "mps-shm", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: s.Dirs.Shm, Type: &hostPathDir}}},
	}
	var mounts []corev1.VolumeMount
	var command []string
	if s.Mock {
		command = mockCommand(s.Config)
	} else {
		volumes = append([]corev1.Volume{{Name: "driver-root", VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: s.HostDriverRoot, Type: &hostPathDir}}}}, volumes...)
		mounts = append(mounts, corev1.VolumeMount{Name: "driver-root", MountPath: driverRootMount})
		command = []string{"chroot", driverRootMount, "sh", "-c", controlScript(s.Config)}
	}
	mounts = append(mounts,
		corev1.VolumeMount{Name: "mps-pipe", MountPath: root + containerPipeDir},
		corev1.VolumeMount{Name: "mps-log", MountPath: root + containerLogDir},
		corev1.VolumeMount{Name: "mps-shm", MountPath: root + containerShmDir},
	)
	privileged := true
	automount := false
	grace := int64(terminationGraceSec)
	probe := fmt.Sprintf("test -p %s && test -f %s",
		path.Join(root+containerPipeDir, "control"), path.Join(root+containerLogDir, readyFile))

	labels := map[string]string{LabelComponent: componentValue, labelManagedBy: managedByValue}
	for k, v := range s.Meta.Labels {
		labels[k] = v
	}
	annotations := map[string]string{annotationNode: s.NodeName, annotationHash: s.Config.hash()}
	for k, v := range s.Meta.Annotations {
		annotations[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        s.Meta.Name,
			Namespace:   s.Namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			NodeName:                      s.NodeName,
			RestartPolicy:                 corev1.RestartPolicyAlways,
			HostPID:                       !s.Mock,
			PriorityClassName:             s.PriorityClassName,
			AutomountServiceAccountToken:  &automount,
			TerminationGracePeriodSeconds: &grace,
			// Like a DaemonSet's pods: the daemon lives as long as the
			// claim's workloads on this node, whatever the node's taints.
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:            containerName,
				Image:           s.Image,
				Command:         command,
				Env:             env,
				SecurityContext: &corev1.SecurityContext{Privileged: &privileged},
				VolumeMounts:    mounts,
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", probe}}},
					PeriodSeconds:    1,
					TimeoutSeconds:   5,
					FailureThreshold: 3,
				},
			}},
			Volumes: volumes,
		},
	}
}

// controlScript is the shell script that runs the real daemon inside the
// driver root: start it in the foreground, apply the limits through its
// control pipe, mark it ready, and quit it on SIGTERM. The values in it are
// validated (UUID pattern, integers), so they need no quoting.
func controlScript(c *daemonConfig) string {
	var b strings.Builder
	ctl := mpsControlBinary
	pipe, logDir := containerPipeDir, containerLogDir
	fmt.Fprintf(&b, "rm -f %s/%s %s/control %s/nvidia-cuda-mps-control.pid\n", logDir, readyFile, pipe, pipe)
	fmt.Fprintf(&b, "trap 'echo quit | %s; wait $daemon; exit 0' TERM INT\n", ctl)
	flags := "-f"
	if c.MultiUser {
		flags += " -M" // multi-user server: clients of any UID
	}
	fmt.Fprintf(&b, "%s %s &\ndaemon=$!\n", ctl, flags)
	fmt.Fprintf(&b, "i=0\nwhile [ ! -p %s/control ]; do\n", pipe)
	b.WriteString("  kill -0 $daemon 2>/dev/null || { echo 'MPS control daemon exited during start-up' >&2; exit 1; }\n")
	b.WriteString("  i=$((i+1)); [ $i -le 60 ] || { echo 'MPS control pipe missing after 60s' >&2; exit 1; }\n")
	b.WriteString("  sleep 1\ndone\n")
	var cmds []string
	if p := c.ActiveThreadPercentage; p != nil {
		cmds = append(cmds, "set_default_active_thread_percentage "+strconv.Itoa(*p))
	}
	for _, l := range c.PinnedLimits {
		cmds = append(cmds, fmt.Sprintf("set_default_device_pinned_mem_limit %s %s", l.UUID, l.Value()))
	}
	for _, cmd := range cmds {
		fmt.Fprintf(&b, "echo %s | %s || { echo 'MPS command failed: %s' >&2; exit 1; }\n", cmd, ctl, cmd)
	}
	fmt.Fprintf(&b, "echo \"MPS control daemon ready for $CUDA_VISIBLE_DEVICES\"\ntouch %s/%s\n", logDir, readyFile)
	b.WriteString("wait $daemon\n")
	return b.String()
}

// mockCommand runs gpu-mps-mock-daemon with the limits and the mode as
// flags.
func mockCommand(c *daemonConfig) []string {
	cmd := []string{mockDaemonBinary}
	if p := c.ActiveThreadPercentage; p != nil {
		cmd = append(cmd, "--active-thread-percentage="+strconv.Itoa(*p))
	}
	for _, l := range c.PinnedLimits {
		cmd = append(cmd, "--pinned-device-mem-limit="+l.UUID+"="+l.Value())
	}
	if c.MultiUser {
		cmd = append(cmd, "--multiuser")
	}
	return cmd
}

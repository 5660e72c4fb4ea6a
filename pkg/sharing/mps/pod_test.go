package mps

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

func realPod(t *testing.T) (*corev1.Pod, *daemonConfig) {
	t.Helper()
	cfg := &daemonConfig{
		UUIDs: []string{"GPU-aaaa", "GPU-bbbb"}, Names: []string{"gpu-0", "gpu-1"}, ActiveThreadPercentage: ptr(30),
		PinnedLimits: []pinnedLimit{{UUID: "GPU-bbbb", MiB: 2048}},
	}
	p := buildPod(podSpec{
		Meta: claimPodMeta(claimOf()), Config: cfg, Dirs: newClaimDirs("/var/lib/gpudra/mps", testClaimUID),
		Namespace: testNamespace, NodeName: testNode, Image: "img", HostDriverRoot: "/run/nvidia/driver",
		PriorityClassName: "system-node-critical",
	})
	return p, cfg
}

func TestRealDaemonPodChrootsIntoTheDriverRoot(t *testing.T) {
	p, _ := realPod(t)
	spec := p.Spec
	if !spec.HostPID || spec.HostIPC || spec.NodeName != testNode || spec.PriorityClassName != "system-node-critical" ||
		spec.RestartPolicy != corev1.RestartPolicyAlways || *spec.AutomountServiceAccountToken {
		t.Errorf("pod spec: hostPID %v hostIPC %v node %q priority %q restart %q token %v", spec.HostPID, spec.HostIPC,
			spec.NodeName, spec.PriorityClassName, spec.RestartPolicy, *spec.AutomountServiceAccountToken)
	}
	ctr := spec.Containers[0]
	if !slices.Equal(ctr.Command[:4], []string{"chroot", "/driver-root", "sh", "-c"}) || !*ctr.SecurityContext.Privileged {
		t.Fatalf("command %q, privileged %v", ctr.Command, *ctr.SecurityContext.Privileged)
	}
	script := ctr.Command[4]
	for _, want := range []string{
		"nvidia-cuda-mps-control -f &",
		"echo set_default_active_thread_percentage 30 | nvidia-cuda-mps-control",
		"echo set_default_device_pinned_mem_limit GPU-bbbb 2048M | nvidia-cuda-mps-control",
		"touch /var/log/nvidia-mps/ready",
		"trap 'echo quit | nvidia-cuda-mps-control; wait $daemon; exit 0' TERM INT",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
	if strings.Contains(script, "GPU-aaaa") {
		t.Errorf("script sets a limit for GPU-aaaa, which has none:\n%s", script)
	}
	// The limits are applied before the daemon is marked ready.
	if strings.Index(script, "set_default_device_pinned_mem_limit") > strings.Index(script, "touch /var/log/nvidia-mps/ready") {
		t.Errorf("ready is written before the limits are applied:\n%s", script)
	}

	mounts := map[string]string{}
	for _, m := range ctr.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		hostPaths[v.Name] = v.HostPath.Path
	}
	for mountPath, hostPath := range map[string]string{
		"/driver-root":                    "/run/nvidia/driver",
		"/driver-root/tmp/nvidia-mps":     "/var/lib/gpudra/mps/" + testClaimUID + "/pipe",
		"/driver-root/var/log/nvidia-mps": "/var/lib/gpudra/mps/" + testClaimUID + "/log",
		"/driver-root/dev/shm":            "/var/lib/gpudra/mps/" + testClaimUID + "/shm",
	} {
		if got := hostPaths[mounts[mountPath]]; got != hostPath {
			t.Errorf("%s mounts host path %q, want %q", mountPath, got, hostPath)
		}
	}
	probe := strings.Join(ctr.ReadinessProbe.Exec.Command, " ")
	if !strings.Contains(probe, "test -p /driver-root/tmp/nvidia-mps/control && test -f /driver-root/var/log/nvidia-mps/ready") {
		t.Errorf("readiness probe %q", probe)
	}
	if envValue(ctr, "CUDA_VISIBLE_DEVICES") != "GPU-aaaa,GPU-bbbb" || envValue(ctr, "CUDA_MPS_PIPE_DIRECTORY") != "/tmp/nvidia-mps" {
		t.Errorf("env %v", ctr.Env)
	}
}

func TestMockDaemonPodRunsTheMockBinary(t *testing.T) {
	cfg := &daemonConfig{UUIDs: []string{"GPU-aaaa"}, Names: []string{"gpu-0"}}
	p := buildPod(podSpec{Meta: claimPodMeta(claimOf()), Config: cfg, Dirs: newClaimDirs("/base", testClaimUID),
		Namespace: testNamespace, NodeName: testNode, Image: "img", Mock: true})
	ctr := p.Spec.Containers[0]
	if !slices.Equal(ctr.Command, []string{mockDaemonBinary}) {
		t.Errorf("command %q", ctr.Command)
	}
	for _, v := range p.Spec.Volumes {
		if v.Name == "driver-root" {
			t.Error("mock daemon pod mounts a driver root")
		}
	}
	probe := strings.Join(ctr.ReadinessProbe.Exec.Command, " ")
	if !strings.Contains(probe, "test -p /tmp/nvidia-mps/control && test -f /var/log/nvidia-mps/ready") {
		t.Errorf("readiness probe %q", probe)
	}
}

func TestPodNameIsDeterministicAndValid(t *testing.T) {
	if PodName(testClaimUID) != "gpudra-mps-"+testClaimUID || PodName(testClaimUID) != PodName(testClaimUID) {
		t.Errorf("PodName(%s) = %s", testClaimUID, PodName(testClaimUID))
	}
	for _, uid := range []string{"UPPER-case-UID", strings.Repeat("a", 100)} {
		name := PodName(uid)
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("PodName(%q) = %q: %v", uid, name, errs)
		}
		if name != PodName(uid) || name == PodName(uid+"x") {
			t.Errorf("PodName(%q) is not a deterministic function of the UID", uid)
		}
		if errs := validation.IsValidLabelValue(claimUIDLabel(uid)); len(errs) > 0 {
			t.Errorf("claim label of %q: %v", uid, errs)
		}
	}
}

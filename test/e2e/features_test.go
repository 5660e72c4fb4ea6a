//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/gpudra/gpudra/pkg/resourceslice"
)

// hostStateDir is the chart's hostStateDir: the mock host (driver files,
// time-slice state, event injection) lives in its mock/ directory.
var hostStateDir = envOr("GPUDRA_E2E_HOST_STATE_DIR", "/var/lib/gpudra")

// draMode skips a test unless the chart runs the DRA plugin on the default
// mock machine (hack/e2e.sh's first phase).
func draMode(t *testing.T) {
	t.Helper()
	if m := os.Getenv("GPUDRA_E2E_MODE"); m != "" && m != "dra" {
		t.Skipf("the chart is in %s mode (GPUDRA_E2E_MODE)", m)
	}
}

// pluginPods returns the running pods of the DRA kubelet plugin.
func pluginPods(t *testing.T, c kubernetes.Interface) []corev1.Pod {
	t.Helper()
	list, err := c.CoreV1().Pods(releaseNamespace).List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/component=kubelet-plugin"})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// deviceAttr returns a string attribute of a published device of this driver.
func deviceAttr(t *testing.T, c kubernetes.Interface, device string, attr resourceapi.QualifiedName) string {
	t.Helper()
	d := publishedDevice(t, c, device)
	if d == nil {
		t.Fatalf("device %s is not published", device)
	}
	return ptr.Deref(d.Attributes[attr].StringValue, "")
}

func publishedDevice(t *testing.T, c kubernetes.Interface, name string) *resourceapi.Device {
	t.Helper()
	slices, err := c.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slices.Items {
		if s.Spec.Driver != driverName {
			continue
		}
		for i := range s.Spec.Devices {
			if s.Spec.Devices[i].Name == name {
				return &s.Spec.Devices[i]
			}
		}
	}
	return nil
}

// TestDoctorInitContainerPassed: hack/e2e.sh installs the chart with the
// doctor init container, pointed at the local cluster's containerd config;
// it must have checked the node, found containerd's CDI support and passed.
func TestDoctorInitContainerPassed(t *testing.T) {
	draMode(t)
	expectDoctorPassed(t)
}

// expectDoctorPassed checks that the plugin pod's doctor init container
// passed and returns its report; it skips the test when the chart runs
// without the doctor.
func expectDoctorPassed(t *testing.T) string {
	t.Helper()
	c := client(t)
	pods := pluginPods(t, c)
	if len(pods) == 0 {
		t.Fatal("no kubelet plugin pod")
	}
	p := pods[0]
	if len(p.Spec.InitContainers) == 0 || p.Spec.InitContainers[0].Name != "doctor" {
		t.Skip("the chart runs without the doctor (doctor.enabled=false)")
	}
	var st *corev1.ContainerStatus
	for i := range p.Status.InitContainerStatuses {
		if p.Status.InitContainerStatuses[i].Name == "doctor" {
			st = &p.Status.InitContainerStatuses[i]
		}
	}
	if st == nil || st.State.Terminated == nil || st.State.Terminated.ExitCode != 0 {
		t.Fatalf("doctor init container did not pass: %+v", st)
	}
	logs := kubectl(t, "-n", p.Namespace, "logs", p.Name, "-c", "doctor")
	for _, want := range []string{"nvml", "driver/device-nodes", "cdi/dir /var/run/cdi", "containerd/cdi", " 0 failed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("doctor report lacks %q:\n%s", want, logs)
		}
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.HasPrefix(line, "containerd/cdi") && !strings.Contains(line, "PASS") {
			t.Errorf("containerd's CDI support not confirmed: %s", line)
		}
	}
	return logs
}

// mpsView is what a container of demo 13 printed between its MPS markers.
func mpsView(t *testing.T, ns, pod, container string) string {
	t.Helper()
	logs := kubectl(t, "-n", ns, "logs", pod, "-c", container)
	start, end := strings.Index(logs, "MPS-VIEW-BEGIN"), strings.Index(logs, "MPS-VIEW-END")
	if start < 0 || end < start {
		t.Fatalf("%s/%s[%s]: no MPS view in the log:\n%s", ns, pod, container, logs)
	}
	return logs[start:end]
}

func timeSlices(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	data, err := os.ReadFile(filepath.Join(hostStateDir, "mock", "var", "lib", "gpudra-mock", "timeslice.json"))
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("mock time-slice state: %v: %s", err, data)
	}
	return out
}

// TestSharingTimeSlicingAndMPS runs demos 11 (one time-sliced GPU shared by
// two pods) and 13 (two containers sharing a GPU through a per-claim MPS
// daemon) and checks the settings on the node while they run and after.
func TestSharingTimeSlicingAndMPS(t *testing.T) {
	draMode(t)
	c := client(t)
	ctx := context.Background()
	t.Cleanup(func() {
		kubectl(t, "delete", "ns", "gpudra-demo", "--wait=true", "--timeout=2m", "--ignore-not-found")
	})
	views := runWave(t, c, "3", "11", "13")

	// Time-slicing: both pods on the same GPU, set to Medium once.
	a, b := views["timeslicing-0/ctr"].minors, views["timeslicing-1/ctr"].minors
	if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 1 {
		t.Fatalf("time-sliced pods see %v and %v, want the same one GPU", a, b)
	}
	tsUUID := deviceAttr(t, c, "gpu-"+a[0], resourceslice.AttrUUID)
	if got := timeSlices(t)[tsUUID]; got != "Medium" {
		t.Errorf("time slice of %s (gpu-%s) = %q while the claim is prepared, want Medium (state %v)", tsUUID, a[0], got, timeSlices(t))
	}

	// MPS: both containers see the daemon's pipe and its limits.
	for _, ctr := range []string{"ctr0", "ctr1"} {
		v := mpsView(t, "gpudra-demo", "mps", ctr)
		for _, want := range []string{"CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps", "CUDA_MPS_LOG_DIRECTORY=/var/log/nvidia-mps", "5120M"} {
			if !strings.Contains(v, want) {
				t.Errorf("mps[%s]: MPS view lacks %q:\n%s", ctr, want, v)
			}
		}
		pipe := false
		for _, line := range strings.Split(v, "\n") {
			f := strings.Fields(line)
			pipe = pipe || (len(f) > 0 && strings.HasPrefix(f[0], "p") && f[len(f)-1] == "control")
		}
		if !pipe {
			t.Errorf("mps[%s]: no control pipe in the pipe directory:\n%s", ctr, v)
		}
	}
	if x, y := views["mps/ctr0"].minors, views["mps/ctr1"].minors; fmt.Sprint(x) != fmt.Sprint(y) || len(x) != 1 {
		t.Errorf("MPS containers see %v and %v, want the same one GPU", x, y)
	}
	mpsPod, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, "mps", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mpsClaimUID string
	for _, st := range mpsPod.Status.ResourceClaimStatuses {
		claim, err := c.ResourceV1().ResourceClaims("gpudra-demo").Get(ctx, ptr.Deref(st.ResourceClaimName, ""), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mpsClaimUID = string(claim.UID)
	}
	daemons, err := c.CoreV1().Pods(releaseNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var daemon string
	for _, p := range daemons.Items {
		if strings.HasPrefix(p.Name, "gpudra-mps-") && strings.Contains(p.Name, mpsClaimUID) {
			daemon = p.Name
		}
	}
	if daemon == "" {
		t.Fatalf("no MPS daemon pod of claim %s in %s", mpsClaimUID, releaseNamespace)
	}
	mpsDir := filepath.Join(hostStateDir, "mps", mpsClaimUID)
	if _, err := os.Stat(mpsDir); err != nil {
		t.Errorf("MPS directory of the claim: %v", err)
	}

	// A plugin restart leaves the daemon (and the workload using it) alone,
	// and the restarted plugin still stops it on unprepare.
	before, err := c.CoreV1().Pods(releaseNamespace).Get(ctx, daemon, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restartPlugin(t, c)
	after, err := c.CoreV1().Pods(releaseNamespace).Get(ctx, daemon, metav1.GetOptions{})
	if err != nil || after.UID != before.UID || after.Status.Phase != corev1.PodRunning {
		t.Fatalf("MPS daemon after a plugin restart: %v (uid %s -> %s, phase %s); want the same pod running", err, before.UID, after.UID, after.Status.Phase)
	}
	if p, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, "mps", metav1.GetOptions{}); err != nil || p.Status.Phase != corev1.PodRunning {
		t.Fatalf("MPS workload after a plugin restart: %v", err)
	}

	deleteWave(t, c, "3")
	kubectl(t, "-n", "gpudra-demo", "delete", "resourceclaim", "timesliced-gpu", "--ignore-not-found", "--wait=true")
	eventually(t, 2*time.Minute, "time slice back to Default, MPS daemon and its directory gone", func() (bool, string) {
		if got := timeSlices(t)[tsUUID]; got != "" && got != "Default" {
			return false, "time slice " + got
		}
		if _, err := c.CoreV1().Pods(releaseNamespace).Get(ctx, daemon, metav1.GetOptions{}); err == nil {
			return false, "daemon pod " + daemon + " still there"
		}
		if _, err := os.Stat(mpsDir); err == nil {
			return false, mpsDir + " still there"
		}
		return true, ""
	})
}

// restartPlugin deletes the kubelet plugin pod and waits until its
// replacement is ready.
func restartPlugin(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	old := pluginPods(t, c)
	kubectl(t, "-n", releaseNamespace, "delete", "pod", "-l", "app.kubernetes.io/component=kubelet-plugin", "--wait=true", "--timeout=2m")
	eventually(t, 2*time.Minute, "a new kubelet plugin pod ready", func() (bool, string) {
		for _, p := range pluginPods(t, c) {
			if len(old) > 0 && p.UID == old[0].UID {
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					return true, ""
				}
			}
		}
		return false, "not ready yet"
	})
}

// injectionFile is where the plugin takes injected mock NVML events from; it
// removes the file when it takes the commands in.
func injectionFile() string { return filepath.Join(hostStateDir, "mock", "inject-events") }

// injectEvent writes a command for the mock NVML event set of the plugin.
func injectEvent(t *testing.T, command string) {
	t.Helper()
	tmp := filepath.Join(hostStateDir, "mock", ".inject-events.tmp")
	if err := os.WriteFile(tmp, []byte(command+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, injectionFile()); err != nil {
		t.Fatal(err)
	}
}

// injectXIDUntil injects XID 48 on the GPU with this UUID, again until it
// lands (events before the monitor listens are dropped), until done says
// so, for at most a minute. After each injection it waits (polled) until
// the plugin has taken the event in, then gives done a bounded grace period
// before injecting again.
func injectXIDUntil(t *testing.T, uuid, what string, done func() (bool, string)) {
	t.Helper()
	const taintGrace = 5 * time.Second
	injected := false
	var takenIn time.Time // when the last injection was seen taken in
	eventually(t, time.Minute, what, func() (bool, string) {
		if ok, why := done(); ok {
			return true, ""
		} else if injected {
			if injectionPending(t) {
				return false, "the plugin has not taken the injected event in yet"
			}
			if takenIn.IsZero() {
				takenIn = time.Now()
			}
			if time.Since(takenIn) < taintGrace {
				return false, "injected event taken in: " + why
			}
		}
		injectEvent(t, "xid "+uuid+" 48")
		injected, takenIn = true, time.Time{}
		return false, "event injected"
	})
}

// injectionPending tells whether the plugin has yet to take in the last
// injected event (the injection file is still there).
func injectionPending(t *testing.T) bool {
	t.Helper()
	_, err := os.Stat(injectionFile())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestUnhealthyGPUIsTaintedAndNotScheduled injects a critical XID for gpu-7:
// its device gets a taint in the ResourceSlice, a pod that can only use
// gpu-7 stays pending, and once the GPU recovers (hack/e2e.sh sets
// health.recoveryPeriod) the taint goes and the pod runs.
func TestUnhealthyGPUIsTaintedAndNotScheduled(t *testing.T) {
	draMode(t)
	c := client(t)
	ctx := context.Background()
	const device = "gpu-7"
	uuid := deviceAttr(t, c, device, resourceslice.AttrUUID)
	t.Cleanup(func() {
		kubectl(t, "delete", "ns", "gpudra-demo-health", "--wait=true", "--timeout=2m", "--ignore-not-found")
	})

	taint := func() *resourceapi.DeviceTaint {
		d := publishedDevice(t, c, device)
		if d == nil || len(d.Taints) == 0 {
			return nil
		}
		return &d.Taints[0]
	}
	injectXIDUntil(t, uuid, "taint on "+device, func() (bool, string) { return taint() != nil, "no taint yet" })
	tt := taint()
	if tt.Key != driverName+"/unhealthy" || tt.Value != "xid-48" || tt.Effect != resourceapi.DeviceTaintEffectNoSchedule {
		t.Errorf("taint = %+v, want %s/unhealthy=xid-48:NoSchedule", tt, driverName)
	}
	for _, other := range []string{"gpu-0", "gpu-6"} {
		if d := publishedDevice(t, c, other); d == nil || len(d.Taints) != 0 {
			t.Errorf("%s tainted too: %+v", other, d)
		}
	}

	applyPodOnGPU(t, "gpudra-demo-health", "gpu7", "on-gpu7", uuid)
	// Not scheduled while the only device it can use is tainted.
	eventually(t, time.Minute, "FailedScheduling of the pod", func() (bool, string) {
		p, err := c.CoreV1().Pods("gpudra-demo-health").Get(ctx, "on-gpu7", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Spec.NodeName != "" {
			if taint() != nil {
				t.Fatalf("pod scheduled onto tainted %s", device)
			}
			return true, "" // already recovered: the assertion below covers it
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
				return true, ""
			}
		}
		return false, "pod not marked unschedulable yet"
	})
	// Recovery: the taint goes and the pod runs on gpu-7.
	eventually(t, 3*time.Minute, "recovery: taint gone and pod Running", func() (bool, string) {
		if tt := taint(); tt != nil {
			return false, fmt.Sprintf("still tainted %+v", tt)
		}
		p, err := c.CoreV1().Pods("gpudra-demo-health").Get(ctx, "on-gpu7", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, "pod " + string(p.Status.Phase)
	})
}

// TestMIGDevices runs when hack/e2e.sh has switched the mock machine to
// dgxh100-mig: GPUs in MIG mode are published only as MIG devices, and a pod
// asking for a 1g.10gb MIG device sees its parent GPU and the MIG capability
// device nodes.
func TestMIGDevices(t *testing.T) {
	if os.Getenv("GPUDRA_E2E_MODE") != "mig" {
		t.Skip("the mock machine is not a MIG variant (GPUDRA_E2E_MODE=mig)")
	}
	c := client(t)
	ctx := context.Background()
	eventually(t, 2*time.Minute, "MIG devices published", func() (bool, string) {
		return publishedDevice(t, c, "gpu-0") == nil && publishedDevice(t, c, "gpu-2") != nil && countMIG(t, c) > 0,
			fmt.Sprintf("%d MIG devices; gpu-0 published whole: %v", countMIG(t, c), publishedDevice(t, c, "gpu-0") != nil)
	})
	t.Cleanup(func() {
		kubectl(t, "delete", "ns", "gpudra-demo", "--wait=true", "--timeout=2m", "--ignore-not-found")
	})
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "00-namespace.yaml"))
	kubectl(t, "apply", "-f", filepath.Join(repoRoot, "demo", "12-mig.yaml"))
	eventually(t, 2*time.Minute, "MIG pod Running", func() (bool, string) {
		p, err := c.CoreV1().Pods("gpudra-demo").Get(ctx, "mig", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, "pod " + string(p.Status.Phase)
	})
	eventually(t, 30*time.Second, "MIG pod's view", func() (bool, string) {
		logs := kubectl(t, "-n", "gpudra-demo", "logs", "mig")
		return strings.Contains(logs, "GPU-VIEW-END"), logs
	})
	logs := kubectl(t, "-n", "gpudra-demo", "logs", "mig")
	// The demo lists /dev/nvidia-caps twice (the glob /dev/nvidia* has it too).
	capNodes := map[string]bool{}
	for _, line := range strings.Split(logs, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "c") && strings.HasPrefix(f[len(f)-1], "nvidia-cap") {
			capNodes[f[len(f)-1]] = true
		}
	}
	if caps := len(capNodes); caps != 2 {
		t.Errorf("MIG pod sees %d MIG capability device nodes, want 2 (GPU instance and compute instance):\n%s", caps, logs)
	}
	if !strings.Contains(logs, "/dev/nvidia0\n") && !strings.Contains(logs, "/dev/nvidia1\n") {
		t.Errorf("MIG pod does not see its parent GPU:\n%s", logs)
	}
	// nvidia-smi -L: the parent GPU, and under it the one MIG device.
	if gpus, migs := smiGPUs(t, logs), smiMIG.FindAllString(logs, -1); len(gpus) != 1 || len(migs) != 1 {
		t.Errorf("MIG pod's nvidia-smi -L lists GPUs %v and MIG devices %q, want its parent GPU and one 1g.10gb MIG device:\n%s", gpus, migs, logs)
	}
}

// smiMIG is a MIG device line of `nvidia-smi -L` for the demo's 1g.10gb device.
var smiMIG = regexp.MustCompile(`(?m)^  MIG 1g\.10gb +Device +0: \(UUID: MIG-[0-9a-f-]+\)$`)

func countMIG(t *testing.T, c kubernetes.Interface) int {
	t.Helper()
	slices, err := c.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range slices.Items {
		for _, d := range s.Spec.Devices {
			if ptr.Deref(d.Attributes[resourceslice.AttrType].StringValue, "") == "mig" {
				n++
			}
		}
	}
	return n
}

// applyPodOnGPU creates namespace ns (if missing), a ResourceClaim named
// claim that only the GPU with this UUID satisfies, and a pod named pod
// that uses it and lists its device nodes.
func applyPodOnGPU(t *testing.T, ns, claim, pod, uuid string) {
	t.Helper()
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  devices:
    requests:
    - name: gpu
      exactly:
        deviceClassName: gpu.nvidia.com
        selectors:
        - cel: {expression: 'device.attributes["%[4]s"].uuid == "%[5]s"'}
---
apiVersion: v1
kind: Pod
metadata: {name: %[3]s, namespace: %[1]s}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: ctr
    image: localhost/e2e/busybox:1
    imagePullPolicy: Never
    command: ["sh", "-c", "ls /dev/nvidia*; sleep 3600"]
    resources: {claims: [{name: gpu}]}
  resourceClaims: [{name: gpu, resourceClaimName: %[2]s}]
`, ns, claim, pod, driverName, uuid)
	f := filepath.Join(t.TempDir(), pod+".yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl(t, "apply", "-f", f)
}

//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/client-go/kubernetes"
	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/inventory"
	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// The "real NVML" phase of hack/e2e.sh (GPUDRA_E2E_MODE=realnvml): the chart
// runs without mock mode, NVML_BACKEND=real, with nvidiaDriverRoot at a fake
// driver root (test/e2e/fakedriverroot) whose libnvidia-ml.so.1 is the mock
// NVML library of test/mocknvml. Everything the plugins learn about the GPUs
// comes through the NVML C interface; the library's knobs reach it through
// the chart's extraEnv. These variables say what hack/e2e.sh set up.
var (
	realDriverRoot = envOr("GPUDRA_E2E_DRIVER_ROOT", "/var/lib/gpudra/realnvml/root")
	realNVMLSeed   = envOr("GPUDRA_E2E_NVML_SEED", "e2e-realnvml")
	realNVMLEvents = envOr("GPUDRA_E2E_NVML_EVENTS_FILE", "/var/lib/gpudra/realnvml/inject-events")
)

func realNVMLMode(t *testing.T) {
	t.Helper()
	if os.Getenv("GPUDRA_E2E_MODE") != "realnvml" {
		t.Skip("the chart is not on the fake driver root with the mock NVML library (GPUDRA_E2E_MODE)")
	}
}

// realPluginPod waits until the one kubelet plugin pod is a ready pod of the
// real backend on the fake driver root (the pods of mock mode gone) and
// returns it.
func realPluginPod(t *testing.T, c kubernetes.Interface) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	eventually(t, 2*time.Minute, "one ready kubelet plugin pod with NVML_BACKEND=real", func() (bool, string) {
		pods := pluginPods(t, c)
		if len(pods) != 1 {
			return false, fmt.Sprintf("%d plugin pods", len(pods))
		}
		pod = pods[0]
		env := containerEnv(pod, "plugin")
		if env["NVML_BACKEND"] != "real" || env["HOST_DRIVER_ROOT"] != realDriverRoot {
			return false, fmt.Sprintf("plugin pod %s: NVML_BACKEND=%q HOST_DRIVER_ROOT=%q", pod.Name, env["NVML_BACKEND"], env["HOST_DRIVER_ROOT"])
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		return false, "plugin pod " + pod.Name + " not ready"
	})
	return pod
}

// containerEnv returns the literal env values of a container of pod.
func containerEnv(pod corev1.Pod, container string) map[string]string {
	out := map[string]string{}
	for _, ctr := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if ctr.Name == container {
			for _, e := range ctr.Env {
				out[e.Name] = e.Value
			}
		}
	}
	return out
}

// realInventory is what the library answers: the mock machine with the
// seed that extraEnv gives it.
func realInventory(t *testing.T) *inventory.Inventory {
	t.Helper()
	lib, err := mockmachine.New(mockMachine, realNVMLSeed)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Discover(lib)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// TestRealNVMLSlicesComeFromTheLibrary: the published GPUs are the
// library's, with the UUIDs of its seed, not those the mock backend gives
// the node (seeded with the node name).
func TestRealNVMLSlicesComeFromTheLibrary(t *testing.T) {
	realNVMLMode(t)
	c := client(t)
	realPluginPod(t, c)
	node := nodeName(t, c)
	want := expectSlicesOf(t, mockMachine, realNVMLSeed, node)
	mockLib, err := mockmachine.New(mockMachine, node)
	if err != nil {
		t.Fatal(err)
	}
	mockInv, err := inventory.Discover(mockLib)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Devices) == 0 || want.Devices[0].UUID == mockInv.Devices[0].UUID {
		t.Fatalf("the library's seed %q gives the UUIDs of the mock backend: the test cannot tell them apart", realNVMLSeed)
	}
}

// TestRealNVMLDoctorPassed: the doctor init container checked the node
// through the library (backend real) and found the driver's files and
// device nodes under the driver root.
func TestRealNVMLDoctorPassed(t *testing.T) {
	realNVMLMode(t)
	realPluginPod(t, client(t))
	logs := expectDoctorPassed(t)
	inv := realInventory(t)
	for _, want := range []string{
		fmt.Sprintf("backend %q: driver %s", "real", inv.DriverVersion),
		fmt.Sprintf("%d GPUs", len(inv.Devices)),
		"libraries of driver " + inv.DriverVersion + " in /driver-root/",
		"device nodes present under /driver-root/dev",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("doctor report lacks %q:\n%s", want, logs)
		}
	}
}

// TestRealNVMLCDIGenerate runs `gpudra cdi generate` in the plugin
// container, with its environment (the library's event injection left out,
// so that it takes no command meant for the plugin): the host-wide spec
// lists every GPU by index and UUID, with device nodes and libraries at
// their host paths under the driver root.
func TestRealNVMLCDIGenerate(t *testing.T) {
	realNVMLMode(t)
	c := client(t)
	pod := realPluginPod(t, c)
	cmd := exec.Command("kubectl", "-n", pod.Namespace, "exec", pod.Name, "-c", "plugin", "--",
		"env", "-u", "GPUDRA_MOCK_NVML_EVENTS_FILE", "GPUDRA_MOCK_NVML_LOG=off",
		"/usr/bin/gpudra", "cdi", "generate", "--format", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gpudra cdi generate in %s: %v\n%s%s", pod.Name, err, out, stderr.String())
	}
	var spec specs.Spec
	if err := json.Unmarshal(out, &spec); err != nil {
		t.Fatalf("gpudra cdi generate: %v:\n%s%s", err, out, stderr.String())
	}
	if spec.Kind != "nvidia.com/gpu" {
		t.Errorf("spec kind %q, want nvidia.com/gpu", spec.Kind)
	}
	devs := map[string]specs.Device{}
	for _, d := range spec.Devices {
		devs[d.Name] = d
	}
	inv := realInventory(t)
	for _, g := range inv.Devices {
		for _, name := range []string{strconv.Itoa(g.Index), g.UUID} {
			d, ok := devs[name]
			if !ok {
				t.Errorf("spec lacks device %s (GPU %d)", name, g.Index)
				continue
			}
			wantNode := filepath.Join(realDriverRoot, "dev", fmt.Sprintf("nvidia%d", g.Minor))
			if len(d.ContainerEdits.DeviceNodes) == 0 || d.ContainerEdits.DeviceNodes[0].HostPath != wantNode {
				t.Errorf("device %s: device nodes %+v, want host path %s", name, d.ContainerEdits.DeviceNodes, wantNode)
			}
		}
	}
	if _, ok := devs["all"]; !ok {
		t.Error("spec lacks device all")
	}
	if got, want := len(spec.Devices), 2*len(inv.Devices)+1; got != want {
		t.Errorf("spec has %d devices, want %d (index and UUID of %d GPUs, and all)", got, want, len(inv.Devices))
	}
	lib := false
	for _, m := range spec.ContainerEdits.Mounts {
		lib = lib || m.HostPath == filepath.Join(realDriverRoot, mockmachine.LibDir, "libnvidia-ml.so."+inv.DriverVersion)
	}
	if !lib {
		t.Errorf("the spec does not mount the driver root's libnvidia-ml.so.%s: %+v", inv.DriverVersion, spec.ContainerEdits.Mounts)
	}
}

// TestRealNVMLDemoPodsGetTheirGPUs runs the first demo wave (one GPU, two
// GPUs, a claim shared by containers, a claim shared by pods) on the GPUs of
// the library.
func TestRealNVMLDemoPodsGetTheirGPUs(t *testing.T) {
	realNVMLMode(t)
	c := client(t)
	realPluginPod(t, c)
	t.Cleanup(func() {
		kubectl(t, "delete", "ns", "gpudra-demo", "gpudra-demo-admin", "--wait=true", "--timeout=2m", "--ignore-not-found")
	})
	views := runWave(t, c, "1", "01", "02", "03", "04")
	if got := len(views["two-gpus/ctr"].minors); got != 2 {
		t.Errorf("two-gpus sees %d GPUs, want 2", got)
	}
	if a, b := views["shared-by-pods-0/ctr"].minors, views["shared-by-pods-1/ctr"].minors; fmt.Sprint(a) != fmt.Sprint(b) || len(a) != 1 {
		t.Errorf("pods sharing a claim see %v and %v, want the same one GPU", a, b)
	}
	deleteWave(t, c, "1")
}

// TestRealNVMLXIDTaintsItsGPU writes a critical XID for GPU 3 to the
// library's event file: the health monitor, waiting in nvmlEventSetWait of
// the library, gets it and the plugin taints that GPU, and only it.
func TestRealNVMLXIDTaintsItsGPU(t *testing.T) {
	realNVMLMode(t)
	c := client(t)
	realPluginPod(t, c)
	inv := realInventory(t)
	g := inv.Devices[3]
	device := fmt.Sprintf("gpu-%d", g.Index)
	taint := func() *resourceapi.DeviceTaint {
		d := publishedDevice(t, c, device)
		if d == nil || len(d.Taints) == 0 {
			return nil
		}
		return &d.Taints[0]
	}
	// As in TestUnhealthyGPUIsTaintedAndNotScheduled: events that come
	// before the monitor listens are dropped, so inject again (after the
	// library has taken the file in and a grace period) until it lands.
	const taintGrace = 5 * time.Second
	injected := false
	var takenIn time.Time
	eventually(t, time.Minute, "taint on "+device, func() (bool, string) {
		if taint() != nil {
			return true, ""
		}
		if injected {
			_, err := os.Stat(realNVMLEvents)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			if err == nil {
				return false, "the library has not taken the injected event in yet"
			}
			if takenIn.IsZero() {
				takenIn = time.Now()
			}
			if time.Since(takenIn) < taintGrace {
				return false, "injected event taken in, no taint yet"
			}
		}
		tmp := realNVMLEvents + ".tmp"
		if err := os.WriteFile(tmp, []byte("xid "+g.UUID+" 48\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, realNVMLEvents); err != nil {
			t.Fatal(err)
		}
		injected, takenIn = true, time.Time{}
		return false, "no taint yet (event injected)"
	})
	tt := taint()
	if tt.Key != driverName+"/unhealthy" || tt.Value != "xid-48" || tt.Effect != resourceapi.DeviceTaintEffectNoSchedule {
		t.Errorf("taint = %+v, want %s/unhealthy=xid-48:NoSchedule", tt, driverName)
	}
	for _, other := range inv.Devices {
		if other.Index == g.Index {
			continue
		}
		name := fmt.Sprintf("gpu-%d", other.Index)
		if d := publishedDevice(t, c, name); d == nil || len(d.Taints) != 0 {
			t.Errorf("%s tainted too: %+v", name, d)
		}
	}
}

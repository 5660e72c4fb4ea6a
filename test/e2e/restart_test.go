//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// restartKubelet restarts the local cluster's kubelet and returns when the
// node is Ready again.
func restartKubelet(t *testing.T) {
	t.Helper()
	out, err := exec.Command(filepath.Join(repoRoot, "hack", "local-cluster.sh"), "restart-kubelet").CombinedOutput()
	if err != nil {
		t.Fatalf("restarting the kubelet: %v\n%s", err, out)
	}
}

// TestDRAPluginServesAfterKubeletRestart: the kubelet forgets its plugins
// when it restarts; the DRA plugin's registration socket makes the new
// kubelet register it again, and a pod's claim is prepared as before.
func TestDRAPluginServesAfterKubeletRestart(t *testing.T) {
	draMode(t)
	c := client(t)
	t.Cleanup(func() {
		_ = exec.Command("kubectl", "delete", "ns", "gpudra-demo", "--wait=true", "--timeout=2m").Run()
	})
	restartKubelet(t)
	views := runWave(t, c, "1", "01")
	for name, v := range views {
		if len(v.minors) != 1 {
			t.Errorf("%s sees GPUs %v after the kubelet restart, want one", name, v.minors)
		}
	}
	deleteWave(t, c, "1")
}

// TestDevicePluginReRegistersAfterKubeletRestart: in device-plugin mode the
// plugin notices the kubelet's new registration socket and registers again
// within 5 s of it.
func TestDevicePluginReRegistersAfterKubeletRestart(t *testing.T) {
	if os.Getenv("GPUDRA_E2E_MODE") != "device-plugin" {
		t.Skip("the chart is not in device-plugin mode (GPUDRA_E2E_MODE)")
	}
	restartKubelet(t)
	sock := filepath.Join(envOr("GPUDRA_E2E_KUBELET_DIR", "/var/lib/kubelet"), "device-plugins", "kubelet.sock")
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	created := st.ModTime()
	var registered time.Time
	eventually(t, time.Minute, "a registration after the kubelet restart", func() (bool, string) {
		// The kubelet serves logs again a moment after it is back.
		out, err := exec.Command("kubectl", "-n", releaseNamespace, "logs", "-l", "app.kubernetes.io/component=device-plugin", "--timestamps", "--tail=-1").CombinedOutput()
		if err != nil {
			return false, fmt.Sprintf("kubectl logs: %v: %s", err, out)
		}
		s := bufio.NewScanner(strings.NewReader(string(out)))
		for s.Scan() {
			ts, line, ok := strings.Cut(s.Text(), " ")
			if !ok || !strings.Contains(line, "Registered with the kubelet") {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, ts)
			if err == nil && !at.Before(created.Add(-time.Second)) {
				registered = at
				return true, ""
			}
		}
		return false, "no registration logged after " + created.Format(time.RFC3339Nano)
	})
	if d := registered.Sub(created); d > 5*time.Second {
		t.Errorf("registered %v after the kubelet created %s, want within 5s", d, sock)
	} else {
		t.Logf("registered %v after the kubelet created %s", d.Round(time.Millisecond), sock)
	}
}

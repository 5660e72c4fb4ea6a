package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestMockDaemonWritesLimitsAndCleansUpOnSIGTERM(t *testing.T) {
	pipeDir, logDir := t.TempDir(), t.TempDir()
	t.Setenv("CUDA_MPS_PIPE_DIRECTORY", pipeDir)
	t.Setenv("CUDA_MPS_LOG_DIRECTORY", logDir)
	t.Setenv("CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b")
	// A stale control file of an earlier run is replaced by a pipe.
	if err := os.WriteFile(filepath.Join(pipeDir, "control"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"--active-thread-percentage=40", "--pinned-device-mem-limit=GPU-b=2048M", "--multiuser"}, stop)
	}()

	ready := filepath.Join(logDir, "ready")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ready file not written within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fi, err := os.Lstat(filepath.Join(pipeDir, "control"))
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("control is not a named pipe: %v %v", fi, err)
	}
	b, err := os.ReadFile(filepath.Join(logDir, "limits.json"))
	if err != nil {
		t.Fatal(err)
	}
	var l Limits
	if err := json.Unmarshal(b, &l); err != nil {
		t.Fatal(err)
	}
	if l.DefaultActiveThreadPercentage == nil || *l.DefaultActiveThreadPercentage != 40 ||
		l.DefaultPinnedDeviceMemoryLimits["GPU-b"] != "2048M" || len(l.DefaultPinnedDeviceMemoryLimits) != 1 ||
		len(l.VisibleDevices) != 2 || l.VisibleDevices[1] != "GPU-b" || !l.MultiUser {
		t.Errorf("limits.json = %s", b)
	}

	stop <- syscall.SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("did not stop within 20s of SIGTERM")
	}
	for _, p := range []string{ready, filepath.Join(pipeDir, "control")} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind after SIGTERM (%v)", p, err)
		}
	}
}

func TestMockDaemonRejectsBadInput(t *testing.T) {
	t.Setenv("CUDA_MPS_PIPE_DIRECTORY", "")
	if err := run(nil, nil); err == nil {
		t.Error("no error without CUDA_MPS_PIPE_DIRECTORY")
	}
	if err := run([]string{"--pinned-device-mem-limit=GPU-b"}, nil); err == nil {
		t.Error("no error for a limit without a value")
	}
}

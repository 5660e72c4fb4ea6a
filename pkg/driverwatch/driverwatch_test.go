package driverwatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// install lays out libnvidia-ml.so.1 -> libnvidia-ml.so.<version> and the
// kernel module's version file, as a driver installation does.
func install(t *testing.T, root, proc, version string) {
	t.Helper()
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	if err := os.MkdirAll(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lib, "libnvidia-ml.so."+version), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(lib, "libnvidia-ml.so.1")
	_ = os.Remove(link)
	if err := os.Symlink("libnvidia-ml.so."+version, link); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(proc, "driver/nvidia"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proc, "driver/nvidia/version"), []byte("NVRM version: NVIDIA UNIX Kernel Module  "+version+"\nGCC version\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFingerprintFollowsTheDriverVersion(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	install(t, root, proc, "550.54.15")
	a := Fingerprint(root, proc)
	if a != Fingerprint(root, proc) {
		t.Fatal("fingerprint not stable")
	}
	install(t, root, proc, "560.28.03")
	if b := Fingerprint(root, proc); b == a {
		t.Errorf("fingerprint %q did not change with the driver", b)
	}
	if Fingerprint(t.TempDir(), t.TempDir()) != "|" {
		t.Error("no driver: want an empty fingerprint")
	}
}

func TestWatchReportsAnUpgradeOnce(t *testing.T) {
	root, proc := t.TempDir(), t.TempDir()
	install(t, root, proc, "550.54.15")
	changed := make(chan [2]string, 2)
	done := make(chan struct{})
	go func() {
		Watch(context.Background(), root, proc, 10*time.Millisecond, func(b, a string) { changed <- [2]string{b, a} })
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case c := <-changed:
		t.Fatalf("change reported without a change: %v", c)
	default:
	}
	install(t, root, proc, "560.28.03")
	select {
	case c := <-changed:
		if c[0] == c[1] {
			t.Errorf("before and after equal: %v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upgrade not noticed")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after reporting")
	}
}

func TestWatchStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Watch(ctx, t.TempDir(), t.TempDir(), time.Hour, func(string, string) {}); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch ignored the context")
	}
}

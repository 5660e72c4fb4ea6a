package driverwatch

import (
	"context"
	"fmt"
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan [2]string, 2)
	taken := make(chan string)
	done := make(chan struct{})
	go func() {
		WatchNotify(ctx, root, proc, 10*time.Millisecond, func(b, a string) { changed <- [2]string{b, a} }, func(f string) {
			select {
			case taken <- f:
			case <-ctx.Done():
			}
		})
		close(done)
	}()
	timeout := time.After(10 * time.Second)
	next := func(what string) string {
		t.Helper()
		select {
		case f := <-taken:
			return f
		case <-timeout:
			t.Fatalf("no %s", what)
		}
		return ""
	}
	first := next("first fingerprint")
	if want := Fingerprint(root, proc); first != want {
		t.Fatalf("first fingerprint %q, want %q", first, want)
	}
	// Polls without a change report nothing.
	for i := range 5 {
		if f := next(fmt.Sprintf("poll %d", i+1)); f != first {
			t.Fatalf("poll %d took %q, want the first fingerprint %q", i+1, f, first)
		}
	}
	select {
	case c := <-changed:
		t.Fatalf("change reported without a change: %v", c)
	default:
	}
	install(t, root, proc, "560.28.03")
	for reported := false; !reported; {
		select {
		case c := <-changed:
			if c[0] == c[1] || c[0] != first {
				t.Errorf("before %q, after %q: want before the first fingerprint and after another", c[0], c[1])
			}
			reported = true
		case <-taken: // a poll before the upgrade was complete
		case <-timeout:
			t.Fatal("upgrade not noticed")
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after reporting")
	}
	select {
	case c := <-changed:
		t.Errorf("change reported twice: %v", c)
	default:
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

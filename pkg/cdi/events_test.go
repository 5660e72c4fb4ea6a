package cdi

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"tags.cncf.io/container-device-interface/specs-go"
)

// dirEvents watches a spec directory as a container runtime's CDI cache
// does (fsnotify, not recursive) and counts the events of one operation:
// the events up to a sentinel file created after it, which inotify
// delivers in order.
type dirEvents struct {
	t        *testing.T
	dir      string
	w        *fsnotify.Watcher
	serial   int
	deadline time.Duration
}

func watchDir(t *testing.T, dir string) *dirEvents {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	return &dirEvents{t: t, dir: dir, w: w, deadline: 10 * time.Second}
}

// during runs op and returns the events it caused in the directory.
func (d *dirEvents) during(op func()) []fsnotify.Event {
	d.t.Helper()
	op()
	d.serial++
	sentinel := filepath.Join(d.dir, "sentinel-"+string(rune('a'+d.serial%26)))
	if err := os.WriteFile(sentinel, nil, 0o600); err != nil {
		d.t.Fatal(err)
	}
	var got []fsnotify.Event
	timeout := time.After(d.deadline)
	for {
		select {
		case ev := <-d.w.Events:
			if ev.Name == sentinel {
				// Its removal is an event of its own: drain it too.
				if err := os.Remove(sentinel); err != nil {
					d.t.Fatal(err)
				}
				d.drain(sentinel, timeout)
				return got
			}
			got = append(got, ev)
		case err := <-d.w.Errors:
			d.t.Fatal(err)
		case <-timeout:
			d.t.Fatalf("no event of the sentinel file within %v", d.deadline)
		}
	}
}

func (d *dirEvents) drain(sentinel string, timeout <-chan time.Time) {
	for {
		select {
		case ev := <-d.w.Events:
			if ev.Name == sentinel && ev.Op.Has(fsnotify.Remove) {
				return
			}
		case <-timeout:
			d.t.Fatalf("no removal event of the sentinel file")
		}
	}
}

// TestSpecWritesCauseOneEventEach: each write of a spec is one event in
// the spec directory, the rename into place (the temporary file is staged
// where the directory's watch does not see it), each removal one event,
// and a rewrite of an unchanged driver-wide or device spec none.
func TestSpecWritesCauseOneEventEach(t *testing.T) {
	dir := t.TempDir()
	n := NewNaming("gpu.nvidia.com")
	sd, err := NewSpecDir(dir, n)
	if err != nil {
		t.Fatal(err)
	}
	ev := watchDir(t, dir)
	claim, err := ClaimSpecUsingDriverSpec(n, "uid-1", specs.ContainerEdits{}, []ClaimDevice{{Name: "gpu-0", Edits: specs.ContainerEdits{Env: []string{"A=1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	driver, err := DriverSpec(n, specs.ContainerEdits{DeviceNodes: []*specs.DeviceNode{{Path: "/dev/nvidiactl"}}})
	if err != nil {
		t.Fatal(err)
	}
	devices, err := DeviceSpec(n, []ClaimDevice{{Name: "gpu-0", Edits: specs.ContainerEdits{DeviceNodes: []*specs.DeviceNode{{Path: "/dev/nvidia0"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		op   func() error
		want int
	}{
		{"claim spec written", func() error { return sd.Write("uid-1", claim) }, 1},
		{"claim spec rewritten", func() error { return sd.Write("uid-1", claim) }, 1},
		{"claim spec removed", func() error { return sd.Remove("uid-1") }, 1},
		{"missing claim spec removed", func() error { return sd.Remove("uid-1") }, 0},
		{"driver spec written", func() error { _, err := sd.WriteDriverSpec(driver); return err }, 1},
		{"unchanged driver spec written", func() error { _, err := sd.WriteDriverSpec(driver); return err }, 0},
		{"device spec written", func() error { _, err := sd.WriteDeviceSpec(devices); return err }, 1},
		{"unchanged device spec written", func() error { _, err := sd.WriteDeviceSpec(devices); return err }, 0},
		{"existing device spec ensured", func() error { return sd.EnsureDeviceSpec(devices) }, 0},
		{"device spec of no devices", func() error { _, err := sd.WriteDeviceSpec(nil); return err }, 1},
	} {
		var opErr error
		got := ev.during(func() { opErr = tc.op() })
		if opErr != nil {
			t.Fatalf("%s: %v", tc.name, opErr)
		}
		if len(got) != tc.want {
			t.Errorf("%s: %d events %v, want %d", tc.name, len(got), got, tc.want)
		}
	}
	// The staging directory is empty after the writes.
	entries, err := os.ReadDir(filepath.Join(dir, n.StagingDirName()))
	if err != nil || len(entries) != 0 {
		t.Errorf("staging directory: %v %v, want empty", entries, err)
	}
}

// TestSpecWritesRecreateTheStagingDirectory: a staging directory that went
// missing (the spec directory emptied by hand) does not fail later writes.
func TestSpecWritesRecreateTheStagingDirectory(t *testing.T) {
	dir := t.TempDir()
	n := NewNaming("gpu.nvidia.com")
	sd, err := NewSpecDir(dir, n)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, n.StagingDirName())); err != nil {
		t.Fatal(err)
	}
	claim, err := ClaimSpecUsingDriverSpec(n, "uid-1", specs.ContainerEdits{}, []ClaimDevice{{Name: "gpu-0", Edits: specs.ContainerEdits{Env: []string{"A=1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.Write("uid-1", claim); err != nil {
		t.Fatal(err)
	}
	if ok, err := sd.Exists("uid-1"); !ok || err != nil {
		t.Errorf("claim spec after the write: %v %v", ok, err)
	}
}

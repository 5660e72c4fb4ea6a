package durable

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// listDir returns the names of the entries in dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func assertNoTemps(t *testing.T, dir string) {
	t.Helper()
	for _, n := range listDir(t, dir) {
		if IsTemp(n) || strings.HasSuffix(n, tempSuffix) {
			t.Errorf("temporary file left behind in %s: %s", dir, n)
		}
	}
}

func TestWriteFileContentAndPerm(t *testing.T) {
	// Not parallel: changes the process umask.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	dir := t.TempDir()
	for _, perm := range []os.FileMode{0o644, 0o600, 0o640, 0o444} {
		p := filepath.Join(dir, "f-"+perm.String())
		data := []byte("content " + perm.String())
		if err := WriteFile(p, data, perm); err != nil {
			t.Fatalf("WriteFile(%s): %v", perm, err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("content = %q, want %q", got, data)
		}
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != perm {
			t.Errorf("perm = %v, want %v (umask must not apply)", info.Mode().Perm(), perm)
		}
	}
	assertNoTemps(t, dir)
}

func TestWriteFileEmptyAndRelative(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := WriteFile("empty", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "empty"))
	if err != nil || len(got) != 0 {
		t.Fatalf("ReadFile = %q, %v; want empty", got, err)
	}
	assertNoTemps(t, dir)
}

func TestWriteFileOverwrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "spec.json")
	if err := WriteFile(p, []byte("old content, longer than the new one"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "new" {
		t.Errorf("content = %q, want %q", got, "new")
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("perm = %v, want 0600", after.Mode().Perm())
	}
	// Atomic replacement: the path now names a different inode; the old
	// file was never truncated in place.
	if os.SameFile(before, after) {
		t.Error("file was rewritten in place, want a rename of a new file")
	}
	if names := listDir(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v, want only spec.json", names)
	}
}

// TestWriteFileConcurrentReaders checks that a reader never observes a
// partial file while writers replace it.
func TestWriteFileConcurrentReaders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	a := bytes.Repeat([]byte("a"), 64<<10)
	b := bytes.Repeat([]byte("b"), 64<<10)
	if err := WriteFile(p, a, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := os.ReadFile(p)
			if err != nil {
				readErr = err
				return
			}
			if !bytes.Equal(got, a) && !bytes.Equal(got, b) {
				readErr = errors.New("reader saw a partial or mixed file")
				return
			}
		}
	}()
	for i := range 20 {
		data := a
		if i%2 == 0 {
			data = b
		}
		if err := WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	assertNoTemps(t, dir)
}

func TestWriteFileFailures(t *testing.T) {
	t.Run("parent is a regular file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		parent := filepath.Join(dir, "regular")
		if err := os.WriteFile(parent, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(parent, "f")
		err := WriteFile(p, []byte("data"), 0o644)
		if err == nil {
			t.Fatal("WriteFile succeeded, want an error")
		}
		if !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("error %v does not wrap ENOTDIR", err)
		}
		if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "create temporary file") {
			t.Errorf("error %q does not name the path and the step", err)
		}
		if names := listDir(t, dir); len(names) != 1 {
			t.Errorf("directory holds %v, want only the regular file", names)
		}
	})

	t.Run("rename fails onto a non-empty directory", func(t *testing.T) {
		// Fails after the temporary file was created and written: the
		// temporary file must be removed.
		t.Parallel()
		dir := t.TempDir()
		p := filepath.Join(dir, "target")
		if err := os.MkdirAll(filepath.Join(p, "child"), 0o755); err != nil {
			t.Fatal(err)
		}
		err := WriteFile(p, []byte("data"), 0o644)
		if err == nil {
			t.Fatal("WriteFile succeeded, want an error")
		}
		if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "rename") {
			t.Errorf("error %q does not name the path and the step", err)
		}
		assertNoTemps(t, dir)
		if names := listDir(t, dir); len(names) != 1 {
			t.Errorf("directory holds %v, want only the target directory", names)
		}
	})

	t.Run("read-only directory", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores directory permissions")
		}
		t.Parallel()
		dir := t.TempDir()
		p := filepath.Join(dir, "f")
		if err := WriteFile(p, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
		err := WriteFile(p, []byte("new"), 0o644)
		if !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("WriteFile error = %v, want a permission error", err)
		}
		got, _ := os.ReadFile(p)
		if string(got) != "old" {
			t.Errorf("content = %q, want the old content", got)
		}
		assertNoTemps(t, dir)
	})

	t.Run("path names a directory", func(t *testing.T) {
		t.Parallel()
		if err := WriteFile(t.TempDir()+"/", []byte("x"), 0o644); err == nil {
			t.Fatal("WriteFile succeeded, want an error")
		}
	})
}

func TestTempNameIsRecognized(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, base := range []string{"a", "claim.json", ".hidden", strings.Repeat("x", 250)} {
		f, p, err := createTemp(dir, base)
		if err != nil {
			t.Fatalf("createTemp(%q): %v", base, err)
		}
		_ = f.Close()
		name := filepath.Base(p)
		if !IsTemp(name) {
			t.Errorf("IsTemp(%q) = false for a name createTemp made", name)
		}
		if len(name) > 255 {
			t.Errorf("temporary name is %d bytes, over NAME_MAX", len(name))
		}
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("temporary file mode = %v, want 0600", info.Mode().Perm())
		}
	}
}

func TestIsTemp(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		".spec.json.0123456789abcdef.tmp": true,
		"..x.ffffffffffffffff.tmp":        true,
		".a.0000000000000000.tmp":         true,
		"spec.json.0123456789abcdef.tmp":  false, // no leading dot
		"..0123456789abcdef.tmp":          false, // empty base
		".spec.json.0123456789ABCDEF.tmp": false, // upper-case hex
		".spec.json.0123456789abcdeg.tmp": false, // not hex
		".spec.json.0123456789abcde.tmp":  false, // 15 digits
		".spec.json-0123456789abcdef.tmp": false, // no dot before digits
		".spec.json.0123456789abcdef":     false, // no suffix
		".foo.tmp":                        false,
		"claim.json":                      false,
		"":                                false,
	} {
		if got := IsTemp(name); got != want {
			t.Errorf("IsTemp(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Remove(p); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still exists after Remove: %v", err)
	}
	if err := Remove(p); err != nil {
		t.Fatalf("second Remove: %v, want nil (idempotent)", err)
	}
	if err := Remove(filepath.Join(dir, "missing-dir", "f")); err != nil {
		t.Fatalf("Remove in a missing directory: %v, want nil", err)
	}
	// A non-empty directory cannot be removed: the error names the path.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Remove(sub); err == nil || !strings.Contains(err.Error(), sub) {
		t.Fatalf("Remove(non-empty dir) = %v, want an error naming it", err)
	}
}

func TestSyncDir(t *testing.T) {
	t.Parallel()
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("SyncDir(missing) = %v, want ErrNotExist", err)
	}
}

func TestRemoveStaleTemps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := time.Now().Add(-time.Hour)
	staleA := write(".claim-a.json.0123456789abcdef.tmp")
	staleB := write(".spec.yaml.fedcba9876543210.tmp")
	fresh := write(".claim-b.json.00000000000000aa.tmp")
	keep := []string{
		"claim-a.json",
		".claim-a.json.tmp",              // not our pattern
		".other.tmp",                     // not our pattern
		"notes.0123456789abcdef.tmp",     // no leading dot
		".x.0123456789abcdef.tmp.backup", // wrong suffix
	}
	for _, n := range keep {
		write(n)
	}
	// A directory with a temporary-looking name is not touched.
	if err := os.Mkdir(filepath.Join(dir, ".d.0123456789abcdef.tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{staleA, staleB, filepath.Join(dir, keep[0])} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}

	n, err := RemoveStaleTemps(dir, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d files, want 2", n)
	}
	for _, p := range []string{staleA, staleB} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale %s not removed", p)
		}
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("non-temporary %s removed: %v", n, err)
		}
	}

	// olderThan <= 0 removes every temporary file, fresh ones included.
	n, err = RemoveStaleTemps(dir, 0)
	if err != nil || n != 1 {
		t.Errorf("RemoveStaleTemps(0) = %d, %v; want 1, nil", n, err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("fresh temporary file not removed with olderThan 0")
	}

	n, err = RemoveStaleTemps(filepath.Join(dir, "missing"), 0)
	if err != nil || n != 0 {
		t.Errorf("RemoveStaleTemps(missing) = %d, %v; want 0, nil", n, err)
	}
}

func BenchmarkWriteFile(b *testing.B) {
	dir := b.TempDir()
	p := filepath.Join(dir, "claim.json")
	data := bytes.Repeat([]byte("x"), 2<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := WriteFile(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTwoFiles compares writing two files in two directories (a claim's
// checkpoint record and its CDI spec) one after the other and concurrently:
// concurrent fsyncs can share the file system's journal commits.
func BenchmarkTwoFiles(b *testing.B) {
	data := bytes.Repeat([]byte("x"), 2<<10)
	for _, mode := range []string{"sequential", "concurrent"} {
		b.Run(mode, func(b *testing.B) {
			p1 := filepath.Join(b.TempDir(), "record.json")
			p2 := filepath.Join(b.TempDir(), "spec.json")
			for b.Loop() {
				if mode == "sequential" {
					if err := WriteFile(p1, data, 0o600); err != nil {
						b.Fatal(err)
					}
					if err := WriteFile(p2, data, 0o644); err != nil {
						b.Fatal(err)
					}
					continue
				}
				errc := make(chan error, 1)
				go func() { errc <- WriteFile(p2, data, 0o644) }()
				err := WriteFile(p1, data, 0o600)
				if err = errors.Join(err, <-errc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

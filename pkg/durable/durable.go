// Package durable provides crash-safe file operations: atomic replacement of
// a file's content, removal, and directory synchronization, each of which is
// durable (survives a power loss or kernel crash) once it returns nil.
//
// The driver uses it for files that other processes read while the driver
// runs and that must be trustworthy after a crash: CDI spec files read by the
// container runtime and the checkpoints of prepared claims.
//
// # Temporary files
//
// WriteFile stages the new content in a temporary file in the same directory
// as the target, named
//
//	.<base>.<16 lowercase hex digits>.tmp
//
// The leading "." hides it from tools that skip dot files, and the ".tmp"
// suffix keeps it out of scanners that match on an extension such as ".json"
// or ".yaml" (CDI spec scanners do). Use IsTemp to recognize such names and
// RemoveStaleTemps to remove those left behind by a crash.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	tempSuffix = ".tmp"
	// randLen is the number of hex digits in a temporary file's name.
	randLen = 16
	// maxBaseInTemp caps how much of the target's base name is copied into
	// the temporary file's name, so that the latter stays within NAME_MAX
	// (255 bytes) whatever the length of the former.
	maxBaseInTemp = 200
	// createAttempts bounds the retries on a (very unlikely) name collision.
	createAttempts = 100
)

// WriteFile atomically replaces the content of the file at path with data and
// gives it the permission bits perm (exactly perm: the process umask does not
// apply). The file is created if missing.
//
// Contract:
//   - After WriteFile returns nil, the new content (and perm) survives a
//     crash.
//   - Before it returns, and if it fails, a reader of path sees either the old
//     content (or no file, if there was none) or the complete new content,
//     never a partial file. This holds across a crash as well.
//   - If it fails, the temporary file is removed and path is left as it was,
//     unless the failure was the final directory fsync, in which case path
//     may already hold the new content but its durability is not guaranteed;
//     calling WriteFile again with the same data is always safe.
//
// Steps: create a temporary file in the directory of path (see the package
// documentation for its name; WriteFileStaged chooses another directory), write data, chmod to perm, fsync, close,
// rename over path, fsync the directory. If path is a symbolic link, the link
// itself is replaced, not its target.
//
// Concurrent WriteFile calls on the same path are safe: each uses its own
// temporary file and the last rename wins; readers see one complete version.
// The returned error names the failed step and path, and wraps the
// underlying error (errors.Is(err, fs.ErrNotExist) etc. work).
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFileStaged(path, "", data, perm)
}

// WriteFileStaged is WriteFile with the temporary file created in
// stageDir instead of the directory of path ("" stages there, as
// WriteFile). stageDir must be on the file system of path, so that the
// final rename is atomic; a typical choice is a subdirectory of path's
// directory, whose entries a watcher of that directory (inotify watches do
// not recurse) never sees: the only event there is then the rename's. A
// stageDir on another file system fails the write at the rename, with the
// temporary file removed and path untouched. The contract is WriteFile's;
// a crash may leave a temporary file in stageDir (RemoveStaleTemps).
func WriteFileStaged(path, stageDir string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return stepError("write", path, "check path", errors.New("path names a directory"))
	}
	if stageDir == "" {
		stageDir = dir
	}

	f, tmp, err := createTemp(stageDir, base)
	if err != nil {
		return stepError("write", path, "create temporary file", err)
	}
	closed := false
	defer func() {
		if err == nil {
			return
		}
		if !closed {
			_ = f.Close()
		}
		// Best effort: the step error is what matters to the caller.
		_ = os.Remove(tmp)
	}()

	if _, err = f.Write(data); err != nil {
		return stepError("write", path, "write temporary file "+tmp, err)
	}
	// chmod before fsync so that the mode is part of what fsync persists.
	if err = f.Chmod(perm); err != nil {
		return stepError("write", path, "chmod temporary file "+tmp, err)
	}
	if err = f.Sync(); err != nil {
		return stepError("write", path, "fsync temporary file "+tmp, err)
	}
	closed = true
	if err = f.Close(); err != nil {
		return stepError("write", path, "close temporary file "+tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return stepError("write", path, "rename temporary file "+tmp, err)
	}
	// From here on tmp no longer exists; removing it in the deferred
	// cleanup is a harmless no-op.
	if err = SyncDir(dir); err != nil {
		return stepError("write", path, "fsync directory", err)
	}
	return nil
}

// Remove removes the file at path and fsyncs its directory, so that after it
// returns nil the removal survives a crash. A missing file (or a missing
// directory) is not an error, so Remove is idempotent: retrying a Remove
// whose directory fsync failed makes the earlier removal durable.
func Remove(path string) error {
	dir := filepath.Dir(path)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return stepError("remove", path, "remove file", err)
	}
	if err := SyncDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// No directory, no file: nothing to make durable.
			return nil
		}
		return stepError("remove", path, "fsync directory", err)
	}
	return nil
}

// SyncDir fsyncs the directory dir, which makes durable the creation,
// renaming and removal of the entries in it.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// IsTemp reports whether name (a base name, not a path) has the form of the
// temporary files that WriteFile creates. Directory scanners use it to skip
// such files.
func IsTemp(name string) bool {
	// "." + at least one byte of base + "." + randLen hex + ".tmp"
	if len(name) < 1+1+1+randLen+len(tempSuffix) ||
		name[0] != '.' || !strings.HasSuffix(name, tempSuffix) {
		return false
	}
	rest := name[:len(name)-len(tempSuffix)]
	hex := rest[len(rest)-randLen:]
	if rest[len(rest)-randLen-1] != '.' {
		return false
	}
	for i := 0; i < len(hex); i++ {
		c := hex[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// tempTarget returns the target base name inside a name that IsTemp accepts.
func tempTarget(name string) string {
	return name[1 : len(name)-len(tempSuffix)-randLen-1]
}

// RemoveStaleTemps removes from dir the regular files whose names match
// IsTemp and whose modification time is at least olderThan in the past
// (olderThan <= 0 removes all of them). Such files are left behind when the
// process crashes during WriteFile; callers run this at start-up. The age
// threshold protects the temporary files of a WriteFile still in progress in
// another process sharing the directory.
//
// It returns how many files it removed. A missing dir is not an error. It
// does not descend into subdirectories and does not fsync dir (a temporary
// file that reappears after a crash is harmless). Errors on individual files
// do not stop it; they are joined in the returned error.
func RemoveStaleTemps(dir string, olderThan time.Duration) (int, error) {
	return RemoveStaleTempsOf(dir, olderThan, nil)
}

// RemoveStaleTempsOf is RemoveStaleTemps for a directory shared with other
// writers: it removes only the temporary files whose target base name (the
// file WriteFile was writing) owns accepts; a nil owns accepts all. A
// target name longer than WriteFile copies into the temporary name is seen
// truncated.
func RemoveStaleTempsOf(dir string, olderThan time.Duration, owns func(target string) bool) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("remove stale temporary files in %s: %w", dir, err)
	}
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !IsTemp(e.Name()) {
			continue
		}
		if owns != nil && !owns(tempTarget(e.Name())) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if olderThan > 0 {
			info, err := e.Info()
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, fmt.Errorf("stat stale temporary file %s: %w", p, err))
				}
				continue
			}
			if info.ModTime().After(cutoff) {
				continue
			}
		}
		if err := os.Remove(p); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove stale temporary file %s: %w", p, err))
			}
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// createTemp creates a new temporary file for base in dir, mode 0600, and
// returns it with its path.
func createTemp(dir, base string) (*os.File, string, error) {
	if len(base) > maxBaseInTemp {
		base = base[:maxBaseInTemp]
	}
	var err error
	for range createAttempts {
		name := fmt.Sprintf(".%s.%0*x%s", base, randLen, rand.Uint64(), tempSuffix)
		p := filepath.Join(dir, name)
		var f *os.File
		f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return f, p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, "", err
		}
	}
	return nil, "", err
}

func stepError(op, path, step string, err error) error {
	return fmt.Errorf("%s %s: %s: %w", op, path, step, err)
}

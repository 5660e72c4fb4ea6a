package cdi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"tags.cncf.io/container-device-interface/specs-go"

	"github.com/gpudra/gpudra/pkg/durable"
)

// specFileMode lets the container runtime, whatever user it runs as, read
// the specs; only root writes them.
const specFileMode = 0o644

// SpecDir is a CDI spec directory (e.g. /var/run/cdi) in which this driver
// owns the claim specs, the driver-wide spec and the static device spec
// named by its Naming, and its staging directory. It never touches other
// files. Nothing but WriteDriverSpec and EnsureDriverSpec writes the
// driver-wide spec, nothing but WriteDeviceSpec and EnsureDeviceSpec the
// device spec, and nothing removes either (but WriteDeviceSpec of no
// devices): ClaimUIDs never lists them, so no orphan cleanup can delete
// them.
//
// Every write is staged in the staging directory, a subdirectory of the
// spec directory (same file system, so the rename into place stays
// atomic): a watcher of the spec directory, such as a container runtime's
// CDI cache that reloads the whole directory on every event, sees one
// event per write (the rename) and one per removal.
//
// Every method is safe for concurrent use on different claims; calls for the
// same claim must be serialized by the caller.
type SpecDir struct {
	dir    string
	stage  string
	naming Naming
}

// NewSpecDir creates dir and its staging directory (0755) if they are
// missing.
func NewSpecDir(dir string, n Naming) (*SpecDir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the CDI spec directory: %w", err)
	}
	stage := filepath.Join(dir, n.StagingDirName())
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return nil, fmt.Errorf("creating the staging directory of the CDI spec directory: %w", err)
	}
	return &SpecDir{dir: dir, stage: stage, naming: n}, nil
}

// RemoveStaleTemps removes the temporary files of this driver's spec writes
// that a crash left behind and that are older than olderThan, in the
// staging directory and in the spec directory itself (where plugins from
// before the staging directory staged them); other files, including other
// writers' temporary files, stay. It returns how many it removed.
func (d *SpecDir) RemoveStaleTemps(olderThan time.Duration) (int, error) {
	owns := func(target string) bool {
		_, ok := d.naming.claimUIDFromFileName(target)
		return ok || target == d.naming.DriverSpecFileName() || target == d.naming.DeviceSpecFileName()
	}
	var removed int
	var errs []error
	for _, dir := range []string{d.stage, d.dir} {
		n, err := durable.RemoveStaleTempsOf(dir, olderThan, owns)
		removed += n
		if err != nil {
			errs = append(errs, fmt.Errorf("CDI directory %s: %w", dir, err))
		}
	}
	return removed, errors.Join(errs...)
}

// Dir is the directory's path.
func (d *SpecDir) Dir() string { return d.dir }

// Path is the path of claimUID's spec file.
func (d *SpecDir) Path(claimUID string) string {
	return filepath.Join(d.dir, d.naming.SpecFileName(claimUID))
}

// Write stores the spec of claimUID durably (see durable.WriteFile): once it
// returns nil, the spec survives a crash, and a reader never sees a partial
// spec. It replaces an existing spec of the claim.
func (d *SpecDir) Write(claimUID string, spec *specs.Spec) error {
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("claim %s: encoding the CDI spec: %w", claimUID, err)
	}
	if err := d.writeFile(d.Path(claimUID), data); err != nil {
		return fmt.Errorf("claim %s: writing the CDI spec: %w (is the CDI directory %s writable and not full?)", claimUID, err, d.dir)
	}
	return nil
}

// writeFile writes data durably to path, staged in the staging directory;
// a staging directory that went missing (someone emptied the spec
// directory) is created again, so that writes never stay failed.
func (d *SpecDir) writeFile(path string, data []byte) error {
	err := durable.WriteFileStaged(path, d.stage, data, specFileMode)
	if errors.Is(err, fs.ErrNotExist) {
		if mkErr := os.MkdirAll(d.stage, 0o755); mkErr != nil {
			return errors.Join(err, mkErr)
		}
		err = durable.WriteFileStaged(path, d.stage, data, specFileMode)
	}
	return err
}

// DriverSpecPath is the path of the driver-wide spec.
func (d *SpecDir) DriverSpecPath() string {
	return filepath.Join(d.dir, d.naming.DriverSpecFileName())
}

// WriteDriverSpec makes the driver-wide spec file hold spec (see
// DriverSpec), durably: once it returns nil, the file survives a crash with
// this content. A file that already holds exactly this content (and mode)
// is left in place, so that a restart with an unchanged driver causes no
// file event, and thus no reload of the CDI directory by the container
// runtime; otherwise it is replaced atomically by one rename (durable.
// WriteFile), so that a reader sees the old or the new spec, never a
// partial one. It reports whether it wrote the file.
func (d *SpecDir) WriteDriverSpec(spec *specs.Spec) (written bool, err error) {
	return d.writeShared(d.DriverSpecPath(), "driver-wide", spec)
}

// writeShared is WriteDriverSpec for the spec file at path; what names the
// spec in errors.
func (d *SpecDir) writeShared(path, what string, spec *specs.Spec) (written bool, err error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return false, fmt.Errorf("encoding the %s CDI spec: %w", what, err)
	}
	if info, err := os.Lstat(path); err == nil && info.Mode().IsRegular() && info.Mode().Perm() == specFileMode {
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			// A crash may have come between the rename of the write that
			// put it there and the directory's fsync.
			if err := durable.SyncDir(d.dir); err != nil {
				return false, fmt.Errorf("syncing the CDI directory %s: %w", d.dir, err)
			}
			return false, nil
		}
	}
	if err := d.writeFile(path, data); err != nil {
		return false, fmt.Errorf("writing the %s CDI spec: %w (is the CDI directory %s writable and not full?)", what, err, d.dir)
	}
	return true, nil
}

// ensureShared is EnsureDriverSpec for the spec file at path.
func (d *SpecDir) ensureShared(path, what string, spec *specs.Spec) error {
	_, err := os.Lstat(path)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("checking the %s CDI spec: %w", what, err)
	}
	_, err = d.writeShared(path, what, spec)
	return err
}

// DeviceSpecPath is the path of the static device spec.
func (d *SpecDir) DeviceSpecPath() string {
	return filepath.Join(d.dir, d.naming.DeviceSpecFileName())
}

// WriteDeviceSpec makes the static device spec file hold spec (see
// DeviceSpec), as WriteDriverSpec does for the driver-wide spec: unchanged
// content is left in place, with no file event. A nil spec (a node with no
// device to put there) removes the file, durably. It reports whether it
// changed the file.
func (d *SpecDir) WriteDeviceSpec(spec *specs.Spec) (changed bool, err error) {
	if spec == nil {
		path := d.DeviceSpecPath()
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err := durable.Remove(path); err != nil {
			return false, fmt.Errorf("removing the static device CDI spec: %w", err)
		}
		return true, nil
	}
	return d.writeShared(d.DeviceSpecPath(), "static device", spec)
}

// EnsureDeviceSpec writes spec as the static device spec (durably, as
// WriteDeviceSpec) if the file is missing, and only then: it costs one stat
// when the file exists. Callers run it before they return the IDs of
// Naming.StaticDeviceIDs, so that none is handed out without it.
func (d *SpecDir) EnsureDeviceSpec(spec *specs.Spec) error {
	return d.ensureShared(d.DeviceSpecPath(), "static device", spec)
}

// EnsureDriverSpec writes spec as the driver-wide spec (durably, as
// WriteDriverSpec) if the file is missing, and only then: it costs one stat
// when the file exists. Callers run it before they write a claim spec that
// references the driver-wide spec, so that none exists without it.
func (d *SpecDir) EnsureDriverSpec(spec *specs.Spec) error {
	return d.ensureShared(d.DriverSpecPath(), "driver-wide", spec)
}

// Exists tells whether claimUID has a spec file.
func (d *SpecDir) Exists(claimUID string) (bool, error) {
	_, err := os.Stat(d.Path(claimUID))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("claim %s: checking the CDI spec: %w", claimUID, err)
}

// Remove deletes the spec of claimUID durably; a missing spec is not an
// error.
func (d *SpecDir) Remove(claimUID string) error {
	if err := durable.Remove(d.Path(claimUID)); err != nil {
		return fmt.Errorf("claim %s: removing the CDI spec: %w", claimUID, err)
	}
	return nil
}

// ClaimUIDs lists, sorted, the claims that have a spec of this driver in the
// directory.
func (d *SpecDir) ClaimUIDs() ([]string, error) {
	entries, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("listing the CDI spec directory: %w", err)
	}
	var uids []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if uid, ok := d.naming.claimUIDFromFileName(e.Name()); ok {
			uids = append(uids, uid)
		}
	}
	sort.Strings(uids)
	return uids, nil
}

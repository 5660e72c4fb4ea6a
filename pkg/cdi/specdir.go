package cdi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
// owns the claim specs and the driver-wide spec named by its Naming. It
// never touches other files. Nothing but WriteDriverSpec and
// EnsureDriverSpec writes the driver-wide spec, and nothing removes it:
// ClaimUIDs never lists it, so no orphan cleanup can delete it.
//
// Every method is safe for concurrent use on different claims; calls for the
// same claim must be serialized by the caller.
type SpecDir struct {
	dir    string
	naming Naming
}

// NewSpecDir creates dir (0755) if it is missing.
func NewSpecDir(dir string, n Naming) (*SpecDir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the CDI spec directory: %w", err)
	}
	return &SpecDir{dir: dir, naming: n}, nil
}

// RemoveStaleTemps removes the temporary files of this driver's spec writes
// that a crash left behind and that are older than olderThan; other files,
// including other writers' temporary files, stay. It returns how many it
// removed.
func (d *SpecDir) RemoveStaleTemps(olderThan time.Duration) (int, error) {
	n, err := durable.RemoveStaleTempsOf(d.dir, olderThan, func(target string) bool {
		_, ok := d.naming.claimUIDFromFileName(target)
		return ok || target == d.naming.DriverSpecFileName()
	})
	if err != nil {
		return n, fmt.Errorf("CDI directory %s: %w", d.dir, err)
	}
	return n, nil
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
	if err := durable.WriteFile(d.Path(claimUID), data, specFileMode); err != nil {
		return fmt.Errorf("claim %s: writing the CDI spec: %w (is the CDI directory %s writable and not full?)", claimUID, err, d.dir)
	}
	return nil
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
	data, err := json.Marshal(spec)
	if err != nil {
		return false, fmt.Errorf("encoding the driver-wide CDI spec: %w", err)
	}
	path := d.DriverSpecPath()
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
	if err := durable.WriteFile(path, data, specFileMode); err != nil {
		return false, fmt.Errorf("writing the driver-wide CDI spec: %w (is the CDI directory %s writable and not full?)", err, d.dir)
	}
	return true, nil
}

// EnsureDriverSpec writes spec as the driver-wide spec (durably, as
// WriteDriverSpec) if the file is missing, and only then: it costs one stat
// when the file exists. Callers run it before they write a claim spec that
// references the driver-wide spec, so that none exists without it.
func (d *SpecDir) EnsureDriverSpec(spec *specs.Spec) error {
	_, err := os.Lstat(d.DriverSpecPath())
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("checking the driver-wide CDI spec: %w", err)
	}
	_, err = d.WriteDriverSpec(spec)
	return err
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

// Package checkpoint keeps a durable record of the ResourceClaims that the
// plugin prepared, so that a restarted plugin knows what it prepared (and
// must unprepare, or re-announce) even though the kubelet does not tell it.
//
// # Layout
//
// A Store is a directory holding one file per claim, named
// "<claimUID>.json", mode 0600; the directory is created with mode 0750.
// Prepares and unprepares of different claims therefore never serialize on
// a shared file. Every write goes through durable.WriteFile and every
// removal through durable.Remove: once Put or Delete returns nil the change
// survives a crash, and a reader never sees a partially written record.
// Temporary files that a crash leaves behind are ignored by List and removed
// by NewStore.
//
// # Compatibility
//
// The format is JSON with lowerCamelCase field names. Each record carries
// the format version that wrote it (CurrentVersion for this code), for
// diagnostics and for future migrations, but readers never reject a record
// because of its version:
//
//   - Readers accept any version string, including none (records written
//     before versions were recorded).
//   - A field missing from a record decodes as its zero value.
//   - Fields unknown to this code (added by a newer version), both at the
//     top level and per device, are never an error. They are kept in the
//     Extra maps, and Put writes them back unchanged, so that a record read
//     with Get and stored again with Put loses nothing. Put stamps the record
//     with CurrentVersion, though: a newer version reading it back must not
//     assume that fields it knows were maintained.
//   - There is deliberately no checksum: a checksum over the whole file would
//     fail as soon as a newer version adds a field. Torn writes are excluded
//     by the atomic rename instead, and a file that does not decode is
//     reported (as a LoadError), never silently dropped or deleted.
package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gpudra/gpudra/pkg/durable"
)

const (
	// BootIDPath is where Linux exposes the current boot's random ID.
	BootIDPath = "/proc/sys/kernel/random/boot_id"

	recordExt  = ".json"
	filePerm   = 0o600
	dirPerm    = 0o750
	maxUIDLen  = 128
	staleTemps = time.Minute
)

// ErrInvalidClaimUID is wrapped by the errors of ValidateClaimUID.
var ErrInvalidClaimUID = errors.New("invalid claim UID")

// Store is a directory of claim records. It holds no state besides the
// directory's path and is safe for concurrent use; callers serialize the
// operations on one claim (e.g. a Get, change, Put sequence) themselves.
type Store struct {
	dir string
}

// LoadError reports a record file that List could not read or decode. The
// file is left in place so that it can be inspected.
type LoadError struct {
	Path string
	Err  error
}

func (e LoadError) Error() string {
	return fmt.Sprintf("claim checkpoint %s: %v", e.Path, e.Err)
}

func (e LoadError) Unwrap() error { return e.Err }

// NewStore returns the store in dir, creating dir (mode 0750) if it is
// missing, and removes the temporary files that an interrupted write left
// behind (those older than a minute, so as not to disturb a write still in
// progress in another process).
func NewStore(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("checkpoint store: empty directory path")
	}
	if err := ensureDir(dir); err != nil {
		return nil, err
	}
	if _, err := durable.RemoveStaleTemps(dir, staleTemps); err != nil {
		return nil, fmt.Errorf("checkpoint store %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

func ensureDir(dir string) error {
	info, err := os.Stat(dir)
	switch {
	case err == nil:
		if !info.IsDir() {
			return fmt.Errorf("checkpoint store %s: not a directory", dir)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("checkpoint store: %w", err)
	}
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("checkpoint store: create directory: %w", err)
	}
	// MkdirAll is subject to the umask; the mode must not be.
	if err := os.Chmod(dir, dirPerm); err != nil {
		return fmt.Errorf("checkpoint store: %w", err)
	}
	// Make the new directory's entry in its parent durable, or records
	// written into it could vanish with it in a crash.
	if err := durable.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
		return fmt.Errorf("checkpoint store: fsync parent of %s: %w", dir, err)
	}
	return nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(claimUID string) string {
	return filepath.Join(s.dir, claimUID+recordExt)
}

// Put durably writes rec as the record of claim rec.ClaimUID, replacing any
// previous one. It validates rec.ClaimUID (see ValidateClaimUID) and sets
// rec.Version to CurrentVersion; rec.Extra fields are written back as they
// are.
func (s *Store) Put(rec *ClaimRecord) error {
	if rec == nil {
		return errors.New("checkpoint put: nil record")
	}
	if err := ValidateClaimUID(rec.ClaimUID); err != nil {
		return fmt.Errorf("checkpoint put: %w", err)
	}
	rec.Version = CurrentVersion
	data, err := encodeRecord(rec)
	if err != nil {
		return fmt.Errorf("checkpoint put: encode claim %s: %w", rec.ClaimUID, err)
	}
	if err := durable.WriteFile(s.path(rec.ClaimUID), data, filePerm); err != nil {
		return fmt.Errorf("checkpoint put: %w", err)
	}
	return nil
}

// Get returns the record of the claim, or (nil, nil) if there is none.
func (s *Store) Get(claimUID string) (*ClaimRecord, error) {
	if err := ValidateClaimUID(claimUID); err != nil {
		return nil, fmt.Errorf("checkpoint get: %w", err)
	}
	rec, err := s.load(s.path(claimUID), claimUID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint get: %w", err)
	}
	return rec, nil
}

// Delete durably removes the record of the claim. Deleting a missing record
// is not an error.
func (s *Store) Delete(claimUID string) error {
	if err := ValidateClaimUID(claimUID); err != nil {
		return fmt.Errorf("checkpoint delete: %w", err)
	}
	if err := durable.Remove(s.path(claimUID)); err != nil {
		return fmt.Errorf("checkpoint delete: %w", err)
	}
	return nil
}

// List returns every record in the store, ordered by file name. Each record
// file that cannot be read or decoded, or whose name is not a valid claim UID
// followed by ".json", is reported as a LoadError instead and left in place;
// it never prevents loading the others. Temporary files, subdirectories and
// files without the ".json" suffix are skipped. The error is non-nil only if
// the directory itself cannot be read (a missing directory holds no records).
func (s *Store) List() ([]*ClaimRecord, []LoadError, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("checkpoint list: %w", err)
	}
	var (
		recs    []*ClaimRecord
		loadErr []LoadError
	)
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || durable.IsTemp(name) || !strings.HasSuffix(name, recordExt) {
			continue
		}
		p := filepath.Join(s.dir, name)
		uid := strings.TrimSuffix(name, recordExt)
		if err := ValidateClaimUID(uid); err != nil {
			loadErr = append(loadErr, LoadError{Path: p, Err: fmt.Errorf("file name: %w", err)})
			continue
		}
		rec, err := s.load(p, uid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			loadErr = append(loadErr, LoadError{Path: p, Err: err})
			continue
		}
		recs = append(recs, rec)
	}
	return recs, loadErr, nil
}

// load reads and decodes the record file p of claim uid. A record without a
// claimUID takes it from the file name; one naming another claim is an
// error, since acting on it could unprepare the wrong claim.
func (s *Store) load(p, uid string) (*ClaimRecord, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	rec, err := decodeRecord(data)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", p, err)
	}
	switch rec.ClaimUID {
	case "":
		rec.ClaimUID = uid
	case uid:
	default:
		return nil, fmt.Errorf("%s holds the record of claim %q, not %q", p, rec.ClaimUID, uid)
	}
	return rec, nil
}

// ValidateClaimUID checks that uid can safely be used as a record's file
// name: non-empty, at most 128 characters, only ASCII letters, digits and
// '-'. Kubernetes UIDs (RFC 4122 UUIDs) satisfy this; anything else, such as
// a path, is rejected before it reaches the file system.
func ValidateClaimUID(uid string) error {
	const hint = "it must be the ResourceClaim's metadata.uid"
	if uid == "" {
		return fmt.Errorf("%w: empty; %s", ErrInvalidClaimUID, hint)
	}
	if len(uid) > maxUIDLen {
		return fmt.Errorf("%w %.32q...: %d characters, more than %d; %s",
			ErrInvalidClaimUID, uid, len(uid), maxUIDLen, hint)
	}
	for i := 0; i < len(uid); i++ {
		c := uid[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' {
			continue
		}
		return fmt.Errorf("%w %q: character %q at offset %d is not one of [A-Za-z0-9-]; %s",
			ErrInvalidClaimUID, uid, c, i, hint)
	}
	return nil
}

// ReadBootID returns the ID of the current boot, from BootIDPath.
func ReadBootID() (string, error) {
	return ReadBootIDFile(BootIDPath)
}

// ReadBootIDFile returns the boot ID stored in the file at path (whitespace
// trimmed); ReadBootID reads BootIDPath. An empty file is an error.
func ReadBootIDFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read boot ID: %w", err)
	}
	id := strings.TrimSpace(string(data))
	if id == "" {
		return "", fmt.Errorf("read boot ID: %s is empty", path)
	}
	return id, nil
}

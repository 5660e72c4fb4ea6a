package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// hostFS reads host paths under a host root. Symlinks are resolved within
// the root, as the host would resolve them: the host's /var/run -> /run
// must lead to <root>/run, not to this process's /run.
type hostFS struct{ root string }

// path returns where this process reads the host path p.
func (h hostFS) path(p string) string {
	if h.root == "/" {
		return filepath.Clean(p)
	}
	resolved, err := securejoin.SecureJoin(h.root, p)
	if err != nil {
		// A symlink loop: leave it to the caller's stat to report.
		return filepath.Join(h.root, p)
	}
	return resolved
}

// hostPath is the inverse of path for display: the host path of a path
// under the root.
func (h hostFS) hostPath(p string) string {
	if h.root == "/" {
		return p
	}
	rel, err := filepath.Rel(h.root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return p
	}
	return filepath.Join("/", rel)
}

func (h hostFS) stat(p string) (os.FileInfo, error) { return os.Stat(h.path(p)) }

func (h hostFS) readFile(p string) ([]byte, error) { return os.ReadFile(h.path(p)) }

// exists tells whether host path p exists; an error other than "does not
// exist" counts as existing, so that it is reported by whoever reads it.
func (h hostFS) exists(p string) bool {
	_, err := h.stat(p)
	return err == nil || !os.IsNotExist(err)
}

// glob is filepath.Glob of a host pattern whose wildcards are in its last
// element only, returning host paths, sorted.
func (h hostFS) glob(pattern string) []string {
	dir, base := filepath.Split(pattern)
	matches, _ := filepath.Glob(filepath.Join(h.path(dir), base))
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, filepath.Join(dir, filepath.Base(m)))
	}
	return out
}

// LocalPath returns where a process that sees the host's / at hostRoot
// reads the host path p, resolving symlinks within hostRoot as the host
// would.
func LocalPath(hostRoot, p string) string { return hostFS{root: filepath.Clean(hostRoot)}.path(p) }

// HostPathOf is the inverse of LocalPath for display: the host path of
// local path p under hostRoot (p itself when it is not under hostRoot).
func HostPathOf(hostRoot, p string) string {
	return hostFS{root: filepath.Clean(hostRoot)}.hostPath(p)
}

// pathList shortens a list of paths for a one-line detail.
func pathList(paths []string, limit int) string {
	if len(paths) <= limit {
		return strings.Join(paths, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(paths[:limit], ", "), len(paths)-limit)
}

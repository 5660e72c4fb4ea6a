package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gpudra/gpudra/pkg/durable"
)

// installFile copies the executable src to dst durably (0755), creating
// dst's directory. It leaves an identical dst untouched, so a restart does
// not replace a binary the container runtime may be executing; a different
// one is replaced atomically.
func installFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := durable.WriteFile(dst, data, 0o755); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return nil
}

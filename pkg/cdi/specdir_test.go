package cdi

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSpecDirRemovesOnlyItsOwnStaleTemps(t *testing.T) {
	dir := t.TempDir()
	d, err := NewSpecDir(dir, NewNaming("gpu.nvidia.com"))
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	files := map[string]bool{ // name -> removed
		"." + d.naming.SpecFileName("uid-1") + ".0123456789abcdef.tmp": true,  // ours, stale
		"." + d.naming.SpecFileName("uid-2") + ".fedcba9876543210.tmp": false, // ours, in progress
		".nvidia.com-gpu.yaml.0123456789abcdef.tmp":                    false, // another writer's
		d.naming.SpecFileName("uid-3"):                                 false, // a spec
	}
	for name := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		if name != "."+d.naming.SpecFileName("uid-2")+".fedcba9876543210.tmp" {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := d.RemoveStaleTemps(time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStaleTemps = %d, %v; want 1, nil", n, err)
	}
	for name, removed := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if gone := os.IsNotExist(err); gone != removed {
			t.Errorf("%s: removed = %v, want %v", name, gone, removed)
		}
	}
}

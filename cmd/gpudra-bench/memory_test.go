package main

import (
	"os"
	"testing"
)

func TestReadRSSOfThisProcess(t *testing.T) {
	r, err := readRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// VmRSS is RssAnon + RssFile + RssShmem.
	if r.anon <= 0 || r.file <= 0 || r.total < r.anon+r.file {
		t.Fatalf("implausible resident memory %+v", r)
	}
	if _, err := readRSS(-1); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

func TestWorkingSetOfThisProcess(t *testing.T) {
	ws, err := workingSetKiB(os.Getpid())
	if err != nil {
		t.Skipf("no memory cgroup to read here: %v", err)
	}
	if ws <= 0 {
		t.Fatalf("working set %d KiB", ws)
	}
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// pluginComm is the kernel's (15-byte) name of the plugin process.
const pluginComm = "gpu-kubelet-plu"

// pluginPID finds the plugin process on this host (the newest, should a
// rolling update run two).
func pluginPID() (int, error) {
	matches, _ := filepath.Glob("/proc/[0-9]*/comm")
	best, bestStart := 0, uint64(0)
	for _, m := range matches {
		comm, err := os.ReadFile(m)
		if err != nil || strings.TrimSpace(string(comm)) != pluginComm {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(m)))
		stat, err := os.ReadFile(filepath.Join(filepath.Dir(m), "stat"))
		if err != nil {
			continue
		}
		// Field 22 (starttime) follows the ")" that closes the command name.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 20 {
			continue
		}
		start, _ := strconv.ParseUint(fields[19], 10, 64)
		if best == 0 || start > bestStart {
			best, bestStart = pid, start
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no %s process on this host", pluginComm)
	}
	return best, nil
}

// rss is a process's resident memory in KiB: in all (VmRSS), anonymous
// (heap, stacks: what the process allocated) and file-backed (mapped pages
// of the executable and libraries, shared and reclaimable).
type rss struct{ total, anon, file int }

func (r rss) mib() (float64, float64, float64) {
	return float64(r.total) / 1024, float64(r.anon) / 1024, float64(r.file) / 1024
}

// readRSS reads the resident memory of pid from /proc/<pid>/status.
func readRSS(pid int) (rss, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss{}, err
	}
	defer f.Close()
	var r rss
	fields := map[string]*int{"VmRSS:": &r.total, "RssAnon:": &r.anon, "RssFile:": &r.file}
	found := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		key, value, ok := strings.Cut(s.Text(), "\t")
		dst := fields[key]
		if !ok || dst == nil {
			continue
		}
		if *dst, err = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(value), " kB")); err != nil {
			return rss{}, fmt.Errorf("pid %d: parsing %s %q: %w", pid, key, value, err)
		}
		found++
	}
	if found != len(fields) {
		return rss{}, fmt.Errorf("pid %d: /proc/%d/status lacks VmRSS, RssAnon or RssFile", pid, pid)
	}
	return r, s.Err()
}

// workingSetKiB returns the memory working set of pid's cgroup as the
// kubelet and metrics-server report it for a container: usage minus inactive
// file pages (cgroup v2: memory.current, v1: memory.usage_in_bytes). Pages of
// the executable that another cgroup loaded first are charged there, not
// here.
func workingSetKiB(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, usageFile, inactiveKey string
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			dir, usageFile, inactiveKey = filepath.Join("/sys/fs/cgroup", parts[2]), "memory.current", "inactive_file"
		case strings.Contains(","+parts[1]+",", ",memory,"): // v1
			dir, usageFile, inactiveKey = filepath.Join("/sys/fs/cgroup/memory", parts[2]), "memory.usage_in_bytes", "total_inactive_file"
		default:
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, usageFile))
		if err != nil {
			return 0, err
		}
		usage, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s: %w", dir, usageFile, err)
		}
		stat, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
		if err != nil {
			return 0, err
		}
		for _, l := range strings.Split(string(stat), "\n") {
			if v, ok := strings.CutPrefix(l, inactiveKey+" "); ok {
				inactive, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s/memory.stat: %w", dir, err)
				}
				usage = max(0, usage-inactive)
			}
		}
		return int(usage / 1024), nil
	}
	return 0, fmt.Errorf("pid %d: no memory cgroup", pid)
}

// measureMemory runs pairs prepare/unprepare pairs at concurrency 1 in two
// halves and reports the plugin's resident memory before, after the first
// half and after the second: growth between the halves means a leak.
func measureMemory(ctx context.Context, b *bencher, pairs int) error {
	pid, err := pluginPID()
	if err != nil {
		return err
	}
	rounds := max(1, pairs/2/len(b.claims))
	var m [3]rss
	var ws [3]int
	for i := range m {
		if i > 0 {
			r := b.run(ctx, 1, rounds)
			if r.prepare.errors+r.unprepare.errors > 0 {
				return fmt.Errorf("memory run: %d prepare and %d unprepare errors: %s", r.prepare.errors, r.unprepare.errors, r.firstErr)
			}
		}
		if m[i], err = readRSS(pid); err != nil {
			return err
		}
		if ws[i], err = workingSetKiB(pid); err != nil {
			return fmt.Errorf("the plugin's container memory: %w", err)
		}
	}
	done := 2 * rounds * len(b.claims)
	fmt.Printf("plugin memory (pid %d), MiB   RSS total   anon   file   cgroup working set\n", pid)
	for i, label := range []string{"before", fmt.Sprintf("after %d pairs", done/2), fmt.Sprintf("after %d pairs", done)} {
		t, a, f := m[i].mib()
		fmt.Printf("  %-28s %9.1f %6.1f %6.1f %12.1f\n", label, t, a, f, float64(ws[i])/1024)
	}
	fmt.Printf("  growth over the second half: total %+.1f MiB, anon %+.1f MiB\n",
		float64(m[2].total-m[1].total)/1024, float64(m[2].anon-m[1].anon)/1024)
	fmt.Printf(`{"memory":{"pairs":%d,"rss_before_mib":%.1f,"rss_half_mib":%.1f,"rss_end_mib":%.1f,"anon_before_mib":%.1f,"anon_half_mib":%.1f,"anon_end_mib":%.1f,"working_set_before_mib":%.1f,"working_set_half_mib":%.1f,"working_set_end_mib":%.1f}}`+"\n",
		done, float64(m[0].total)/1024, float64(m[1].total)/1024, float64(m[2].total)/1024,
		float64(m[0].anon)/1024, float64(m[1].anon)/1024, float64(m[2].anon)/1024,
		float64(ws[0])/1024, float64(ws[1])/1024, float64(ws[2])/1024)
	return nil
}

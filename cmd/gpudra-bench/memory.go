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

// rssKiB reads VmRSS of pid.
func rssKiB(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
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
	var rss [3]int
	for i := range rss {
		if i > 0 {
			r := b.run(ctx, 1, rounds)
			if r.prepare.errors+r.unprepare.errors > 0 {
				return fmt.Errorf("memory run: %d prepare and %d unprepare errors: %s", r.prepare.errors, r.unprepare.errors, r.firstErr)
			}
		}
		if rss[i], err = rssKiB(pid); err != nil {
			return err
		}
	}
	done := 2 * rounds * len(b.claims)
	fmt.Printf("plugin memory (pid %d): RSS %.1f MiB before, %.1f MiB after %d pairs, %.1f MiB after %d pairs (growth over the second half: %+.1f MiB)\n",
		pid, float64(rss[0])/1024, float64(rss[1])/1024, done/2, float64(rss[2])/1024, done, float64(rss[2]-rss[1])/1024)
	fmt.Printf(`{"memory":{"pairs":%d,"rss_before_mib":%.1f,"rss_half_mib":%.1f,"rss_end_mib":%.1f}}`+"\n",
		done, float64(rss[0])/1024, float64(rss[1])/1024, float64(rss[2])/1024)
	return nil
}

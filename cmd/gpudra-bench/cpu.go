package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The node's processes whose CPU time a level is charged with, in the order
// of the tables. A process matches when its /proc/<pid>/comm (the kernel's
// name, at most 15 bytes) or the base name of its argv[0] is one of names.
var nodeProcesses = []struct {
	label string
	names []string
}{
	{"plugin", []string{pluginComm, "gpu-kubelet-plugin"}},
	{"containerd", []string{"containerd"}},
	{"kube-apiserver", []string{"kube-apiserver"}},
	{"etcd", []string{"etcd"}},
	{"kubelet", []string{"kubelet"}},
}

// selfLabel is the label of this process's own CPU time (shown, not summed).
const selfLabel = "bench"

// procStat is what the bench uses of one /proc/<pid>/stat line.
type procStat struct {
	comm  string
	ticks uint64 // utime + stime, in clock ticks
	start uint64 // starttime, in clock ticks after boot: tells a new process with a reused pid
}

// parseStat parses a /proc/<pid>/stat line. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses: the fields after
// it are counted from its last ")".
func parseStat(line string) (procStat, error) {
	open, end := strings.IndexByte(line, '('), strings.LastIndexByte(line, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("no (comm) in stat line %q", line)
	}
	// fields[0] is field 3 (state): field n is fields[n-3].
	fields := strings.Fields(line[end+1:])
	if len(fields) < 20 {
		return procStat{}, fmt.Errorf("stat line has %d fields after the command name, want at least 20", len(fields))
	}
	var v [3]uint64
	for i, n := range []int{14, 15, 22} { // utime, stime, starttime
		x, err := strconv.ParseUint(fields[n-3], 10, 64)
		if err != nil {
			return procStat{}, fmt.Errorf("stat field %d: %w", n, err)
		}
		v[i] = x
	}
	return procStat{comm: line[open+1 : end], ticks: v[0] + v[1], start: v[2]}, nil
}

// processLabel returns the label of nodeProcesses that comm or argv0 match,
// or "".
func processLabel(comm, argv0 string) string {
	for _, p := range nodeProcesses {
		for _, n := range p.names {
			if isProcess(comm, argv0, n) {
				return p.label
			}
		}
	}
	return ""
}

// isProcess tells whether a process with this comm (the kernel's name, at
// most 15 bytes) or argv[0] (its base name) is name.
func isProcess(comm, argv0, name string) bool {
	return comm == name || (argv0 != "" && filepath.Base(argv0) == name)
}

type procSample struct {
	label string
	stat  procStat
}

// cpuSample is the CPU time of the matched processes at one moment, by pid.
type cpuSample map[int]procSample

// sampleCPU reads /proc/<pid>/stat of every process that nodeProcesses
// match, and of this process. With pluginPod set, only the plugin
// processes in that pod's cgroup are the plugin's.
func sampleCPU(pluginPod string) cpuSample {
	return sampleProcs(func(dir, comm, argv0 string) string {
		label := processLabel(comm, argv0)
		if label == "plugin" && pluginPod != "" && !inPod(dir, pluginPod) {
			return ""
		}
		return label
	})
}

// sampleProcs reads /proc/<pid>/stat of this process (selfLabel) and of
// every other process that label (given its /proc directory, comm and
// argv[0]) gives a label; "" leaves it out. Processes that go away while it
// reads are skipped.
func sampleProcs(label func(dir, comm, argv0 string) string) cpuSample {
	s := cpuSample{}
	self := os.Getpid()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		l := selfLabel
		if pid != self {
			comm, err := os.ReadFile(filepath.Join(d, "comm"))
			if err != nil {
				continue
			}
			cmdline, _ := os.ReadFile(filepath.Join(d, "cmdline"))
			argv0, _, _ := strings.Cut(string(cmdline), "\x00")
			if l = label(d, strings.TrimSpace(string(comm)), argv0); l == "" {
				continue
			}
		}
		raw, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		st, err := parseStat(strings.TrimSpace(string(raw)))
		if err != nil {
			fmt.Fprintf(os.Stderr, "pid %d: %v\n", pid, err)
			continue
		}
		s[pid] = procSample{label: l, stat: st}
	}
	return s
}

// cpuUse is the CPU time one label's processes used between two samples.
type cpuUse struct {
	ticks uint64
	procs int    // processes at the end
	note  string // "", or what limits the figure (missing, exited, started)
}

// cpuDelta returns, by label (every one of nodeProcesses, and selfLabel), the
// CPU time used between before and after. A process that started in between
// counts with all its CPU time; one that exited in between counts with none
// of it (the note says so); a label without any process is noted missing.
func cpuDelta(before, after cpuSample) map[string]cpuUse {
	out := map[string]cpuUse{}
	notes := map[string][]string{}
	for pid, a := range after {
		u := out[a.label]
		u.procs++
		if b, ok := before[pid]; ok && b.stat.start == a.stat.start && b.label == a.label {
			if a.stat.ticks >= b.stat.ticks {
				u.ticks += a.stat.ticks - b.stat.ticks
			}
		} else {
			u.ticks += a.stat.ticks
			notes[a.label] = append(notes[a.label], fmt.Sprintf("pid %d started", pid))
		}
		out[a.label] = u
	}
	for pid, b := range before {
		if a, ok := after[pid]; !ok || a.stat.start != b.stat.start {
			notes[b.label] = append(notes[b.label], fmt.Sprintf("pid %d exited (its CPU time since the start is lost)", pid))
		}
	}
	for _, p := range nodeProcesses {
		if _, ok := out[p.label]; !ok && len(notes[p.label]) == 0 {
			out[p.label] = cpuUse{note: "missing"}
		}
	}
	for label, n := range notes {
		u := out[label]
		u.note = strings.Join(n, ", ")
		out[label] = u
	}
	return out
}

// atClkTck is the auxiliary vector's AT_CLKTCK: the kernel's clock ticks per
// second as sysconf(_SC_CLK_TCK) returns them (x/sys has no Sysconf on Linux).
const atClkTck = 17

// clockTicks returns the clock ticks per second of /proc/<pid>/stat's
// utime and stime, 100 if the auxiliary vector lacks them.
func clockTicks() int64 {
	if aux, err := unix.Auxv(); err == nil {
		for _, kv := range aux {
			if kv[0] == atClkTck && kv[1] > 0 {
				return int64(kv[1])
			}
		}
	}
	return 100
}

// cpuMsPerPair converts ticks over pairs prepare/unprepare pairs into
// milliseconds of CPU time per pair.
func cpuMsPerPair(ticks uint64, hz int64, pairs int) float64 {
	if pairs <= 0 || hz <= 0 {
		return 0
	}
	return float64(ticks) * 1000 / float64(hz) / float64(pairs)
}

// inPod tells whether the process of /proc/<pid> dir runs in the pod with
// the given UID: its cgroup path names the pod ("pod<UID>", with "_" for
// "-" under the systemd cgroup driver).
func inPod(dir, podUID string) bool {
	cg, err := os.ReadFile(filepath.Join(dir, "cgroup"))
	if err != nil {
		return false
	}
	return strings.Contains(string(cg), podUID) || strings.Contains(string(cg), strings.ReplaceAll(podUID, "-", "_"))
}

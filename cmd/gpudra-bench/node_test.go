package main

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses; utime 1234, stime 56,
	// starttime 98765.
	line := "4242 (gpu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 12 0 98765 123456 789"
	st, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.comm != "gpu (x) y" || st.ticks != 1290 || st.start != 98765 {
		t.Fatalf("parseStat = %+v, want comm %q, ticks 1290, start 98765", st, "gpu (x) y")
	}
	for _, bad := range []string{"", "4242 gpu S 1", "4242 (gpu) S 1 2 3", "4242 (gpu) S 1 4242 4242 0 -1 4194560 100 0 0 0 x 56 0 0 20 0 12 0 98765 1 2"} {
		if _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestParseStatOfThisProcess(t *testing.T) {
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	st, err := parseStat(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	comm, _ := os.ReadFile("/proc/self/comm")
	if want := string(comm[:len(comm)-1]); st.comm != want || st.start == 0 {
		t.Fatalf("parseStat(/proc/self/stat) = %+v, want comm %q and a start time", st, want)
	}
}

func TestProcessLabel(t *testing.T) {
	for _, tc := range []struct{ comm, argv0, want string }{
		{"gpu-kubelet-plu", "/usr/bin/gpu-kubelet-plugin", "plugin"},
		{"whatever", "/usr/bin/gpu-kubelet-plugin", "plugin"}, // comm changed by prctl
		{"containerd", "/var/tmp/gpudra-cluster/bin/containerd", "containerd"},
		{"containerd-shim", "/var/tmp/gpudra-cluster/bin/containerd-shim-runc-v2", ""},
		{"kube-apiserver", "kube-apiserver", "kube-apiserver"},
		{"etcd", "/usr/bin/etcd", "etcd"},
		{"kubelet", "/var/tmp/gpudra-cluster/bin/kubelet", "kubelet"},
		{"kube-scheduler", "kube-scheduler", ""},
		{"bash", "", ""},
	} {
		if got := processLabel(tc.comm, tc.argv0); got != tc.want {
			t.Errorf("processLabel(%q, %q) = %q, want %q", tc.comm, tc.argv0, got, tc.want)
		}
	}
}

func TestCPUDelta(t *testing.T) {
	ps := func(label string, ticks, start uint64) procSample {
		return procSample{label: label, stat: procStat{ticks: ticks, start: start}}
	}
	before := cpuSample{
		10: ps("plugin", 100, 1),
		11: ps("plugin", 50, 2), // a second plugin (rolling update)
		20: ps("containerd", 1000, 1),
		30: ps("etcd", 400, 1),    // restarts: pid reused with a new start time
		40: ps("kubelet", 700, 1), // exits
	}
	after := cpuSample{
		10: ps("plugin", 130, 1),
		11: ps("plugin", 55, 2),
		20: ps("containerd", 1090, 1),
		30: ps("etcd", 7, 500),
		50: ps("kubelet", 3, 600), // a new kubelet
	}
	d := cpuDelta(before, after)
	if u := d["plugin"]; u.ticks != 35 || u.procs != 2 || u.note != "" {
		t.Errorf("plugin %+v, want 35 ticks of 2 processes, no note", u)
	}
	if u := d["containerd"]; u.ticks != 90 || u.note != "" {
		t.Errorf("containerd %+v, want 90 ticks", u)
	}
	if u := d["etcd"]; u.ticks != 7 || u.note == "" {
		t.Errorf("etcd %+v, want the new process's 7 ticks and a note", u)
	}
	if u := d["kubelet"]; u.ticks != 3 || u.procs != 1 || u.note == "" {
		t.Errorf("kubelet %+v, want 3 ticks of the new process and a note of the exit", u)
	}
	if u := d["kube-apiserver"]; u.ticks != 0 || u.note != "missing" {
		t.Errorf("kube-apiserver %+v, want missing", u)
	}
}

func TestCPUPerPair(t *testing.T) {
	ns := &nodeStats{hz: 100, cpu: map[string]cpuUse{
		"plugin": {ticks: 24}, "containerd": {ticks: 48}, "kube-apiserver": {ticks: 12},
		"etcd": {ticks: 0}, "kubelet": {ticks: 6}, selfLabel: {ticks: 60},
	}}
	// 240 pairs: 24 ticks = 240 ms = 1 ms per pair.
	pp := ns.cpuPerPair(240)
	want := map[string]float64{"plugin": 1, "containerd": 2, "kube-apiserver": 0.5, "etcd": 0, "kubelet": 0.25, "sum": 3.75, selfLabel: 2.5}
	for k, v := range want {
		if math.Abs(pp[k]-v) > 1e-9 {
			t.Errorf("%s: %v ms per pair, want %v", k, pp[k], v)
		}
	}
	if got := cpuMsPerPair(10, 100, 0); got != 0 {
		t.Errorf("no pairs: %v, want 0", got)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		mask    uint32
		name    string
		kind    fsKind
		refresh bool
	}{
		// durable.WriteFile of a spec: a hidden temp file, written, renamed.
		{unix.IN_CREATE, ".k8s.gpu.nvidia.com-claim_x.json.0123456789abcdef.tmp", fsCreate, false},
		{unix.IN_MODIFY, ".k8s.gpu.nvidia.com-claim_x.json.0123456789abcdef.tmp", fsWrite, false},
		{unix.IN_ATTRIB, ".k8s.gpu.nvidia.com-claim_x.json.0123456789abcdef.tmp", fsChmod, false},
		{unix.IN_MOVED_FROM, ".k8s.gpu.nvidia.com-claim_x.json.0123456789abcdef.tmp", fsMovedFrom, false},
		{unix.IN_MOVED_TO, "k8s.gpu.nvidia.com-claim_x.json", fsMovedTo, true},
		{unix.IN_DELETE, "k8s.gpu.nvidia.com-claim_x.json", fsRemove, true},
		{unix.IN_MODIFY, "spec.yaml", fsWrite, true},
		{unix.IN_CREATE, "spec.yaml", fsCreate, true},
		{unix.IN_MOVED_FROM, "old.json", fsMovedFrom, true},
		{unix.IN_ATTRIB, "spec.json", fsChmod, false}, // fsnotify Chmod: not in the cache's mask
		{unix.IN_CREATE | unix.IN_ISDIR, "subdir", fsCreate, false},
		{unix.IN_DELETE, "spec.yml", fsRemove, false},
	} {
		kind, ok, refresh := classify(tc.mask, tc.name)
		if !ok || kind != tc.kind || refresh != tc.refresh {
			t.Errorf("classify(%#x, %q) = %s, %v, refresh %v; want %s, refresh %v",
				tc.mask, tc.name, fsKindNames[kind], ok, refresh, fsKindNames[tc.kind], tc.refresh)
		}
	}
	if _, ok, _ := classify(unix.IN_CLOSE_WRITE, "a.json"); ok {
		t.Error("IN_CLOSE_WRITE classified, but it is not watched")
	}
}

func TestParseInotify(t *testing.T) {
	ev := func(mask uint32, name string, pad int) []byte {
		b := make([]byte, unix.SizeofInotifyEvent+len(name)+pad)
		binary.NativeEndian.PutUint32(b[0:], 1)
		binary.NativeEndian.PutUint32(b[4:], mask)
		binary.NativeEndian.PutUint32(b[12:], uint32(len(name)+pad))
		copy(b[unix.SizeofInotifyEvent:], name)
		return b
	}
	buf := append(ev(unix.IN_CREATE, "a.tmp", 3), ev(unix.IN_MOVED_TO, "a.json", 10)...)
	buf = append(buf, ev(unix.IN_Q_OVERFLOW, "", 0)...)
	got, err := parseInotify(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := []inotifyEvent{{unix.IN_CREATE, "a.tmp"}, {unix.IN_MOVED_TO, "a.json"}, {unix.IN_Q_OVERFLOW, ""}}
	if len(got) != len(want) {
		t.Fatalf("parseInotify = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := parseInotify(buf[:len(buf)-3]); err == nil {
		t.Error("no error for a truncated buffer")
	}
}

// TestWatcherCutsPhases writes files as a prepare and an unprepare do, with
// a cut after each, and checks that each cut has its own events.
func TestWatcherCutsPhases(t *testing.T) {
	dir := t.TempDir()
	w, err := newCDIWatcher(dir)
	if err != nil {
		t.Skipf("no inotify here: %v", err)
	}
	defer w.Close()
	spec := filepath.Join(dir, "k8s.gpu.nvidia.com-claim_x.json")
	tmp := filepath.Join(dir, ".k8s.gpu.nvidia.com-claim_x.json.0123456789abcdef.tmp")
	if err := os.WriteFile(tmp, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, spec); err != nil {
		t.Fatal(err)
	}
	prep, err := w.cut()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(spec); err != nil {
		t.Fatal(err)
	}
	unprep, err := w.cut()
	if err != nil {
		t.Fatal(err)
	}
	// The marker files of the cuts are not counted.
	if prep.kinds[fsCreate] != 1 || prep.kinds[fsWrite] != 1 || prep.kinds[fsMovedFrom] != 1 || prep.kinds[fsMovedTo] != 1 ||
		prep.kinds[fsRemove] != 0 || prep.refresh != 1 {
		t.Errorf("prepare phase %+v, want 1 create, write, moved_from, moved_to, 1 refresh", prep)
	}
	if unprep.kinds[fsRemove] != 1 || unprep.total() != 1 || unprep.refresh != 1 {
		t.Errorf("unprepare phase %+v, want 1 remove (a refresh) only", unprep)
	}
}

func TestPerCall(t *testing.T) {
	var c fsCounts
	c.kinds[fsCreate], c.kinds[fsMovedTo], c.kinds[fsWrite] = 8, 8, 16
	c.refresh = 8
	pc := perCall(c, 8)
	if pc["create"] != 1 || pc["moved_to"] != 1 || pc["write"] != 2 || pc["remove"] != 0 || pc["total"] != 4 || pc["containerd_refresh"] != 1 {
		t.Errorf("perCall = %v", pc)
	}
	var sum fsCounts
	sum.add(c)
	sum.add(c)
	if sum.kinds[fsWrite] != 32 || sum.refresh != 16 {
		t.Errorf("add: %+v", sum)
	}
}

const sampleMetrics = `# HELP gpudra_claim_operation_duration_seconds Time to prepare or unprepare one ResourceClaim.
# TYPE gpudra_claim_operation_duration_seconds histogram
gpudra_claim_operation_duration_seconds_bucket{operation="prepare",le="0.0005"} 0
gpudra_claim_operation_duration_seconds_bucket{operation="prepare",le="+Inf"} 100
gpudra_claim_operation_duration_seconds_sum{operation="prepare"} 0.25
gpudra_claim_operation_duration_seconds_count{operation="prepare"} 100
gpudra_claim_operation_duration_seconds_sum{operation="unprepare"} 0.1
gpudra_claim_operation_duration_seconds_count{operation="unprepare"} 100
gpudra_api_request_duration_seconds_sum{resource="resourceclaims",verb="GET"} 0.2
gpudra_api_request_duration_seconds_count{resource="resourceclaims",verb="GET"} 100
gpudra_api_request_duration_seconds_sum{resource="resourceslices",verb="GET"} 9
gpudra_api_request_duration_seconds_count{resource="resourceslices",verb="GET"} 3
gpudra_weird{a="x\"y,z}",b="\\"} 1.5 1700000000000
`

func TestHistSumCount(t *testing.T) {
	s, c, ok := histSumCount(sampleMetrics, opDurationMetric, prepareLabels)
	if !ok || s != 0.25 || c != 100 {
		t.Errorf("prepare: sum %v count %v found %v, want 0.25 100 true", s, c, ok)
	}
	s, c, ok = histSumCount(sampleMetrics, apiDurationMetric, claimGetLabels)
	if !ok || s != 0.2 || c != 100 {
		t.Errorf("claim GET: sum %v count %v found %v, want 0.2 100 true", s, c, ok)
	}
	// No labels: every series added up.
	if s, c, _ = histSumCount(sampleMetrics, apiDurationMetric, nil); s != 9.2 || c != 103 {
		t.Errorf("all API requests: sum %v count %v, want 9.2 103", s, c)
	}
	if _, _, ok = histSumCount(sampleMetrics, opDurationMetric, map[string]string{"operation": "other"}); ok {
		t.Error("found a series that is not there")
	}
	p, ok := parsePromLine(`gpudra_weird{a="x\"y,z}",b="\\"} 1.5 1700000000000`)
	if !ok || p.name != "gpudra_weird" || p.labels["a"] != `x"y,z}` || p.labels["b"] != `\` || p.value != 1.5 {
		t.Errorf("parsePromLine = %+v, %v", p, ok)
	}
	for _, bad := range []string{"# comment", "", `m{a="x} 1`, "m notanumber"} {
		if _, ok := parsePromLine(bad); ok {
			t.Errorf("parsePromLine(%q) ok", bad)
		}
	}
}

func TestMeanBetweenAndSplit(t *testing.T) {
	before := histReading{sum: 0.25, count: 100, found: true}
	after := histReading{sum: 0.25 + 0.48, count: 100 + 240, found: true}
	m, ok := meanBetween(before, after)
	if !ok || m.n != 240 || m.mean != 2*time.Millisecond {
		t.Errorf("meanBetween = %+v, %v; want 240 observations of 2 ms", m, ok)
	}
	if _, ok := meanBetween(after, before); ok {
		t.Error("a counter reset gave a mean")
	}
	if _, ok := meanBetween(histReading{}, after); ok {
		t.Error("a missing series gave a mean")
	}

	r := &levelResult{prepare: callStats{durations: []time.Duration{4 * time.Millisecond, 5 * time.Millisecond, 6 * time.Millisecond}},
		unprepare: callStats{durations: []time.Duration{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}}}
	r.node = &nodeStats{
		driverPrepare:   histMean{n: 3, mean: 2 * time.Millisecond},
		driverUnprepare: histMean{n: 3, mean: 1500 * time.Microsecond},
		pluginGet:       histMean{n: 3, mean: 1200 * time.Microsecond},
	}
	s, ok := splitOf(r, 700*time.Microsecond)
	// p50 5 ms = GET in the plugin 1.2 + driver 2 + rest 1.8.
	if !ok || s.kubeletP50 != 5*time.Millisecond || s.kubeletMean != 5*time.Millisecond || s.rest != 1800*time.Microsecond || s.getSource != "plugin GET mean" {
		t.Errorf("split %+v", s)
	}
	if s.unprepRest != 500*time.Microsecond {
		t.Errorf("unprepare rest %v, want 0.5 ms", s.unprepRest)
	}
	// Without the plugin's GET figure the host's GET is used.
	r.node.pluginGet = histMean{}
	if s, _ = splitOf(r, 700*time.Microsecond); s.rest != 2300*time.Microsecond || s.getSource != "host GET p50" {
		t.Errorf("split with the host GET %+v", s)
	}
	r.node.metricsErr = "off"
	if _, ok := splitOf(r, 0); ok {
		t.Error("split without metrics")
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// nodeProbe measures, around each level, what the node's processes do: their
// CPU time, the file-system events in the CDI spec directory per phase, and
// the plugin's own histograms.
type nodeProbe struct {
	hz int64
	// pluginPod, when set, is the UID of the plugin pod measured: other
	// plugin processes (a second plugin under test) are not charged.
	pluginPod string
	watcher   *cdiWatcher     // nil: events not counted
	scraper   *metricsScraper // nil: metrics not read
}

// nodeStats is what nodeProbe measured for one level.
type nodeStats struct {
	hz         int64
	cpu        map[string]cpuUse
	events     *[2]fsCounts // prepare phases, unprepare phases; nil: not counted
	eventsErr  string
	metricsErr string // "" with the histograms below read
	route      string // how the metrics were read
	// Observations of the plugin's histograms during the level.
	driverPrepare, driverUnprepare, pluginGet histMean
}

// level runs one level with the node measured: metrics read first and last
// (outside the CPU window, so that the scrapes are not charged), CPU sampled
// right before and after the rounds, events cut after every phase.
func (p *nodeProbe) level(ctx context.Context, b *bencher, c, rounds int) *levelResult {
	ns := &nodeStats{hz: p.hz}
	var before string
	if p.scraper != nil {
		var err error
		if before, err = p.scraper.scrape(ctx); err != nil {
			ns.metricsErr = err.Error()
		}
	} else {
		ns.metricsErr = "off"
	}
	if p.watcher != nil {
		ns.events = &[2]fsCounts{}
		if _, err := p.watcher.cut(); err != nil { // drop what came before the level
			ns.eventsErr = err.Error()
		}
		b.afterPhase = func(prepare bool) {
			counts, err := p.watcher.cut()
			if err != nil {
				if ns.eventsErr == "" {
					ns.eventsErr = err.Error()
				}
				return
			}
			if prepare {
				ns.events[0].add(counts)
			} else {
				ns.events[1].add(counts)
			}
		}
	}
	cpu0 := sampleCPU(p.pluginPod)
	r := b.run(ctx, c, rounds)
	cpu1 := sampleCPU(p.pluginPod)
	b.afterPhase = nil
	ns.cpu = cpuDelta(cpu0, cpu1)
	if ns.metricsErr == "" {
		after, err := p.scraper.scrape(ctx)
		if err != nil {
			ns.metricsErr = err.Error()
		} else {
			ns.route = p.scraper.route
			var ok [3]bool
			ns.driverPrepare, ok[0] = meanBetween(readHist(before, opDurationMetric, prepareLabels), readHist(after, opDurationMetric, prepareLabels))
			ns.driverUnprepare, ok[1] = meanBetween(readHist(before, opDurationMetric, unprepareLabels), readHist(after, opDurationMetric, unprepareLabels))
			ns.pluginGet, ok[2] = meanBetween(readHist(before, apiDurationMetric, claimGetLabels), readHist(after, apiDurationMetric, claimGetLabels))
			if !ok[0] || !ok[1] {
				ns.metricsErr = fmt.Sprintf("no %s series for prepare and unprepare in both scrapes (or the plugin restarted)", opDurationMetric)
			}
		}
	}
	r.node = ns
	return r
}

// cpuLabels are the labels of the CPU table, in order; the sum is of the
// node's processes, the bench's own time is shown apart.
func cpuLabels() []string {
	var out []string
	for _, p := range nodeProcesses {
		out = append(out, p.label)
	}
	return out
}

// cpuPerPair returns ms of CPU time per pair by label, with "sum" (of the
// node's processes, not the bench) and selfLabel.
func (ns *nodeStats) cpuPerPair(pairs int) map[string]float64 {
	out := map[string]float64{}
	var sum uint64
	for _, l := range cpuLabels() {
		u := ns.cpu[l]
		sum += u.ticks
		out[l] = cpuMsPerPair(u.ticks, ns.hz, pairs)
	}
	out["sum"] = cpuMsPerPair(sum, ns.hz, pairs)
	out[selfLabel] = cpuMsPerPair(ns.cpu[selfLabel].ticks, ns.hz, pairs)
	return out
}

// cpuNotes are the notes of the CPU figures by label ("missing", ...).
func (ns *nodeStats) cpuNotes() map[string]string {
	out := map[string]string{}
	for l, u := range ns.cpu {
		if u.note != "" {
			out[l] = u.note
		}
	}
	return out
}

// perCall divides event counts by calls: one value per kind, and the
// containerd refreshes and the total.
func perCall(c fsCounts, calls int) map[string]float64 {
	out := map[string]float64{}
	div := func(n int) float64 {
		if calls <= 0 {
			return 0
		}
		return float64(n) / float64(calls)
	}
	for k, name := range fsKindNames {
		out[name] = div(c.kinds[k])
	}
	out["containerd_refresh"] = div(c.refresh)
	out["total"] = div(c.total())
	return out
}

// prepareSplit is the kubelet-side latency of a prepare split into the
// claim GET, the driver's own time and the rest (gRPC, the helper's work,
// scheduling): rest = kubelet-side p50 - GET - driver mean.
type prepareSplit struct {
	kubeletP50, kubeletMean time.Duration
	hostGet                 time.Duration // p50 from this host
	pluginGet               histMean      // from inside the plugin
	get                     time.Duration // the one the rest is taken with
	getSource               string
	driver                  histMean
	rest                    time.Duration

	unprepareP50 time.Duration
	driverUnprep histMean
	unprepRest   time.Duration // unprepare p50 - driver mean (the helper does no GET)
}

func mean(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t / time.Duration(len(ds))
}

// splitOf splits r's prepare latency; ok is false without the plugin's
// histograms.
func splitOf(r *levelResult, hostGet time.Duration) (s prepareSplit, ok bool) {
	if r.node == nil || r.node.metricsErr != "" {
		return s, false
	}
	s.kubeletP50, s.kubeletMean = summarize(r.prepare.durations).p50, mean(r.prepare.durations)
	s.hostGet, s.pluginGet, s.driver = hostGet, r.node.pluginGet, r.node.driverPrepare
	s.get, s.getSource = hostGet, "host GET p50"
	if s.pluginGet.n > 0 {
		s.get, s.getSource = s.pluginGet.mean, "plugin GET mean"
	}
	s.rest = s.kubeletP50 - s.get - s.driver.mean
	s.unprepareP50, s.driverUnprep = summarize(r.unprepare.durations).p50, r.node.driverUnprepare
	s.unprepRest = s.unprepareP50 - s.driverUnprep.mean
	return s, true
}

// printNodeTables prints the CPU, event and latency-split tables of the
// levels that have node figures.
func printNodeTables(o *options, results []*levelResult, floor summary) {
	var measured []*levelResult
	for _, r := range results {
		if r.node != nil {
			measured = append(measured, r)
		}
	}
	if len(measured) == 0 {
		return
	}
	hz := measured[0].node.hz
	fmt.Printf("CPU time per prepare/unprepare pair in ms (utime+stime of /proc/<pid>/stat, %d ticks/s, over the level's rounds):\n", hz)
	fmt.Printf("%4s |", "C")
	for _, l := range cpuLabels() {
		fmt.Printf(" %14s", l)
	}
	fmt.Printf(" | %9s | %9s\n", "sum", "bench")
	for _, r := range measured {
		pp := r.node.cpuPerPair(o.claims * r.rounds)
		fmt.Printf("%4d |", r.concurrency)
		for _, l := range cpuLabels() {
			fmt.Printf(" %14.3f", pp[l])
		}
		fmt.Printf(" | %9.3f | %9.3f\n", pp["sum"], pp[selfLabel])
		notes := r.node.cpuNotes()
		labels := make([]string, 0, len(notes))
		for l := range notes {
			labels = append(labels, l)
		}
		sort.Strings(labels)
		for _, l := range labels {
			fmt.Printf("     %s: %s\n", l, notes[l])
		}
	}
	fmt.Println()

	if measured[0].node.events != nil {
		fmt.Printf("inotify events in %s per call (containerd refresh: the events containerd's CDI cache re-reads its spec directories on: names *.json/*.yaml, chmod aside):\n", o.cdiDir)
		fmt.Printf("%4s | %-9s |", "C", "call")
		for _, n := range fsKindNames {
			fmt.Printf(" %10s", n)
		}
		fmt.Printf(" | %7s | %18s\n", "total", "containerd refresh")
		for _, r := range measured {
			ev := r.node.events
			for i, kind := range []string{"prepare", "unprepare"} {
				calls := len(r.prepare.durations)
				if i == 1 {
					calls = len(r.unprepare.durations)
				}
				pc := perCall(ev[i], calls)
				fmt.Printf("%4d | %-9s |", r.concurrency, kind)
				for _, n := range fsKindNames {
					fmt.Printf(" %10.2f", pc[n])
				}
				fmt.Printf(" | %7.2f | %18.2f\n", pc["total"], pc["containerd_refresh"])
				if ev[i].overflow > 0 {
					fmt.Printf("     %d inotify queue overflows: the counts are low\n", ev[i].overflow)
				}
			}
			if r.node.eventsErr != "" {
				fmt.Printf("     events: %s\n", r.node.eventsErr)
			}
		}
		fmt.Println()
	}

	fmt.Println("prepare latency split in ms: kubelet-side p50 = claim GET + driver prepare (plugin histogram means) + rest:")
	fmt.Printf("%4s | %9s %9s | %8s %8s | %9s %6s | %9s | %9s %9s %9s\n",
		"C", "prep p50", "mean", "GET host", "GET plug", "driver", "n", "rest", "unpr p50", "driver", "rest")
	for _, r := range measured {
		s, ok := splitOf(r, floor.get)
		if !ok {
			fmt.Printf("%4d | no plugin metrics: %s\n", r.concurrency, r.node.metricsErr)
			continue
		}
		fmt.Printf("%4d | %9.3f %9.3f | %8.3f %8.3f | %9.3f %6.0f | %9.3f | %9.3f %9.3f %9.3f\n",
			r.concurrency, ms(s.kubeletP50), ms(s.kubeletMean), ms(s.hostGet), ms(s.pluginGet.mean),
			ms(s.driver.mean), s.driver.n, ms(s.rest), ms(s.unprepareP50), ms(s.driverUnprep.mean), ms(s.unprepRest))
	}
	if r := measured[len(measured)-1]; r.node.route != "" {
		s, _ := splitOf(r, floor.get)
		fmt.Printf("     rest = p50 - %s - driver mean; metrics from %s\n", s.getSource, r.node.route)
	}
	fmt.Println()
}

type jsonEvents struct {
	Dir       string             `json:"dir"`
	Prepare   map[string]float64 `json:"per_prepare"`
	Unprepare map[string]float64 `json:"per_unprepare"`
	Overflows int                `json:"overflows,omitempty"`
	Error     string             `json:"error,omitempty"`
}

type jsonSplit struct {
	KubeletP50Ms     float64 `json:"kubelet_p50_ms"`
	KubeletMeanMs    float64 `json:"kubelet_mean_ms"`
	HostGetP50Ms     float64 `json:"claim_get_host_p50_ms"`
	PluginGetMeanMs  float64 `json:"claim_get_plugin_mean_ms"`
	PluginGets       float64 `json:"claim_get_plugin_count"`
	DriverPrepMeanMs float64 `json:"driver_prepare_mean_ms"`
	DriverPrepares   float64 `json:"driver_prepare_count"`
	RestMs           float64 `json:"rest_ms"`
	RestGet          string  `json:"rest_uses"`
	DriverUnprepMean float64 `json:"driver_unprepare_mean_ms"`
	DriverUnprepares float64 `json:"driver_unprepare_count"`
	UnprepareRestMs  float64 `json:"unprepare_rest_ms"`
	UnprepareP50Ms   float64 `json:"unprepare_p50_ms"`
}

// addNode adds r's node figures to j.
func addNode(j *jsonResult, o *options, r *levelResult, floor summary) {
	if r.node == nil {
		return
	}
	pp := r.node.cpuPerPair(o.claims * r.rounds)
	j.CPUMsPerPair = map[string]float64{}
	for k, v := range pp {
		j.CPUMsPerPair[k] = round3(v)
	}
	if n := r.node.cpuNotes(); len(n) > 0 {
		j.CPUNotes = n
	}
	if ev := r.node.events; ev != nil {
		je := &jsonEvents{Dir: o.cdiDir, Prepare: map[string]float64{}, Unprepare: map[string]float64{}, Overflows: ev[0].overflow + ev[1].overflow, Error: r.node.eventsErr}
		for k, v := range perCall(ev[0], len(r.prepare.durations)) {
			je.Prepare[k] = round3(v)
		}
		for k, v := range perCall(ev[1], len(r.unprepare.durations)) {
			je.Unprepare[k] = round3(v)
		}
		j.CDIEvents = je
	}
	if s, ok := splitOf(r, floor.get); ok {
		j.Split = &jsonSplit{
			KubeletP50Ms: round3(ms(s.kubeletP50)), KubeletMeanMs: round3(ms(s.kubeletMean)),
			HostGetP50Ms: round3(ms(s.hostGet)), PluginGetMeanMs: round3(ms(s.pluginGet.mean)), PluginGets: s.pluginGet.n,
			DriverPrepMeanMs: round3(ms(s.driver.mean)), DriverPrepares: s.driver.n,
			RestMs: round3(ms(s.rest)), RestGet: s.getSource,
			DriverUnprepMean: round3(ms(s.driverUnprep.mean)), DriverUnprepares: s.driverUnprep.n,
			UnprepareRestMs: round3(ms(s.unprepRest)), UnprepareP50Ms: round3(ms(s.unprepareP50)),
		}
	} else if r.node.metricsErr != "" {
		j.SplitError = r.node.metricsErr
	}
}

// newNodeProbe sets up what the flags ask for; a part that cannot be set up
// is reported and left out.
func newNodeProbe(ctx context.Context, o *options, socket string, scraperFn func() (*metricsScraper, error)) *nodeProbe {
	p := &nodeProbe{hz: clockTicks(), pluginPod: podUIDOfSocket(socket)}
	if o.cdiDir != "" {
		w, err := newCDIWatcher(o.cdiDir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "not counting CDI spec events: %v\n", err)
		} else {
			p.watcher = w
		}
	}
	if !strings.EqualFold(o.metricsURL, "off") {
		s, err := scraperFn()
		if err == nil {
			_, err = s.scrape(ctx)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "not reading the plugin's metrics: %v\n", err)
		} else {
			p.scraper = s
			fmt.Printf("plugin metrics: %s\n", s.route)
		}
	}
	return p
}

func (p *nodeProbe) Close() {
	if p.watcher != nil {
		p.watcher.Close()
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"github.com/gpudra/gpudra/pkg/durable"
)

type bencher struct {
	client  drapb.DRAPluginClient
	claims  []*drapb.Claim
	timeout time.Duration
	// afterPhase, when set, is called after every prepare phase (true) and
	// unprepare phase (false) of a level; its time is not part of the
	// level's wall time.
	afterPhase func(prepare bool)
}

type callStats struct {
	durations []time.Duration
	errors    int
}

type levelResult struct {
	concurrency int
	rounds      int
	prepare     callStats
	unprepare   callStats
	wall        time.Duration // total of all rounds, prepare and unprepare
	firstErr    string
	node        *nodeStats // what the node's processes did (nil: not measured)
}

type callOutcome struct {
	d   time.Duration
	err string
}

// run does rounds rounds of "prepare all claims, then unprepare all claims",
// one claim per call, c calls in flight.
func (b *bencher) run(ctx context.Context, c, rounds int) *levelResult {
	r := &levelResult{concurrency: c, rounds: rounds}
	start := time.Now()
	var hooks time.Duration
	after := func(prepare bool) {
		if b.afterPhase != nil {
			t := time.Now()
			b.afterPhase(prepare)
			hooks += time.Since(t)
		}
	}
	for i := 0; i < rounds && ctx.Err() == nil; i++ {
		r.record(&r.prepare, b.phase(ctx, c, b.prepareOne))
		after(true)
		r.record(&r.unprepare, b.phase(ctx, c, b.unprepareOne))
		after(false)
	}
	r.wall = time.Since(start) - hooks
	return r
}

func (r *levelResult) record(s *callStats, outs []callOutcome) {
	for _, o := range outs {
		s.durations = append(s.durations, o.d)
		if o.err != "" {
			s.errors++
			if r.firstErr == "" {
				r.firstErr = o.err
				fmt.Fprintf(os.Stderr, "concurrency %d: first error: %s\n", r.concurrency, o.err)
			}
		}
	}
}

// phase calls fn once per claim with a pool of c workers.
func (b *bencher) phase(ctx context.Context, c int, fn func(context.Context, *drapb.Claim) string) []callOutcome {
	outs := make([]callOutcome, len(b.claims))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < c && w < len(b.claims); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := time.Now()
				err := fn(ctx, b.claims[i])
				outs[i] = callOutcome{d: time.Since(t), err: err}
			}
		}()
	}
	for i := range b.claims {
		next <- i
	}
	close(next)
	wg.Wait()
	return outs
}

func (b *bencher) prepareOne(ctx context.Context, claim *drapb.Claim) string {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	resp, err := b.client.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{claim}})
	if err != nil {
		return fmt.Sprintf("prepare %s/%s: %v", claim.Namespace, claim.Name, err)
	}
	res := resp.Claims[claim.Uid]
	switch {
	case res == nil:
		return fmt.Sprintf("prepare %s/%s: no result for the claim in the response", claim.Namespace, claim.Name)
	case res.Error != "":
		return fmt.Sprintf("prepare %s/%s: %s", claim.Namespace, claim.Name, res.Error)
	case len(res.Devices) == 0:
		return fmt.Sprintf("prepare %s/%s: no devices in the result", claim.Namespace, claim.Name)
	}
	return ""
}

func (b *bencher) unprepareOne(ctx context.Context, claim *drapb.Claim) string {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	resp, err := b.client.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{claim}})
	if err != nil {
		return fmt.Sprintf("unprepare %s/%s: %v", claim.Namespace, claim.Name, err)
	}
	res := resp.Claims[claim.Uid]
	switch {
	case res == nil:
		return fmt.Sprintf("unprepare %s/%s: no result for the claim in the response", claim.Namespace, claim.Name)
	case res.Error != "":
		return fmt.Sprintf("unprepare %s/%s: %s", claim.Namespace, claim.Name, res.Error)
	}
	return ""
}

type summary struct {
	p50, p90, p99, max time.Duration
	get                time.Duration // p50 of a claim GET (set on the floor summary only)
}

// summarize returns nearest-rank percentiles.
func summarize(ds []time.Duration) summary {
	if len(ds) == 0 {
		return summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	pct := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return summary{p50: pct(0.50), p90: pct(0.90), p99: pct(0.99), max: s[len(s)-1]}
}

// measureFloor times n durable 2 KiB writes (temp + fsync + rename +
// directory fsync) of one file in dir, then removes it.
func measureFloor(dir string, n int) (summary, error) {
	path := filepath.Join(dir, fmt.Sprintf("gpudra-bench-floor-%d.dat", os.Getpid()))
	data := make([]byte, 2048)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		data[0] = byte('a' + i%26)
		t := time.Now()
		if err := durable.WriteFile(path, data, 0o644); err != nil {
			_ = os.Remove(path)
			return summary{}, fmt.Errorf("measuring the durable-write floor in %s: %w", dir, err)
		}
		ds = append(ds, time.Since(t))
	}
	if err := durable.Remove(path); err != nil {
		return summary{}, fmt.Errorf("removing %s: %w", path, err)
	}
	return summarize(ds), nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func (r *levelResult) pairsPerSec(claims int) float64 {
	if r.wall <= 0 {
		return 0
	}
	return float64(claims*r.rounds) / r.wall.Seconds()
}

func floorRatio(prepareP50, floor time.Duration) float64 {
	if floor <= 0 {
		return 0
	}
	return float64(prepareP50) / float64(2*floor)
}

func printTable(o *options, results []*levelResult, floor summary) {
	fmt.Printf("\n%d claims, %d rounds per level; latencies per call in ms; durable-write floor p50 %.3f ms; claim GET p50 %.3f ms\n",
		o.claims, o.rounds, ms(floor.p50), ms(floor.get))
	fmt.Printf("%4s | %9s %9s %9s %9s %6s | %9s %9s %9s %9s %6s | %9s | %10s\n",
		"C", "prep p50", "p90", "p99", "max", "errs", "unpr p50", "p90", "p99", "max", "errs", "pairs/s", "p50/2floor")
	for _, r := range results {
		p, u := summarize(r.prepare.durations), summarize(r.unprepare.durations)
		fmt.Printf("%4d | %9.3f %9.3f %9.3f %9.3f %6d | %9.3f %9.3f %9.3f %9.3f %6d | %9.1f | %10.2f\n",
			r.concurrency, ms(p.p50), ms(p.p90), ms(p.p99), ms(p.max), r.prepare.errors,
			ms(u.p50), ms(u.p90), ms(u.p99), ms(u.max), r.unprepare.errors,
			r.pairsPerSec(o.claims), floorRatio(p.p50, floor.p50))
		if r.firstErr != "" {
			fmt.Printf("     first error: %s\n", r.firstErr)
		}
	}
	fmt.Println()
	printNodeTables(o, results, floor)
}

type jsonStats struct {
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Errs int     `json:"errors"`
}

type jsonResult struct {
	Concurrency  int       `json:"concurrency"`
	Claims       int       `json:"claims"`
	Rounds       int       `json:"rounds"`
	Prepare      jsonStats `json:"prepare"`
	Unprepare    jsonStats `json:"unprepare"`
	PairsPerSec  float64   `json:"pairs_per_sec"`
	FsyncFloorMs float64   `json:"fsync_floor_ms"`
	Ratio        float64   `json:"prepare_p50_over_2x_floor"`
	ClaimGetMs   float64   `json:"claim_get_p50_ms"`
	// The node's figures (see node.go); absent when not measured.
	CPUMsPerPair map[string]float64 `json:"cpu_ms_per_pair,omitempty"`
	CPUNotes     map[string]string  `json:"cpu_notes,omitempty"`
	CDIEvents    *jsonEvents        `json:"cdi_events,omitempty"`
	Split        *jsonSplit         `json:"prepare_split,omitempty"`
	SplitError   string             `json:"prepare_split_error,omitempty"`
}

func toJSONStats(s callStats) jsonStats {
	x := summarize(s.durations)
	return jsonStats{P50: round3(ms(x.p50)), P90: round3(ms(x.p90)), P99: round3(ms(x.p99)), Max: round3(ms(x.max)), Errs: s.errors}
}

func jsonLine(o *options, r *levelResult, floor summary) string {
	j := jsonResult{
		Concurrency:  r.concurrency,
		Claims:       o.claims,
		Rounds:       r.rounds,
		Prepare:      toJSONStats(r.prepare),
		Unprepare:    toJSONStats(r.unprepare),
		PairsPerSec:  round3(r.pairsPerSec(o.claims)),
		FsyncFloorMs: round3(ms(floor.p50)),
		Ratio:        round3(floorRatio(summarize(r.prepare.durations).p50, floor.p50)),
		ClaimGetMs:   round3(ms(floor.get)),
	}
	addNode(&j, o, r, floor)
	b, err := json.Marshal(j)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return string(b)
}

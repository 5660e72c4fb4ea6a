package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/client-go/kubernetes"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
)

// target is one plugin under test: its driver, socket and claims, with the
// bencher and node probe that measure it. Without --compare-driver there is
// one; with it, two plugin builds registered under two driver names run on
// the node side by side and are measured in turns, in one run.
type target struct {
	o        *options // the options with this target's driver, socket and namespace
	socket   string
	conn     *grpc.ClientConn
	claims   []*resourceapi.ResourceClaim
	get      summary // claim GET from this host
	bencher  *bencher
	probe    *nodeProbe
	createNS bool
}

// targets returns the options of each plugin under test: o itself, then,
// with --compare-driver, o with the other driver and socket.
func (o *options) targets() []*options {
	out := []*options{o}
	if o.compareDriver != "" {
		c := *o
		c.driver, c.socket = o.compareDriver, o.compareSocket
		if c.socket == "" {
			c.socket = filepath.Join(filepath.Dir(filepath.Dir(o.socket)), o.compareDriver, "dra.sock")
		}
		out = append(out, &c)
	}
	return out
}

// setupTarget connects to the plugin of o.driver, creates and allocates its
// claims, times the claim GET from this host and runs the warm-up. The
// returned target, even with an error, holds what was set up for close.
func setupTarget(ctx context.Context, cs kubernetes.Interface, o *options) (*target, error) {
	socket, err := resolveSocket(o.socket)
	if err != nil {
		return nil, fmt.Errorf("driver %s: %w", o.driver, err)
	}
	devices, err := freeDevices(ctx, cs, o.driver, o.node)
	if err != nil {
		return nil, err
	}
	if o.shareMemory != nil && len(devices) > 0 {
		// Every claim is a share of the first free GPU.
		shared := make([]poolDevice, o.claims)
		for i := range shared {
			shared[i] = devices[0]
		}
		devices = shared
	}
	if o.claims > len(devices) {
		return nil, fmt.Errorf("--claims %d exceeds the %d free devices of driver %s on node %s: each claim gets its own device",
			o.claims, len(devices), o.driver, o.node)
	}
	fmt.Printf("node %s, driver %s, socket %s, %d free devices, %d claims\n", o.node, o.driver, socket, len(devices), o.claims)
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("gRPC client for %s: %w", socket, err)
	}
	t := &target{o: o, socket: socket, conn: conn}
	if t.createNS, err = ensureNamespace(ctx, cs, o.namespace); err != nil {
		return t, err
	}
	if t.claims, err = createClaims(ctx, cs, o, devices[:o.claims]); err != nil {
		return t, err
	}
	pbClaims := make([]*drapb.Claim, len(t.claims))
	for i, c := range t.claims {
		pbClaims[i] = &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
	}
	// The plugin helper GETs each claim from the API server before preparing
	// it: time that call from here too, to split prepare latency into API
	// and node work.
	if t.get, err = measureGet(ctx, cs, t.claims[0], 100); err != nil {
		return t, err
	}
	fmt.Printf("ResourceClaim GET from this host (100 calls): p50 %.3f ms, p90 %.3f ms\n", ms(t.get.p50), ms(t.get.p90))
	t.bencher = &bencher{client: drapb.NewDRAPluginClient(conn), claims: pbClaims, timeout: o.callTimeout}
	t.probe = newNodeProbe(ctx, o, socket, func() (*metricsScraper, error) {
		return newMetricsScraper(ctx, cs, o.node, socket, o.metricsURL)
	})
	if o.warmup > 0 {
		r := t.bencher.run(ctx, o.concurrency[0], o.warmup)
		if ctx.Err() != nil {
			return t, ctx.Err()
		}
		fmt.Printf("warm-up of %s: %d round(s) at concurrency %d, %d prepare / %d unprepare errors\n",
			o.driver, o.warmup, o.concurrency[0], r.prepare.errors, r.unprepare.errors)
		if r.firstErr != "" {
			fmt.Printf("  first error: %s\n", r.firstErr)
		}
	}
	return t, nil
}

// close unprepares and deletes the target's claims (and the namespace if it
// created it) and closes its connection.
func (t *target) close(ctx context.Context, cs kubernetes.Interface) error {
	if t.probe != nil {
		t.probe.Close()
	}
	err := cleanup(ctx, cs, drapb.NewDRAPluginClient(t.conn), t.o, t.claims, t.createNS)
	_ = t.conn.Close()
	return err
}

// runCompare measures the targets in turns: every repeat runs all levels of
// each target, in the order A B in even repeats and B A in odd ones, so that
// the machine's drift falls on both. It prints each target's tables, then
// per level the medians over the repeats of each target and the median of
// the per-repeat ratios of the first target over the second (a ratio within
// one repeat, taken minutes apart at most).
func runCompare(ctx context.Context, o *options, targets []*target, floor summary) error {
	results := make([][][]*levelResult, len(targets)) // target, repeat, level
	for rep := 0; rep < o.repeat; rep++ {
		order := []int{0, 1}
		if rep%2 == 1 {
			order = []int{1, 0}
		}
		for _, ti := range order {
			t := targets[ti]
			var levels []*levelResult
			for _, c := range o.concurrency {
				r := t.probe.level(ctx, t.bencher, c, o.rounds)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				levels = append(levels, r)
			}
			fmt.Printf("repeat %d of %d, driver %s:", rep+1, o.repeat, t.o.driver)
			f := floor
			f.get = t.get.p50
			printTable(t.o, levels, f)
			for _, r := range levels {
				fmt.Println(jsonLine(t.o, r, f))
			}
			results[ti] = append(results[ti], levels)
		}
	}
	cmp := compareTargets(o, targets[0].o.driver, targets[1].o.driver, results[0], results[1])
	printComparison(cmp)
	for ti, reps := range results {
		for _, levels := range reps {
			for _, r := range levels {
				if r.prepare.errors+r.unprepare.errors > 0 {
					return fmt.Errorf("driver %s, concurrency %d: %d prepare and %d unprepare errors", targets[ti].o.driver, r.concurrency, r.prepare.errors, r.unprepare.errors)
				}
			}
		}
	}
	return nil
}

// comparison is the same-run comparison of two targets, per level.
type comparison struct {
	A       string            `json:"a"`
	B       string            `json:"b"`
	Repeats int               `json:"repeats"`
	Levels  []comparisonLevel `json:"levels"`
}

// comparisonLevel holds, per figure, the median over the repeats for A and
// for B and the median of the per-repeat ratios A/B.
type comparisonLevel struct {
	Concurrency int                   `json:"concurrency"`
	Figures     map[string]figurePair `json:"figures"`
}

type figurePair struct {
	A     float64 `json:"a"`
	B     float64 `json:"b"`
	Ratio float64 `json:"ratio_a_over_b"`
}

// comparedFigures are the figures of one level that the comparison prints,
// in order.
var comparedFigures = []string{
	"pairs/s", "prepare p50 ms", "prepare p99 ms", "unprepare p50 ms",
	"containerd CPU ms/pair", "plugin CPU ms/pair", "node CPU ms/pair",
	"CDI events/prepare", "CDI events/unprepare", "containerd refreshes/pair",
}

// levelFigures extracts comparedFigures from one level; a figure that was
// not measured is absent.
func levelFigures(o *options, r *levelResult) map[string]float64 {
	f := map[string]float64{
		"pairs/s":          r.pairsPerSec(o.claims),
		"prepare p50 ms":   ms(summarize(r.prepare.durations).p50),
		"prepare p99 ms":   ms(summarize(r.prepare.durations).p99),
		"unprepare p50 ms": ms(summarize(r.unprepare.durations).p50),
	}
	if r.node == nil {
		return f
	}
	if r.node.cpu != nil {
		pp := r.node.cpuPerPair(o.claims * r.rounds)
		f["containerd CPU ms/pair"] = pp["containerd"]
		f["plugin CPU ms/pair"] = pp["plugin"]
		f["node CPU ms/pair"] = pp["sum"]
	}
	if ev := r.node.events; ev != nil {
		p := perCall(ev[0], len(r.prepare.durations))
		u := perCall(ev[1], len(r.unprepare.durations))
		f["CDI events/prepare"] = p["total"]
		f["CDI events/unprepare"] = u["total"]
		f["containerd refreshes/pair"] = p["containerd_refresh"] + u["containerd_refresh"]
	}
	return f
}

// compareTargets builds the comparison of a and b (repeat, level).
func compareTargets(o *options, nameA, nameB string, a, b [][]*levelResult) comparison {
	c := comparison{A: nameA, B: nameB, Repeats: min(len(a), len(b))}
	if c.Repeats == 0 {
		return c
	}
	for li := range a[0] {
		l := comparisonLevel{Concurrency: a[0][li].concurrency, Figures: map[string]figurePair{}}
		figA, figB := make([]map[string]float64, c.Repeats), make([]map[string]float64, c.Repeats)
		for rep := range c.Repeats {
			figA[rep], figB[rep] = levelFigures(o, a[rep][li]), levelFigures(o, b[rep][li])
		}
		for _, name := range comparedFigures {
			var as, bs, ratios []float64
			for rep := 0; rep < c.Repeats; rep++ {
				fa, okA := figA[rep][name]
				fb, okB := figB[rep][name]
				if !okA || !okB {
					continue
				}
				as, bs = append(as, fa), append(bs, fb)
				if fb != 0 {
					ratios = append(ratios, fa/fb)
				}
			}
			if len(as) == 0 {
				continue
			}
			l.Figures[name] = figurePair{A: round3(median(as)), B: round3(median(bs)), Ratio: round3(median(ratios))}
		}
		c.Levels = append(c.Levels, l)
	}
	return c
}

func printComparison(c comparison) {
	fmt.Printf("same-run comparison, A = %s, B = %s, medians over %d repeats (ratio: median of the per-repeat A/B):\n", c.A, c.B, c.Repeats)
	for _, l := range c.Levels {
		fmt.Printf("  C=%d\n", l.Concurrency)
		fmt.Printf("    %-26s %12s %12s %8s\n", "figure", "A", "B", "A/B")
		for _, name := range comparedFigures {
			fp, ok := l.Figures[name]
			if !ok {
				continue
			}
			ratio := fmt.Sprintf("%.2f", fp.Ratio)
			if fp.B == 0 {
				ratio = "-"
			}
			fmt.Printf("    %-26s %12.3f %12.3f %8s\n", name, fp.A, fp.B, ratio)
		}
	}
	if b, err := json.Marshal(map[string]comparison{"comparison": c}); err == nil {
		fmt.Println(string(b))
	} else {
		fmt.Fprintln(os.Stderr, "encoding the comparison:", err)
	}
}

// podUIDOfSocket returns the plugin pod's UID that a rolling-update socket
// name carries (dra-<pod UID>.sock), or "".
func podUIDOfSocket(socket string) string {
	base := filepath.Base(socket)
	if !strings.HasPrefix(base, "dra-") || !strings.HasSuffix(base, ".sock") {
		return ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(base, "dra-"), ".sock")
}

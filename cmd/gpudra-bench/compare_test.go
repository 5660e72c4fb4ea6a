package main

import (
	"testing"
	"time"
)

func cmpLevel(c int, prepare time.Duration, wall time.Duration) *levelResult {
	r := &levelResult{concurrency: c, rounds: 1, wall: wall}
	for range 4 {
		r.prepare.durations = append(r.prepare.durations, prepare)
		r.unprepare.durations = append(r.unprepare.durations, prepare/2)
	}
	return r
}

// TestCompareTargetsTakesMediansAndPerRepeatRatios: the comparison holds
// each target's median over the repeats and the median of the per-repeat
// ratios, which cancels a drift that both targets see within a repeat.
func TestCompareTargetsTakesMediansAndPerRepeatRatios(t *testing.T) {
	o := &options{claims: 4}
	// The machine gets slower from repeat to repeat; A is twice as fast as
	// B within every repeat.
	var a, b [][]*levelResult
	for _, slow := range []time.Duration{1, 3, 9} {
		a = append(a, []*levelResult{cmpLevel(1, slow*time.Millisecond, slow*100*time.Millisecond)})
		b = append(b, []*levelResult{cmpLevel(1, 2*slow*time.Millisecond, 2*slow*100*time.Millisecond)})
	}
	c := compareTargets(o, "a", "b", a, b)
	if c.Repeats != 3 || len(c.Levels) != 1 {
		t.Fatalf("comparison %+v", c)
	}
	fig := c.Levels[0].Figures
	if p := fig["prepare p50 ms"]; p.A != 3 || p.B != 6 || p.Ratio != 0.5 {
		t.Errorf("prepare p50: %+v, want medians 3 and 6 ms and ratio 0.5", p)
	}
	// 4 pairs in 0.3 s vs 0.6 s (median repeat).
	if p := fig["pairs/s"]; p.Ratio != 2 || p.A <= p.B {
		t.Errorf("pairs/s: %+v, want ratio 2", p)
	}
	if _, ok := fig["containerd CPU ms/pair"]; ok {
		t.Error("a figure that was not measured is in the comparison")
	}
}

func TestPodUIDOfSocket(t *testing.T) {
	for socket, want := range map[string]string{
		"/var/lib/kubelet/plugins/gpu.nvidia.com/dra-0f3c2a1e-1111-4222-8333-444455556666.sock": "0f3c2a1e-1111-4222-8333-444455556666",
		"/var/lib/kubelet/plugins/gpu.nvidia.com/dra.sock":                                      "",
		"dra-x.socket": "",
	} {
		if got := podUIDOfSocket(socket); got != want {
			t.Errorf("podUIDOfSocket(%q) = %q, want %q", socket, got, want)
		}
	}
}

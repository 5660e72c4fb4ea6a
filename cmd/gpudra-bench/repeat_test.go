package main

import (
	"testing"
	"time"
)

// level makes a levelResult of n prepares taking d each, over wall time.
func level(c, n int, d, wall time.Duration) *levelResult {
	r := &levelResult{concurrency: c, rounds: 1, wall: wall}
	for range n {
		r.prepare.durations = append(r.prepare.durations, d)
		r.unprepare.durations = append(r.unprepare.durations, d)
	}
	return r
}

func TestSummarizeRepeatsTakesRatiosWithinARepeat(t *testing.T) {
	floor := []summary{{p50: time.Millisecond}, {p50: time.Millisecond}, {p50: 2 * time.Millisecond}}
	// 8 claims per level; repeat 2 runs on a machine twice as slow, but C=8
	// is 2x C=1 within every repeat.
	reps := [][]*levelResult{
		{level(1, 8, 4*time.Millisecond, 80*time.Millisecond), level(8, 8, 9*time.Millisecond, 40*time.Millisecond)},
		{level(1, 8, 8*time.Millisecond, 160*time.Millisecond), level(8, 8, 18*time.Millisecond, 80*time.Millisecond)},
		{level(1, 8, 5*time.Millisecond, 100*time.Millisecond), level(8, 8, 11*time.Millisecond, 50*time.Millisecond)},
	}
	s := summarizeRepeats(8, reps, floor)
	if s.Repeats != 3 || len(s.Levels) != 2 {
		t.Fatalf("summary %+v", s)
	}
	if s.ThroughputRatio != 2 || len(s.PerRepeatRatios) != 3 {
		t.Errorf("throughput ratio %v (per repeat %v), want 2", s.ThroughputRatio, s.PerRepeatRatios)
	}
	if got := s.Levels[0].PrepareP50Ms; got != 5 {
		t.Errorf("median C=1 prepare p50 %v ms, want 5", got)
	}
	if got := s.Levels[0].PairsPerSec; got != 80 {
		t.Errorf("median C=1 pairs/s %v, want 80", got)
	}
	// p50/(2 x floor): 2, 4, 1.25 -> median 2.
	if got := s.Levels[0].FloorRatio; got != 2 {
		t.Errorf("median C=1 floor ratio %v, want 2", got)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

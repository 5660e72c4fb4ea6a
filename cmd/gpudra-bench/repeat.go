package main

import (
	"encoding/json"
	"fmt"
	"slices"
)

// repeatSummary are the medians over the repeats of each level, and the
// median of the per-repeat throughput ratio of the last level to the first
// (e.g. C=8 over C=1): ratios are taken within one repeat, so that the
// machine's drift between repeats cancels out.
type repeatSummary struct {
	Repeats int                  `json:"repeats"`
	Levels  []repeatLevelSummary `json:"levels"`
	// ThroughputRatio is pairs/s of the last level over the first, median
	// over the repeats; PerRepeatRatios are the values it is taken from.
	ThroughputRatio float64   `json:"throughput_ratio_last_over_first"`
	PerRepeatRatios []float64 `json:"per_repeat_ratios"`
}

type repeatLevelSummary struct {
	Concurrency   int       `json:"concurrency"`
	PrepareP50Ms  float64   `json:"median_prepare_p50_ms"`
	PairsPerSec   float64   `json:"median_pairs_per_sec"`
	FloorRatio    float64   `json:"median_prepare_p50_over_2x_floor"`
	PrepareP50sMs []float64 `json:"prepare_p50s_ms"`
}

// summarizeRepeats computes the repeatSummary of reps (one slice of levels
// per repeat, in the same level order) with floors[i] the durable-write floor
// measured for repeat i's ratio.
func summarizeRepeats(claims int, reps [][]*levelResult, floors []summary) repeatSummary {
	s := repeatSummary{Repeats: len(reps)}
	if len(reps) == 0 || len(reps[0]) == 0 {
		return s
	}
	for li := range reps[0] {
		var p50s, pairs, ratios []float64
		for ri, levels := range reps {
			p50 := summarize(levels[li].prepare.durations).p50
			p50s = append(p50s, round3(ms(p50)))
			pairs = append(pairs, levels[li].pairsPerSec(claims))
			ratios = append(ratios, floorRatio(p50, floors[ri].p50))
		}
		s.Levels = append(s.Levels, repeatLevelSummary{
			Concurrency:   reps[0][li].concurrency,
			PrepareP50Ms:  round3(median(p50s)),
			PairsPerSec:   round3(median(pairs)),
			FloorRatio:    round3(median(ratios)),
			PrepareP50sMs: p50s,
		})
	}
	last := len(reps[0]) - 1
	for _, levels := range reps {
		if first := levels[0].pairsPerSec(claims); first > 0 {
			s.PerRepeatRatios = append(s.PerRepeatRatios, round3(levels[last].pairsPerSec(claims)/first))
		}
	}
	s.ThroughputRatio = round3(median(s.PerRepeatRatios))
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printRepeatSummary(s repeatSummary) {
	fmt.Printf("medians over %d repeats:\n", s.Repeats)
	for _, l := range s.Levels {
		fmt.Printf("  C=%d: prepare p50 %.3f ms %v, %.1f pairs/s, p50/2floor %.2f\n", l.Concurrency, l.PrepareP50Ms, l.PrepareP50sMs, l.PairsPerSec, l.FloorRatio)
	}
	if len(s.Levels) > 1 {
		fmt.Printf("  throughput C=%d / C=%d: %.2fx (per repeat %v)\n", s.Levels[len(s.Levels)-1].Concurrency, s.Levels[0].Concurrency, s.ThroughputRatio, s.PerRepeatRatios)
	}
	b, err := json.Marshal(map[string]repeatSummary{"summary": s})
	if err == nil {
		fmt.Println(string(b))
	}
}

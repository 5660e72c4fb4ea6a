package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Summary counts the results per status.
type Summary struct {
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
}

// Summary returns the counts of r's results.
func (r *Report) Summary() Summary {
	return Summary{Pass: r.Count(Pass), Warn: r.Count(Warn), Fail: r.Count(Fail)}
}

// WriteTable writes the report as an aligned CHECK | STATUS | DETAIL | FIX
// table and a summary line.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL\tFIX")
	for _, res := range r.Results {
		fix := res.Fix
		if fix == "" {
			fix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", oneLine(res.Check), res.Status, oneLine(res.Detail), oneLine(fix))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := r.Summary()
	_, err := fmt.Fprintf(w, "\n%d passed, %d warnings, %d failed\n", s.Pass, s.Warn, s.Fail)
	return err
}

// WriteJSON writes the report as one JSON document:
// {"results": [{"check", "status", "detail", "fix"}...], "summary": {...}}.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Results []Result `json:"results"`
		Summary Summary  `json:"summary"`
	}{Results: r.Results, Summary: r.Summary()})
}

// oneLine keeps a table cell on one line; tabs would break the alignment.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\t", " ").Replace(s)
}

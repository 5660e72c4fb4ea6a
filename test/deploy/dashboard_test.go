package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/gpudra/gpudra/pkg/metrics"
)

var dashboardFile = filepath.Join(chartDir, "dashboards", "gpudra-dashboard.json")

// targetLabels are the labels that the scrape adds to every series (the
// chart's monitors relabel the pod's node into node).
var targetLabels = map[string]bool{"node": true, "instance": true, "job": true, "namespace": true, "pod": true, "service": true, "container": true, "endpoint": true}

// registered returns the plugin's metric families by the names PromQL uses
// for them (a histogram as its _bucket, _sum and _count series), each with
// its label names.
func registered(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := metrics.New()
	// Vectors are gathered once they have a child.
	m.Observe(metrics.OpPrepare, time.Now(), nil)
	m.StaleClaimsRemoved.WithLabelValues(metrics.TriggerSweep).Inc()
	m.APIRequestDuration.WithLabelValues("GET", "resourceclaims").Observe(0.001)
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, f := range families {
		labels := map[string]bool{}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		if f.GetType() == dto.MetricType_HISTOGRAM {
			out[f.GetName()+"_sum"] = labels
			out[f.GetName()+"_count"] = labels
			withLE := map[string]bool{"le": true}
			for l := range labels {
				withLE[l] = true
			}
			out[f.GetName()+"_bucket"] = withLE
			continue
		}
		out[f.GetName()] = labels
	}
	return out
}

// exprs collects every PromQL expression of the dashboard: the panels'
// targets and the template variables' queries.
func exprs(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			exprs(x, out)
		}
	case []any:
		for _, x := range v {
			exprs(x, out)
		}
	}
}

var (
	metricRef   = regexp.MustCompile(`\b(gpudra_[a-z0-9_]+)\b(\{[^}]*\})?`)
	matcherName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	grouping    = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	labelValues = regexp.MustCompile(`label_values\(\s*(gpudra_[a-z0-9_]+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// TestDashboardUsesRegisteredMetrics: every metric the dashboard's PromQL
// names is registered by pkg/metrics, and every label it matches or groups
// by is one of those metrics' labels (or a label the scrape adds).
func TestDashboardUsesRegisteredMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var all []string
	exprs(dash, &all)
	if len(all) == 0 {
		t.Fatal("the dashboard has no PromQL")
	}
	known := registered(t)
	used := map[string]bool{}
	for _, e := range all {
		exprLabels := map[string]bool{}
		for k := range targetLabels {
			exprLabels[k] = true
		}
		for _, m := range metricRef.FindAllStringSubmatch(e, -1) {
			name := m[1]
			labels, ok := known[name]
			if !ok {
				t.Errorf("%q: metric %s is not registered by pkg/metrics", e, name)
				continue
			}
			used[name] = true
			for l := range labels {
				exprLabels[l] = true
			}
			for _, mm := range matcherName.FindAllStringSubmatch(m[2], -1) {
				if l := mm[1]; !labels[l] && !targetLabels[l] {
					t.Errorf("%q: %s has no label %q (it has %v)", e, name, l, keys(labels))
				}
			}
		}
		for _, g := range grouping.FindAllStringSubmatch(e, -1) {
			for _, l := range strings.Split(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !exprLabels[l] {
					t.Errorf("%q: groups by %q, which none of its metrics has", e, l)
				}
			}
		}
		for _, lv := range labelValues.FindAllStringSubmatch(e, -1) {
			if labels, ok := known[lv[1]]; ok && !labels[lv[2]] && !targetLabels[lv[2]] {
				t.Errorf("%q: %s has no label %q", e, lv[1], lv[2])
			}
		}
	}
	// The panels the dashboard promises.
	for _, name := range []string{"gpudra_claim_operations_total", "gpudra_claim_operation_duration_seconds_bucket",
		"gpudra_unhealthy_devices", "gpudra_health_monitor_up", "gpudra_api_request_duration_seconds_bucket"} {
		if !used[name] {
			t.Errorf("the dashboard does not use %s", name)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

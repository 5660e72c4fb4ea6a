package metrics

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientmetrics "k8s.io/client-go/tools/metrics"
)

// apiLatency is the histogram client-go's request latencies go to: that of
// the Metrics whose ObserveAPIRequests ran last (client-go takes one
// process-wide hook, and tests start several plugins in one process).
var (
	apiLatency      atomic.Pointer[prometheus.HistogramVec]
	registerLatency sync.Once
)

type latencyAdapter struct{}

func (latencyAdapter) Observe(_ context.Context, verb string, u url.URL, latency time.Duration) {
	if h := apiLatency.Load(); h != nil {
		h.WithLabelValues(verb, APIResource(u.Path)).Observe(latency.Seconds())
	}
}

// ObserveAPIRequests makes the latency of every Kubernetes API request of
// this process (client-go) an observation of
// gpudra_api_request_duration_seconds{verb,resource}: the kubelet-plugin
// helper GETs each claim before it calls the driver, so that GET is part of
// every prepare.
func (m *Metrics) ObserveAPIRequests() {
	apiLatency.Store(m.APIRequestDuration)
	registerLatency.Do(func() {
		clientmetrics.Register(clientmetrics.RegisterOpts{RequestLatency: latencyAdapter{}})
	})
}

// APIResource returns the resource of an API request path, e.g.
// "resourceclaims" for /apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c,
// so that the label does not carry object names; "other" for paths that are
// not resource requests (discovery, /version...).
func APIResource(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var rest []string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		rest = parts[3:]
	default:
		return "other"
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		rest = rest[2:]
	}
	if len(rest) == 0 || rest[0] == "" {
		return "other"
	}
	return rest[0]
}

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The plugin's histograms (pkg/metrics) that split a prepare: the driver's
// own time per operation, and the claim GET that the kubelet-plugin helper
// does before it calls the driver.
const (
	opDurationMetric  = "gpudra_claim_operation_duration_seconds"
	apiDurationMetric = "gpudra_api_request_duration_seconds"
)

var (
	prepareLabels   = map[string]string{"operation": "prepare"}
	unprepareLabels = map[string]string{"operation": "unprepare"}
	claimGetLabels  = map[string]string{"verb": "GET", "resource": "resourceclaims"}
)

// promSample is one sample line of the Prometheus text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

// parsePromLine parses `name{k="v",...} value [timestamp]`; ok is false for
// comments, blank lines and lines it cannot read.
func parsePromLine(line string) (s promSample, ok bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return s, false
	}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, false
	}
	s.name, line = line[:i], line[i:]
	s.labels = map[string]string{}
	if line[0] == '{' {
		line = line[1:]
		for {
			line = strings.TrimLeft(line, " ,")
			if line == "" {
				return s, false
			}
			if line[0] == '}' {
				line = line[1:]
				break
			}
			eq := strings.IndexByte(line, '=')
			if eq <= 0 || len(line) < eq+2 || line[eq+1] != '"' {
				return s, false
			}
			key := strings.TrimSpace(line[:eq])
			line = line[eq+2:]
			var v strings.Builder
			closed := false
			for j := 0; j < len(line); j++ {
				c := line[j]
				if c == '\\' && j+1 < len(line) {
					j++
					switch line[j] {
					case 'n':
						v.WriteByte('\n')
					default: // \\ and \"
						v.WriteByte(line[j])
					}
					continue
				}
				if c == '"' {
					line, closed = line[j+1:], true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return s, false
			}
			s.labels[key] = v.String()
		}
	}
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return s, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, false
	}
	s.value = v
	return s, true
}

// histSumCount returns the _sum and _count of histogram metric in the
// Prometheus text exposition text, added over the series whose labels hold
// all of want; found is false when there is no such _count.
func histSumCount(text, metric string, want map[string]string) (sum, count float64, found bool) {
	for _, line := range strings.Split(text, "\n") {
		s, ok := parsePromLine(line)
		if !ok || !strings.HasPrefix(s.name, metric+"_") {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		switch s.name {
		case metric + "_sum":
			sum += s.value
		case metric + "_count":
			count += s.value
			found = true
		}
	}
	return sum, count, found
}

// histMean is one histogram's mean over an interval: the difference of two
// readings of its _sum and _count.
type histMean struct {
	n    float64
	mean time.Duration // 0 when n is 0
}

type histReading struct {
	sum, count float64
	found      bool
}

func readHist(text, metric string, want map[string]string) histReading {
	s, c, f := histSumCount(text, metric, want)
	return histReading{sum: s, count: c, found: f}
}

// meanBetween returns the observations made between two readings (a
// counter reset, e.g. a plugin restart, gives nothing).
func meanBetween(before, after histReading) (histMean, bool) {
	if !before.found || !after.found || after.count < before.count {
		return histMean{}, false
	}
	n := after.count - before.count
	if n == 0 {
		return histMean{}, true
	}
	return histMean{n: n, mean: time.Duration((after.sum - before.sum) / n * float64(time.Second))}, true
}

// metricsScraper fetches the plugin's /metrics: straight from the pod's
// address (the node reaches its pods), else through the API server's pod
// proxy.
type metricsScraper struct {
	url           string // direct URL
	cs            kubernetes.Interface
	ns, pod, port string // for the proxy; pod == "" without one
	route         string // how the last scrape got through
	http          *http.Client
}

func (m *metricsScraper) scrape(ctx context.Context) (string, error) {
	var directErr error
	if m.url != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
		if err == nil {
			var resp *http.Response
			if resp, err = m.http.Do(req); err == nil {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case rerr != nil:
					err = rerr
				case resp.StatusCode != http.StatusOK:
					err = fmt.Errorf("%s: %s", m.url, resp.Status)
				default:
					m.route = m.url
					return string(body), nil
				}
			}
		}
		directErr = err
	}
	if m.pod == "" {
		return "", directErr
	}
	body, err := m.cs.CoreV1().Pods(m.ns).ProxyGet("http", m.pod, m.port, "metrics", nil).DoRaw(ctx)
	if err != nil {
		if directErr != nil {
			return "", fmt.Errorf("%v; through the API server: %w", directErr, err)
		}
		return "", err
	}
	m.route = fmt.Sprintf("API server proxy of pod %s/%s:%s", m.ns, m.pod, m.port)
	return string(body), nil
}

// newMetricsScraper finds the plugin's metrics endpoint: url when given,
// else the port named "metrics" (8080 without one) of the plugin pod on node
// whose UID the socket's name carries (dra-<pod UID>.sock), else of the
// newest running pod on the node that runs gpu-kubelet-plugin.
func newMetricsScraper(ctx context.Context, cs kubernetes.Interface, node, socket, url string) (*metricsScraper, error) {
	m := &metricsScraper{cs: cs, http: &http.Client{Timeout: 5 * time.Second}}
	if url != "" {
		m.url = url
		return m, nil
	}
	pods, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("list the pods of node %s: %w", node, err)
	}
	uid := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(socket), "dra-"), ".sock")
	var best *corev1.Pod
	var port int32
	for i := range pods.Items {
		p := &pods.Items[i]
		pp, ok := pluginPort(p)
		if !ok || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			continue
		}
		if string(p.UID) == uid {
			best, port = p, pp
			break
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best, port = p, pp
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no running gpu-kubelet-plugin pod on node %s", node)
	}
	m.ns, m.pod, m.port = best.Namespace, best.Name, strconv.Itoa(int(port))
	m.url = "http://" + net.JoinHostPort(best.Status.PodIP, m.port) + "/metrics"
	return m, nil
}

// pluginPort returns the metrics port of p's gpu-kubelet-plugin container.
func pluginPort(p *corev1.Pod) (int32, bool) {
	for _, c := range p.Spec.Containers {
		if len(c.Command) == 0 || filepath.Base(c.Command[0]) != "gpu-kubelet-plugin" {
			continue
		}
		for _, cp := range c.Ports {
			if cp.Name == "metrics" {
				return cp.ContainerPort, true
			}
		}
		return 8080, true
	}
	return 0, false
}

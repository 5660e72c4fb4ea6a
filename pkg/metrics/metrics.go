// Package metrics defines the plugin's Prometheus metrics and serves them
// with a health endpoint for probes.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Operation names used as the "operation" label.
const (
	OpPrepare   = "prepare"
	OpUnprepare = "unprepare"
)

// Trigger values of StaleClaimsRemoved.
const (
	TriggerPrepare = "prepare"
	TriggerSweep   = "sweep"
)

// Metrics are the plugin's metrics, registered in their own registry.
type Metrics struct {
	Registry *prometheus.Registry
	// Requests counts claim operations by operation and result ("success" or "error").
	Requests *prometheus.CounterVec
	// Duration observes the time of one claim operation.
	Duration *prometheus.HistogramVec
	// PreparedClaims is the number of claims currently prepared.
	PreparedClaims prometheus.Gauge
	// CheckpointErrors counts checkpoint files that could not be read.
	CheckpointErrors prometheus.Counter
	// PublishedDevices is the number of devices in the published ResourceSlices.
	PublishedDevices prometheus.Gauge
	// UnhealthyDevices is the number of GPUs the health monitor reports
	// unhealthy or unmonitored.
	UnhealthyDevices prometheus.Gauge
	// HealthMonitorUp is 1 while the NVML event loop works, 0 while it is down
	// or the monitor is off.
	HealthMonitorUp prometheus.Gauge
	// HealthMonitorErrors counts failed NVML event calls of the health monitor.
	HealthMonitorErrors prometheus.Counter
	// UnusableGPUs is the number of GPUs that NVML enumerates but cannot use
	// (published tainted, never prepared), as discovered at start.
	UnusableGPUs prometheus.Gauge
	// StaleClaimsRemoved counts the recorded claims unprepared because the
	// API server says no kubelet can use them any more, by trigger:
	// TriggerPrepare (a prepare needed a device they held) or TriggerSweep.
	StaleClaimsRemoved *prometheus.CounterVec
	// DeviceStatusWrites counts the writes of claims' status.devices by
	// result ("success" or "error"); a failed write never fails the prepare.
	DeviceStatusWrites *prometheus.CounterVec
	// APIRequestDuration observes Kubernetes API requests by verb and
	// resource (see ObserveAPIRequests).
	APIRequestDuration *prometheus.HistogramVec
}

// New creates the metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "gpudra", Name: "claim_operations_total",
			Help: "ResourceClaim prepare and unprepare operations, by result.",
		}, []string{"operation", "result"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "gpudra", Name: "claim_operation_duration_seconds",
			Help:    "Time to prepare or unprepare one ResourceClaim.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation"}),
		PreparedClaims: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gpudra", Name: "prepared_claims",
			Help: "ResourceClaims currently prepared on this node.",
		}),
		CheckpointErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "gpudra", Name: "checkpoint_load_errors_total",
			Help: "Claim checkpoint files that could not be read.",
		}),
		PublishedDevices: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "gpudra", Name: "published_devices",
			Help: "Devices published in this node's ResourceSlices.",
		}),
	}
	m.APIRequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "gpudra", Name: "api_request_duration_seconds",
		Help:    "Kubernetes API requests of the plugin, by verb and resource; the GET of resourceclaims precedes every prepare.",
		Buckets: []float64{.0005, .001, .002, .003, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"verb", "resource"})
	m.UnhealthyDevices = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "gpudra", Name: "unhealthy_devices",
		Help: "GPUs reported unhealthy or unmonitored by the health monitor (and tainted).",
	})
	m.HealthMonitorUp = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "gpudra", Name: "health_monitor_up",
		Help: "1 while the NVML event health monitor works; 0 while it is down (every GPU is then unmonitored) or turned off.",
	})
	m.HealthMonitorErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gpudra", Name: "health_monitor_errors_total",
		Help: "Failed NVML event calls of the health monitor.",
	})
	m.StaleClaimsRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gpudra", Name: "stale_claims_removed_total",
		Help: "Recorded claims unprepared because the API server no longer has them for this node (deleted, re-created, deallocated), " +
			`by trigger: "prepare" (a prepare needed a device they held) or "sweep" (the periodic check).`,
	}, []string{"trigger"})
	m.UnusableGPUs = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "gpudra", Name: "unusable_gpus",
		Help: "GPUs that NVML enumerates but cannot use (lost or broken at start; published tainted, never prepared): reset them or drain the node.",
	})
	m.DeviceStatusWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gpudra", Name: "device_status_writes_total",
		Help: `Writes of prepared claims' status.devices entries, by result ("success" or "error"; a failed write does not fail the prepare).`,
	}, []string{"result"})
	m.Registry.MustRegister(m.DeviceStatusWrites)
	m.Registry.MustRegister(m.UnhealthyDevices, m.HealthMonitorUp, m.HealthMonitorErrors, m.APIRequestDuration, m.StaleClaimsRemoved, m.UnusableGPUs)
	m.Registry.MustRegister(m.Requests, m.Duration, m.PreparedClaims, m.CheckpointErrors, m.PublishedDevices,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Observe records one operation that started at start and ended with err.
func (m *Metrics) Observe(op string, start time.Time, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	m.Requests.WithLabelValues(op, result).Inc()
	m.Duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Server serves /metrics, /healthz (liveness: the process serves) and
// /readyz (readiness: SetReady was called).
type Server struct {
	metrics *Metrics
	ready   atomic.Bool
	// Profiling adds Go's /debug/pprof/ handlers; set before ListenAndServe.
	Profiling bool
}

// NewServer returns a server for m.
func NewServer(m *Metrics) *Server { return &Server{metrics: m} }

// SetReady marks the plugin ready (registered and publishing).
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if s.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// ListenAndServe serves on addr until ctx is done. It returns once the
// listener is open, and reports a later serve error through the log.
func (s *Server) ListenAndServe(ctx context.Context, addr string) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.FromContext(ctx).Error(err, "Metrics server failed", "address", addr)
		}
	}()
	return l.Addr(), nil
}

package claimstate

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkPrepareUnprepare measures one warm prepare + unprepare pair of a
// one-GPU claim: two durable writes (checkpoint, spec) and two durable removes.
func BenchmarkPrepareUnprepare(b *testing.B) {
	e := newEnv(b)
	e.ctx = klog.NewContext(context.Background(), logr.Discard())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		uid := fmt.Sprintf("uid-%d", i)
		i++
		if _, err := e.state.Prepare(e.ctx, claim(uid, uid, result{request: "gpu", device: "gpu-0"})); err != nil {
			b.Fatal(err)
		}
		if err := e.state.Unprepare(e.ctx, "default", uid, types.UID(uid)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrepare measures a warm prepare of a one-GPU claim alone: its
// checkpoint record and CDI spec, written durably.
func BenchmarkPrepare(b *testing.B) {
	e := newEnv(b)
	e.ctx = klog.NewContext(context.Background(), logr.Discard())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		uid := fmt.Sprintf("uid-%d", i)
		i++
		if _, err := e.state.Prepare(e.ctx, claim(uid, uid, result{request: "gpu", device: "gpu-0"})); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := e.state.Unprepare(e.ctx, "default", uid, types.UID(uid)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkPrepareUnprepareParallel is BenchmarkPrepareUnprepare with 8
// claims in flight, each on its own GPU: its ns/op against the serial
// benchmark's is the throughput gained by concurrency in the claim state
// itself (the durable writes of different claims overlap; nothing is
// serialized across claims), without the cluster that shares the CPUs in
// the end-to-end benchmark.
func BenchmarkPrepareUnprepareParallel(b *testing.B) {
	e := newEnv(b)
	e.ctx = klog.NewContext(context.Background(), logr.Discard())
	var next atomic.Int64
	b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		worker := next.Add(1) - 1
		device := fmt.Sprintf("gpu-%d", worker%8)
		for i := 0; pb.Next(); i++ {
			uid := fmt.Sprintf("uid-%d-%d", worker, i)
			if _, err := e.state.Prepare(e.ctx, claim(uid, uid, result{request: "gpu", device: device})); err != nil {
				b.Error(err)
				return
			}
			if err := e.state.Unprepare(e.ctx, "default", uid, types.UID(uid)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDynamicMIG measures the prepare and the unprepare of a claim
// for one MIG device made on demand (a 1g.10gb on a mock H100: record the
// intent, create the GPU and compute instances, write the spec and the
// record; unprepare: spec, destroy, record), against the same for a whole
// GPU in the same environment. It reports the p50 and p99 of each call.
// "mig-first" is the GPU's only MIG device, so every prepare switches MIG
// mode on and every unprepare off; "mig-more" keeps another MIG device on
// the GPU, so the mode stays on.
func BenchmarkDynamicMIG(b *testing.B) {
	for _, tc := range []struct{ name, device, keep string }{
		{"gpu", "gpu-1", ""},
		{"mig-first", "gpu-0-mig-1g10gb-19-6", ""},
		{"mig-more", "gpu-0-mig-1g10gb-19-6", "gpu-0-mig-3g40gb-9-0"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newDynamicMIGEnv(b)
			e.ctx = klog.NewContext(context.Background(), logr.Discard())
			if tc.keep != "" {
				if _, err := e.state.Prepare(e.ctx, claim("keep", "keep", result{request: "r", device: tc.keep})); err != nil {
					b.Fatal(err)
				}
			}
			var prep, unprep []time.Duration
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				uid := fmt.Sprintf("uid-%d", i)
				i++
				t0 := time.Now()
				if _, err := e.state.Prepare(e.ctx, claim(uid, uid, result{request: "r", device: tc.device})); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := e.state.Unprepare(e.ctx, "default", uid, types.UID(uid)); err != nil {
					b.Fatal(err)
				}
				prep, unprep = append(prep, t1.Sub(t0)), append(unprep, time.Since(t1))
			}
			for _, m := range []struct {
				name string
				d    []time.Duration
			}{{"prepare", prep}, {"unprepare", unprep}} {
				slices.Sort(m.d)
				b.ReportMetric(float64(m.d[len(m.d)/2].Microseconds()), m.name+"-p50-µs")
				b.ReportMetric(float64(m.d[len(m.d)*99/100].Microseconds()), m.name+"-p99-µs")
			}
		})
	}
}

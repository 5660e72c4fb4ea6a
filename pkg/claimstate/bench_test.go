package claimstate

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"

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

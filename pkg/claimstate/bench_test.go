package claimstate

import (
	"context"
	"fmt"

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

// Command gpudra is the operator's tool for a GPU node: it generates the
// host-wide CDI spec (`gpudra cdi generate`), lists the CDI devices the
// container runtime would resolve (`gpudra cdi list`), checks whether the
// node is ready for the GPU plugins (`gpudra doctor`) and prints its
// version (`gpudra version`). Run `gpudra help` for the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	klog.Flush()
	os.Exit(code)
}

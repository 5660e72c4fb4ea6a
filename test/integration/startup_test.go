package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/mockmachine/mockmachinetest"
	"github.com/gpudra/gpudra/pkg/node"
	"github.com/gpudra/gpudra/pkg/plugin"
)

// BenchmarkStartToPublished measures the plugin's start-up with a mock DGX
// H100 (8 GPUs), from Start to its ResourceSlice stored in the (fake) API
// server, in the chart's mock mode: laying out the mock host, NVML discovery, driver-file discovery, checkpoint load, reconcile,
// the gRPC servers and the first publish.
func BenchmarkStartToPublished(b *testing.B) {
	ctx := klog.NewContext(context.Background(), logr.Discard())
	for b.Loop() {
		b.StopTimer()
		root := b.TempDir()
		client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, UID: "node-uid"}})
		cfg := plugin.Config{
			NodeName:   nodeName,
			DriverName: driverName,
			KubeClient: client,
			Node:       node.Flags{NVML: "mock:dgxh100", MockHostRoot: filepath.Join(root, "mock"), CDIRoot: filepath.Join(root, "cdi")},
			Kubelet:    plugin.KubeletConfig{RegistrarDir: filepath.Join(root, "registry"), PluginsDir: filepath.Join(root, "plugins")},
		}
		if err := os.MkdirAll(cfg.Kubelet.RegistrarDir, 0o750); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		p, err := plugin.Start(ctx, cfg)
		mockmachinetest.SkipWithoutMknod(b, err)
		for {
			slices, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if len(slices.Items) == 1 && len(slices.Items[0].Spec.Devices) == 8 {
				break
			}
		}
		b.StopTimer()
		p.Stop()
		b.StartTimer()
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/gpudra/gpudra/pkg/kubeclient"
	"github.com/gpudra/gpudra/pkg/publisher"
)

// newKubeClient is the API client of the cluster commands; tests replace it.
var newKubeClient = func(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := kubeclient.Config(kubeconfig, "gpudra")
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// runSlicesDelete deletes the ResourceSlices of a driver whose plugins are
// gone: the chart runs it after `helm uninstall` and after a switch to the
// classic device plugin, because the slices outlive the plugins (their
// owner is the node) and the scheduler would go on allocating their devices.
// With --wait-for-pods it first waits until no pod matches the selector in
// --namespace, so that no stopping plugin re-creates a slice.
func runSlicesDelete(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	var driver, kubeconfig, namespace, selector string
	var timeout time.Duration
	fs, f := newFlagSet("slices delete", stderr, nil, 0)
	f.String(&driver, "driver", "DRIVER_NAME", "gpu.nvidia.com", "DRA driver whose ResourceSlices to delete")
	f.String(&kubeconfig, "kubeconfig", "KUBECONFIG", "", "kubeconfig file; empty: in-cluster configuration")
	f.String(&namespace, "namespace", "POD_NAMESPACE", "", "namespace of the plugin pods to wait for")
	f.String(&selector, "wait-for-pods", "WAIT_FOR_PODS", "", "label selector of the plugin pods that must be gone first; empty: do not wait")
	fs.DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the plugin pods")
	if err := parse(f, fs, args); err != nil {
		return exitUsage, err
	}
	client, err := newKubeClient(kubeconfig)
	if err != nil {
		return exitFail, err
	}
	logger := klog.FromContext(ctx)
	if selector != "" {
		if err := waitNoPods(ctx, client, namespace, selector, timeout); err != nil {
			return exitFail, err
		}
	}
	n, err := publisher.DeleteDriverSlices(ctx, client, driver)
	if err != nil {
		return exitFail, err
	}
	logger.V(2).Info("Deleted ResourceSlices", "driver", driver, "count", n)
	fmt.Fprintf(stdout, "deleted %d ResourceSlice(s) of driver %s\n", n, driver)
	return exitOK, nil
}

// waitNoPods polls until no pod in namespace matches selector.
func waitNoPods(ctx context.Context, client kubernetes.Interface, namespace, selector string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		pods, err := client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil && len(pods.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("waiting for the pods %q in namespace %q to be gone: %w", selector, namespace, err)
			}
			return fmt.Errorf("pods %q in namespace %q still there after %v (e.g. %s): their plugins would re-create the slices", selector, namespace, timeout, pods.Items[0].Name)
		case <-time.After(time.Second):
		}
	}
}

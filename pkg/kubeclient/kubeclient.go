// Package kubeclient builds the Kubernetes API client configuration of the
// gpudra binaries: from a kubeconfig file when one is given, else the
// in-cluster configuration of a pod.
package kubeclient

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config returns the client configuration for kubeconfig (a file path;
// empty: in-cluster) with the given user agent, speaking protobuf like the
// kubelet (the built-in types the binaries read decode several times faster
// than JSON). The caller sets QPS and Burst.
func Config(kubeconfig, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("Kubernetes client configuration: %w (outside a cluster, pass --kubeconfig)", err)
	}
	cfg.UserAgent = userAgent
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg, nil
}

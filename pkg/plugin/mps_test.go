package plugin

import (
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/gpudra/gpudra/pkg/node"
)

func TestNewMPSManager(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	cfg := Config{NodeName: "node-1", KubeClient: fake.NewClientset()}
	n := &node.Node{Backend: mustBackend(t, "mock:dgxh100"), Roots: node.Roots{DriverRoot: "/"}}
	m, err := NewMPSManager(ctx, cfg, n)
	if err != nil || m != nil {
		t.Fatalf("without a daemon image: manager %v, error %v; want MPS off", m, err)
	}
	if a := mpsApplier(m); a != nil {
		t.Fatalf("mpsApplier(nil) = %#v: the composite would call a nil manager instead of reporting MPS as off", a)
	}

	cfg.MPS = MPSConfig{DaemonImage: "localhost/gpudra/gpudra:dev", BaseDir: t.TempDir()}
	if _, err := NewMPSManager(ctx, cfg, n); err == nil || !strings.Contains(err.Error(), "POD_NAMESPACE") {
		t.Fatalf("without a namespace: error %v, want one naming POD_NAMESPACE", err)
	}
	cfg.MPS.Namespace = "gpudra-system"
	m, err = NewMPSManager(ctx, cfg, n)
	if err != nil || m == nil || mpsApplier(m) == nil {
		t.Fatalf("manager %v, error %v", m, err)
	}
}

package v1beta1

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
)

func TestAddToScheme(t *testing.T) {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{GpuConfigKind, MigDeviceConfigKind} {
		obj, err := s.New(SchemeGroupVersion.WithKind(kind))
		if err != nil {
			t.Fatalf("scheme.New(%s): %v", kind, err)
		}
		if _, ok := obj.(Config); !ok {
			t.Errorf("scheme.New(%s) = %T, not a Config", kind, obj)
		}
	}
	gvks, _, err := s.ObjectKinds(&GpuConfig{})
	if err != nil || len(gvks) != 1 || gvks[0] != SchemeGroupVersion.WithKind(GpuConfigKind) {
		t.Errorf("ObjectKinds(GpuConfig) = %v, %v", gvks, err)
	}
}

package v1beta1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	// GroupName is the API group of the opaque device configuration.
	GroupName = "resource.nvidia.com"
	// Version is the API version of this package.
	Version = "v1beta1"

	// GpuConfigKind is the kind of GpuConfig.
	GpuConfigKind = "GpuConfig"
	// MigDeviceConfigKind is the kind of MigDeviceConfig.
	MigDeviceConfigKind = "MigDeviceConfig"
)

var (
	// SchemeGroupVersion is the group and version of the kinds of this package.
	SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

	// SchemeBuilder registers the kinds of this package.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds GpuConfig and MigDeviceConfig to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&GpuConfig{},
		&MigDeviceConfig{},
	)
	return nil
}

// Package v1beta1 is the opaque device-configuration API of the gpudra DRA
// driver: group resource.nvidia.com, version v1beta1.
//
// A user selects how an allocated device is configured by putting one of the
// kinds of this package into the opaque parameters of a ResourceClaim (or of
// a DeviceClass), with the driver's name as the opaque driver:
//
//	apiVersion: resource.nvidia.com/v1beta1
//	kind: GpuConfig
//	sharing:
//	  strategy: TimeSlicing
//	  timeSlicingConfig:
//	    interval: Long
//
// The kinds, field names and accepted values are those of NVIDIA's reference
// DRA driver (k8s-dra-driver-gpu), so its manifests work unchanged:
//
//   - GpuConfig configures a full GPU. Without sharing the GPU is used
//     exclusively (this is also the default when a claim gives no config).
//     sharing.strategy is TimeSlicing (optionally with
//     timeSlicingConfig.interval Default, Short, Medium or Long) or MPS
//     (optionally with mpsConfig).
//   - MigDeviceConfig configures a MIG device. sharing.strategy is
//     TimeSlicing or MPS (optionally with mpsConfig); a MIG device cannot
//     change its time slice, so timeSlicingConfig is rejected.
//
// Contract:
//
//   - This package holds the types, their defaults and their validation.
//     Decoding opaque parameters into these types, strictly and with errors
//     in the user's terms, is opaqueconfig.Decode (package
//     github.com/gpudra/gpudra/pkg/opaqueconfig).
//   - Normalize fills in defaults in place (time-slicing without
//     timeSlicingConfig gets interval Default; MPS without mpsConfig gets an
//     empty mpsConfig; an empty apiVersion/kind is set). It never fails and
//     never panics, whatever the content.
//   - Validate reports the first invalid field by its path and lists the
//     accepted values, e.g.
//     sharing.strategy "Foo" is not supported: use "TimeSlicing" or "MPS".
//     Validate accepts a config before and after Normalize alike.
//   - All types deep-copy by hand-written DeepCopy methods; GpuConfig and
//     MigDeviceConfig implement runtime.Object and are registered by
//     AddToScheme under SchemeGroupVersion.
package v1beta1

package opaqueconfig

// Example opaque parameters shared by the tests and the fuzz seed corpus.
// The valid ones are written like the demo manifests of NVIDIA's reference
// DRA driver.

const (
	yamlGpuTimeSlicing = `apiVersion: resource.nvidia.com/v1beta1
kind: GpuConfig
sharing:
  strategy: TimeSlicing
  timeSlicingConfig:
    interval: Long
`
	yamlGpuTimeSlicingNoConfig = `apiVersion: resource.nvidia.com/v1beta1
kind: GpuConfig
sharing:
  strategy: TimeSlicing
`
	yamlGpuMPS = `apiVersion: resource.nvidia.com/v1beta1
kind: GpuConfig
sharing:
  strategy: MPS
  mpsConfig:
    defaultActiveThreadPercentage: 50
    defaultPinnedDeviceMemoryLimit: 10Gi
    defaultPerDevicePinnedMemoryLimit:
      0: 5Gi
      GPU-4404041a-04cf-1ccf-9e70-f139a9b1e23c: 2Gi
`
	yamlGpuExclusive = `apiVersion: resource.nvidia.com/v1beta1
kind: GpuConfig
`
	yamlMigTimeSlicing = `apiVersion: resource.nvidia.com/v1beta1
kind: MigDeviceConfig
sharing:
  strategy: TimeSlicing
`
	yamlMigMPS = `apiVersion: resource.nvidia.com/v1beta1
kind: MigDeviceConfig
sharing:
  strategy: MPS
  mpsConfig:
    defaultActiveThreadPercentage: 25
    defaultPinnedDeviceMemoryLimit: 2Gi
`
	jsonGpuTimeSlicing = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Short"}}}`
	jsonMigMPS         = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS"}}`

	// Decode errors.
	jsonUnknownField    = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","foo":1}}`
	yamlUnknownField    = "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: MPS\n  foo: 1\n"
	jsonDuplicateField  = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","strategy":"MPS"}}`
	yamlDuplicateField  = "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: MPS\n  strategy: TimeSlicing\n"
	jsonUnknownKind     = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"ComputeDomain"}`
	jsonWrongAPIVersion = `{"apiVersion":"resource.nvidia.com/v1","kind":"GpuConfig"}`
	jsonMissingVersion  = `{"kind":"GpuConfig"}`
	jsonMissingKind     = `{"apiVersion":"resource.nvidia.com/v1beta1"}`
	jsonMalformed       = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig"`
	jsonWrongType       = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":"half"}}}`
	jsonBadQuantity     = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"ten gigs"}}}`

	// Validation errors (they decode).
	jsonBadStrategy       = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"Foo"}}`
	jsonBadInterval       = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Forever"}}}`
	jsonMPSWithTimeSlice  = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","timeSlicingConfig":{"interval":"Long"}}}`
	jsonThreadPercentage0 = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":0}}}`
	jsonMigTimeSlice      = `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Long"}}}`
)

// seedInputs lists every example, for the fuzz corpus.
var seedInputs = []string{
	yamlGpuTimeSlicing, yamlGpuTimeSlicingNoConfig, yamlGpuMPS, yamlGpuExclusive, yamlMigTimeSlicing, yamlMigMPS,
	jsonGpuTimeSlicing, jsonMigMPS,
	jsonUnknownField, yamlUnknownField, jsonDuplicateField, yamlDuplicateField, jsonUnknownKind, jsonWrongAPIVersion,
	jsonMissingVersion, jsonMissingKind, jsonMalformed, jsonWrongType, jsonBadQuantity,
	jsonBadStrategy, jsonBadInterval, jsonMPSWithTimeSlice, jsonThreadPercentage0, jsonMigTimeSlice,
	"", "null", "[]", "{}", "a: b: c", `"text"`,
}

// Package examples holds example opaque parameters of the driver's config
// API (resource.nvidia.com/v1beta1), valid and invalid, with the error each
// invalid one gets. It is test data shared by the tests that must agree with
// the decoder: the decoder's own (examples_test.go checks every entry against
// opaqueconfig.Decode and Validate), the chart's admission policy (test/deploy)
// and the e2e tests of admission (test/e2e). Add a case here, not in one of
// those tests, so that all of them check it.
package examples

import "strings"

// Admission says what the API server does with a claim (or template) that
// carries an Invalid example as the opaque parameters of this driver, with
// the chart's admission policy installed.
type Admission int

const (
	// Refused: the policy refuses the object with Err (inside the message
	// that names the object and the config).
	Refused Admission = iota
	// RefusedByAPIServer: the parameters cannot be written into a claim:
	// they are not a JSON object (the API server requires one), or hold a
	// number that does not fit a float64. The API server's own validation refuses them
	// before any policy runs.
	RefusedByAPIServer
	// Unseen: the policy cannot see the problem and admits the object;
	// prepare refuses it. Duplicate JSON fields are the only such case: the
	// API server keeps the raw bytes, but the policy's CEL sees the object
	// decoded, with the last of the duplicates only.
	Unseen
	// Collapsed: YAML with a duplicate key. A claim cannot hold it as is:
	// a manifest's YAML becomes JSON on the client (kubectl), which keeps
	// the last of the duplicates, so the claim holds that config, which
	// prepare and the policy judge alike.
	Collapsed
)

// Invalid is opaque parameters that the decoder, or Validate after
// Normalize, refuses.
type Invalid struct {
	Name string
	// Params is the text of the opaque parameters, JSON or YAML.
	Params string
	// Err is the whole error of opaqueconfig.Decode, or else of Validate
	// after Normalize: the reason that prepare's error gives.
	Err       string
	Admission Admission
}

// Valid is opaque parameters that decode and validate.
type Valid struct {
	Name   string
	Params string
}

// InvalidConfigs are the invalid examples: every case of the decoder's and
// Validate's tests, the bad configs of test/integration's bad-claim table,
// and one case per message that the admission policy produces.
var InvalidConfigs = []Invalid{
	// apiVersion and kind.
	{Name: "unknown kind", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"ComputeDomain"}`,
		Err: `apiVersion "resource.nvidia.com/v1beta1" kind "ComputeDomain" is not known: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig`},
	{Name: "unknown kind TpuConfig", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"TpuConfig"}`,
		Err: `apiVersion "resource.nvidia.com/v1beta1" kind "TpuConfig" is not known: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig`},
	{Name: "kind of wrong case", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"gpuConfig"}`,
		Err: `apiVersion "resource.nvidia.com/v1beta1" kind "gpuConfig" is not known: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig (values are case-sensitive)`},
	{Name: "wrong apiVersion", Params: `{"apiVersion":"resource.nvidia.com/v1","kind":"GpuConfig"}`,
		Err: `apiVersion "resource.nvidia.com/v1" kind "GpuConfig" is not known: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig`},
	{Name: "core apiVersion", Params: "apiVersion: v1\nkind: GpuConfig\n",
		Err: `apiVersion "v1" kind "GpuConfig" is not known: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig`},
	{Name: "another driver's config", Params: `{"apiVersion":"nic.example.com/v1","kind":"NicConfig"}`,
		Err: `apiVersion "nic.example.com/v1" kind "NicConfig" is not known: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig`},
	{Name: "missing apiVersion", Params: `{"kind":"GpuConfig"}`,
		Err: "apiVersion is missing: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
	{Name: "missing kind", Params: `{"apiVersion":"resource.nvidia.com/v1beta1"}`,
		Err: "kind is missing: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
	{Name: "missing both", Params: `{}`,
		Err: "apiVersion and kind are missing: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
	{Name: "empty apiVersion", Params: `{"apiVersion":"","kind":"MigDeviceConfig"}`,
		Err: "apiVersion is missing: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
	{Name: "null kind", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":null}`,
		Err: "kind is missing: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
	{Name: "apiVersion not a string", Params: `{"apiVersion":1,"kind":"GpuConfig"}`,
		Err: "apiVersion must be a string, not a number: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
	{Name: "apiVersion and kind not strings", Params: `{"apiVersion":["resource.nvidia.com/v1beta1"],"kind":{"name":"GpuConfig"}}`,
		Err: "apiVersion must be a string, not an array: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig; kind must be a string, not an object: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},
	{Name: "kind a boolean", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":true}`,
		Err: "kind must be a string, not a boolean: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig"},

	// Unknown fields.
	{Name: "unknown field JSON", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","foo":1}}`,
		Err: `unknown field "sharing.foo": sharing accepts strategy, timeSlicingConfig, mpsConfig (field names are case-sensitive)`},
	{Name: "unknown field YAML", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: MPS\n  foo: 1\n",
		Err: `unknown field "sharing.foo": sharing accepts strategy, timeSlicingConfig, mpsConfig (field names are case-sensitive)`},
	{Name: "unknown field bogus", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","bogus":1}}`,
		Err: `unknown field "sharing.bogus": sharing accepts strategy, timeSlicingConfig, mpsConfig (field names are case-sensitive)`},
	{Name: "unknown top-level field", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","metadata":{"name":"x"}}`,
		Err: `unknown field "metadata": GpuConfig accepts apiVersion, kind, sharing (field names are case-sensitive)`},
	{Name: "wrong case field", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","Sharing":{}}`,
		Err: `unknown field "Sharing": GpuConfig accepts apiVersion, kind, sharing (field names are case-sensitive)`},
	{Name: "MIG field of another case", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsconfig":{}}}`,
		Err: `unknown field "sharing.mpsconfig": sharing accepts strategy, mpsConfig (field names are case-sensitive)`},
	{Name: "unknown timeSlicingConfig field", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Long","slice":"5ms"}}}`,
		Err: `unknown field "sharing.timeSlicingConfig.slice": sharing.timeSlicingConfig accepts interval (field names are case-sensitive)`},
	{Name: "unknown mpsConfig field", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsConfig":{"threads":50}}}`,
		Err: `unknown field "sharing.mpsConfig.threads": sharing.mpsConfig accepts defaultActiveThreadPercentage, defaultPinnedDeviceMemoryLimit, defaultPerDevicePinnedMemoryLimit, multiUser (field names are case-sensitive)`},
	{Name: "multiUser of another case", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"multiuser":true}}}`,
		Err: `unknown field "sharing.mpsConfig.multiuser": sharing.mpsConfig accepts defaultActiveThreadPercentage, defaultPinnedDeviceMemoryLimit, defaultPerDevicePinnedMemoryLimit, multiUser (field names are case-sensitive)`},
	{Name: "unknown field in an invalid config", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"Foo","extra":true}}`,
		Err: `unknown field "sharing.extra": sharing accepts strategy, timeSlicingConfig, mpsConfig (field names are case-sensitive)`},

	// Values of the wrong type.
	{Name: "wrong type", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":"half"}}}`,
		Err: "sharing.mpsConfig.defaultActiveThreadPercentage: a string is not allowed here: use an integer"},
	{Name: "multiUser string", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"multiUser":"yes"}}}`,
		Err: "sharing.mpsConfig.multiUser: a string is not allowed here: use a boolean"},
	{Name: "fraction", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":50.5}}}`,
		Err: "sharing.mpsConfig.defaultActiveThreadPercentage: the number 50.5 is not allowed here: use an integer"},
	{Name: "strategy number", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: 1\n",
		Err: "sharing.strategy: a number is not allowed here: use a string"},
	{Name: "sharing list", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing: [TimeSlicing]\n",
		Err: "sharing: an array is not allowed here: use an object"},
	{Name: "sharing string", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":"MPS"}`,
		Err: "sharing: a string is not allowed here: use an object"},
	{Name: "interval boolean", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":true}}}`,
		Err: "sharing.timeSlicingConfig.interval: a boolean is not allowed here: use a string"},
	{Name: "timeSlicingConfig string", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":"Long"}}`,
		Err: "sharing.timeSlicingConfig: a string is not allowed here: use an object"},
	{Name: "mpsConfig array", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":[]}}`,
		Err: "sharing.mpsConfig: an array is not allowed here: use an object"},
	{Name: "per-device limits string", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPerDevicePinnedMemoryLimit":"1Gi"}}}`,
		Err: "sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit: a string is not allowed here: use an object"},
	{Name: "wrong type before unknown field", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","foo":1,"mpsConfig":{"defaultActiveThreadPercentage":"half"}}}`,
		Err: "sharing.mpsConfig.defaultActiveThreadPercentage: a string is not allowed here: use an integer"},

	// Memory limits that are not quantities.
	{Name: "bad quantity", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"ten gigs"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "ten gigs" is not a quantity: use a quantity such as "512Mi" or "2Gi"`},
	{Name: "huge negative exponent", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"1e-999999999"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "1e-999999999" is not a usable quantity: its exponent is out of range; use a quantity such as "512Mi" or "2Gi"`},
	{Name: "huge exponent as a JSON number", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":1e999999999}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit 1e999999999 is not a usable quantity: its exponent is out of range; use a quantity such as "512Mi" or "2Gi"`, Admission: RefusedByAPIServer},
	{Name: "huge exponent hidden by a duplicate field", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"1e-999999999","defaultPinnedDeviceMemoryLimit":"1Gi"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "1e-999999999" is not a usable quantity: its exponent is out of range; use a quantity such as "512Mi" or "2Gi"`, Admission: Unseen},
	{Name: "huge per-device exponent YAML", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: MPS\n  mpsConfig:\n    defaultPerDevicePinnedMemoryLimit:\n      0: \"1E-999999999\"\n",
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["0"] "1E-999999999" is not a usable quantity: its exponent is out of range; use a quantity such as "512Mi" or "2Gi"`},
	{Name: "exponent out of range", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"1e31"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "1e31" is not a usable quantity: its exponent is out of range; use a quantity such as "512Mi" or "2Gi"`},
	{Name: "overlong quantity", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"0.` + strings.Repeat("0", 80) + `1"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit is not a usable quantity: it is longer than 64 characters; use a quantity such as "512Mi" or "2Gi"`},
	{Name: "quantity boolean", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":true}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit true is not a quantity: use a quantity such as "512Mi" or "2Gi"`},
	{Name: "quantity object", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":{"value":1}}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit is an object, not a quantity: use a quantity such as "512Mi" or "2Gi"`},
	{Name: "quantity array", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":["1Gi"]}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit is an array, not a quantity: use a quantity such as "512Mi" or "2Gi"`},
	{Name: "bad per-device quantity", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: MigDeviceConfig\nsharing:\n  strategy: MPS\n  mpsConfig:\n    defaultPerDevicePinnedMemoryLimit:\n      \"1\": lots\n",
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["1"] "lots" is not a quantity: use a quantity such as "512Mi" or "2Gi"`},
	{Name: "bad quantity under an unknown strategy", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"Foo","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"2 GB"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "2 GB" is not a quantity: use a quantity such as "512Mi" or "2Gi"`},

	// Decodes, does not validate.
	{Name: "bad strategy", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"Foo"}}`,
		Err: `sharing.strategy "Foo" is not supported: use "TimeSlicing" or "MPS"`},
	{Name: "strategy of wrong case", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"mps"}}`,
		Err: `sharing.strategy "mps" is not supported: use "TimeSlicing" or "MPS" (values are case-sensitive)`},
	{Name: "missing strategy", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"timeSlicingConfig":{"interval":"Long"}}}`,
		Err: `sharing.strategy is missing: use "TimeSlicing" or "MPS"`},
	{Name: "MIG missing strategy", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":null}}`,
		Err: `sharing.strategy is missing: use "TimeSlicing" or "MPS"`},
	{Name: "MIG bad strategy", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"Exclusive"}}`,
		Err: `sharing.strategy "Exclusive" is not supported: use "TimeSlicing" or "MPS"`},
	{Name: "bad interval", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Forever"}}}`,
		Err: `sharing.timeSlicingConfig.interval "Forever" is not supported: use "Default", "Short", "Medium" or "Long"`},
	{Name: "interval of wrong case", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"long"}}}`,
		Err: `sharing.timeSlicingConfig.interval "long" is not supported: use "Default", "Short", "Medium" or "Long" (values are case-sensitive)`},
	{Name: "timeSlicingConfig with MPS", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","timeSlicingConfig":{"interval":"Long"}}}`,
		Err: `sharing.timeSlicingConfig cannot be used with sharing.strategy "MPS": remove timeSlicingConfig, or use strategy "TimeSlicing"`},
	{Name: "mpsConfig with TimeSlicing", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","mpsConfig":{}}}`,
		Err: `sharing.mpsConfig cannot be used with sharing.strategy "TimeSlicing": remove mpsConfig, or use strategy "MPS"`},
	{Name: "MIG mpsConfig with TimeSlicing", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"TimeSlicing","mpsConfig":{"defaultActiveThreadPercentage":10}}}`,
		Err: `sharing.mpsConfig cannot be used with sharing.strategy "TimeSlicing": remove mpsConfig, or use strategy "MPS"`},
	{Name: "MIG timeSlicingConfig", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Long"}}}`,
		Err: `sharing.timeSlicingConfig is not supported by MigDeviceConfig: a MIG device cannot change its time slice; remove timeSlicingConfig (strategy "TimeSlicing" without it is accepted)`},
	{Name: "MIG timeSlicingConfig with MPS", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","timeSlicingConfig":{}}}`,
		Err: `sharing.timeSlicingConfig is not supported by MigDeviceConfig: a MIG device cannot change its time slice; remove timeSlicingConfig (strategy "TimeSlicing" without it is accepted)`},
	{Name: "thread percentage 0", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":0}}}`,
		Err: "sharing.mpsConfig.defaultActiveThreadPercentage 0 is out of range: use an integer from 1 to 100"},
	{Name: "thread percentage 101", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":101}}}`,
		Err: "sharing.mpsConfig.defaultActiveThreadPercentage 101 is out of range: use an integer from 1 to 100"},
	{Name: "thread percentage negative", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":-5}}}`,
		Err: "sharing.mpsConfig.defaultActiveThreadPercentage -5 is out of range: use an integer from 1 to 100"},
	{Name: "pinned limit too small", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"100Ki"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "100Ki" is too small: use a quantity of at least 1Mi, such as 512Mi or 2Gi`},
	{Name: "pinned limit zero", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":0}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "0" is too small: use a quantity of at least 1Mi, such as 512Mi or 2Gi`},
	{Name: "pinned limit too large", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"2Pi"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "2Pi" is too large: use a quantity of at most 1Pi, such as 512Mi or 2Gi`},
	{Name: "pinned limit negative", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"-1Gi"}}}`,
		Err: `sharing.mpsConfig.defaultPinnedDeviceMemoryLimit "-1Gi" is too small: use a quantity of at least 1Mi, such as 512Mi or 2Gi`},
	{Name: "per-device limit too small", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPerDevicePinnedMemoryLimit":{"0":"1Gi","1":"512Ki"}}}}`,
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["1"] "512Ki" is too small: use a quantity of at least 1Mi, such as 512Mi or 2Gi`},
	{Name: "per-device limit null", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPerDevicePinnedMemoryLimit":{"0":null}}}}`,
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["0"] "0" is too small: use a quantity of at least 1Mi, such as 512Mi or 2Gi`},
	{Name: "per-device key not a device", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPerDevicePinnedMemoryLimit":{"gpu0":"1Gi"}}}}`,
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["gpu0"]: key "gpu0" is not a device: use a device UUID ("GPU-..." or "MIG-...") or a device index ("0", "1", ...)`},
	{Name: "per-device key negative index", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPerDevicePinnedMemoryLimit":{"-1":"1Gi"}}}}`,
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["-1"]: key "-1" is not a device: use a device UUID ("GPU-..." or "MIG-...") or a device index ("0", "1", ...)`},
	{Name: "per-device key bare GPU- prefix", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPerDevicePinnedMemoryLimit":{"GPU-":"1Gi"}}}}`,
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["GPU-"]: key "GPU-" is not a device: use a device UUID ("GPU-..." or "MIG-...") or a device index ("0", "1", ...)`},
	{Name: "per-device keys checked in order", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPerDevicePinnedMemoryLimit":{"b":"1Gi","a":"1Gi"}}}}`,
		Err: `sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit["a"]: key "a" is not a device: use a device UUID ("GPU-..." or "MIG-...") or a device index ("0", "1", ...)`},

	// Not a JSON object: the API server refuses these in a claim.
	{Name: "malformed JSON", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig"`,
		Err: "malformed JSON: unexpected end of JSON input (line 1, column 62)", Admission: RefusedByAPIServer},
	{Name: "malformed JSON on line 2", Params: "{\"apiVersion\": \"resource.nvidia.com/v1beta1\",\n \"kind\" \"GpuConfig\"}",
		Err: `malformed JSON: invalid character '"' after object key (line 2, column 10)`, Admission: RefusedByAPIServer},
	{Name: "malformed YAML", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig: x\n",
		Err: "malformed YAML: line 2: mapping values are not allowed in this context", Admission: RefusedByAPIServer},
	{Name: "empty", Params: "  \n",
		Err: "the opaque parameters are empty: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig", Admission: RefusedByAPIServer},
	{Name: "null", Params: "null",
		Err: "the opaque parameters are null, not an object: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig", Admission: RefusedByAPIServer},
	{Name: "array", Params: `[{"kind":"GpuConfig"}]`,
		Err: "the opaque parameters are an array, not an object: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig", Admission: RefusedByAPIServer},
	{Name: "scalar YAML", Params: "GpuConfig",
		Err: "the opaque parameters are a string, not an object: use apiVersion resource.nvidia.com/v1beta1 with kind GpuConfig or MigDeviceConfig", Admission: RefusedByAPIServer},
	{Name: "duplicate field YAML", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: MPS\n  strategy: TimeSlicing\n",
		Err: `duplicate field "strategy" (line 5): give each field once`, Admission: Collapsed},

	// Duplicate JSON fields.
	{Name: "duplicate field JSON", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","strategy":"MPS"}}`,
		Err: `duplicate field "sharing.strategy": give each field once`, Admission: Unseen},
}

// ValidConfigs are the valid examples, among them those of NVIDIA's
// reference driver's demo manifests and the edge values of every range.
var ValidConfigs = []Valid{
	{Name: "GpuConfig exclusive", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig"}`},
	{Name: "GpuConfig sharing null", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":null}`},
	{Name: "MigDeviceConfig exclusive", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig"}`},
	{Name: "GpuConfig time-slicing YAML", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: TimeSlicing\n  timeSlicingConfig:\n    interval: Long\n"},
	{Name: "GpuConfig time-slicing without timeSlicingConfig", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing"}}`},
	{Name: "GpuConfig time-slicing, empty timeSlicingConfig", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{}}}`},
	{Name: "GpuConfig time-slicing, empty interval", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":""}}}`},
	{Name: "GpuConfig time-slicing Default", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Default"}}}`},
	{Name: "GpuConfig time-slicing Short", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Short"}}}`},
	{Name: "GpuConfig time-slicing Medium", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":{"interval":"Medium"}}}`},
	{Name: "GpuConfig time-slicing, mpsConfig null", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing","mpsConfig":null}}`},
	{Name: "GpuConfig MPS YAML", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: GpuConfig\nsharing:\n  strategy: MPS\n  mpsConfig:\n    defaultActiveThreadPercentage: 50\n    defaultPinnedDeviceMemoryLimit: 10Gi\n    defaultPerDevicePinnedMemoryLimit:\n      0: 5Gi\n      GPU-4404041a-04cf-1ccf-9e70-f139a9b1e23c: 2Gi\n"},
	{Name: "GpuConfig MPS without mpsConfig", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS"}}`},
	{Name: "GpuConfig MPS, empty mpsConfig, timeSlicingConfig null", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{},"timeSlicingConfig":null}}`},
	{Name: "GpuConfig MPS edge values", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":1,"defaultPinnedDeviceMemoryLimit":"1Mi","defaultPerDevicePinnedMemoryLimit":{"7":"1Pi","+1":"1048576","MIG-4404041a-04cf-1ccf-9e70-f139a9b1e23c":"1Gi"}}}}`},
	{Name: "GpuConfig MPS numbers as quantities", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":100,"defaultPinnedDeviceMemoryLimit":1073741824,"defaultPerDevicePinnedMemoryLimit":{"0":2147483648}}}}`},
	{Name: "GpuConfig MPS decimal quantities", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultPinnedDeviceMemoryLimit":"1.5Gi","defaultPerDevicePinnedMemoryLimit":{"0":"2e9","1":"500M"}}}}`},
	{Name: "GpuConfig MPS nulls", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":null,"defaultPinnedDeviceMemoryLimit":null,"defaultPerDevicePinnedMemoryLimit":null}}}`},
	{Name: "MigDeviceConfig time-slicing", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: MigDeviceConfig\nsharing:\n  strategy: TimeSlicing\n"},
	{Name: "MigDeviceConfig MPS YAML", Params: "apiVersion: resource.nvidia.com/v1beta1\nkind: MigDeviceConfig\nsharing:\n  strategy: MPS\n  mpsConfig:\n    defaultActiveThreadPercentage: 25\n    defaultPinnedDeviceMemoryLimit: 2Gi\n"},
	{Name: "GpuConfig MPS multi-user", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"defaultActiveThreadPercentage":50,"multiUser":true}}}`},
	{Name: "MigDeviceConfig MPS multiUser false", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS","mpsConfig":{"multiUser":false}}}`},
	{Name: "GpuConfig MPS multiUser null", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"GpuConfig","sharing":{"strategy":"MPS","mpsConfig":{"multiUser":null}}}`},
	{Name: "MigDeviceConfig MPS JSON", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"MPS"}}`},
	{Name: "MigDeviceConfig timeSlicingConfig null", Params: `{"apiVersion":"resource.nvidia.com/v1beta1","kind":"MigDeviceConfig","sharing":{"strategy":"TimeSlicing","timeSlicingConfig":null}}`},
}

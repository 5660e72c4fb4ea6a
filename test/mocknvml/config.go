package main

/*
#include <stdlib.h>
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"sigs.k8s.io/yaml"

	"github.com/gpudra/gpudra/pkg/mockmachine"
)

// Environment variables (see the package documentation).
const (
	envConfig     = "GPUDRA_MOCK_NVML_CONFIG"
	envMachine    = "GPUDRA_MOCK_NVML_MACHINE"
	envSeed       = "GPUDRA_MOCK_NVML_SEED"
	envInitError  = "GPUDRA_MOCK_NVML_INIT_ERROR"
	envDelay      = "GPUDRA_MOCK_NVML_DELAY"
	envLost       = "GPUDRA_MOCK_NVML_LOST"
	envEventsFile = "GPUDRA_MOCK_NVML_EVENTS_FILE"
	envEventsPoll = "GPUDRA_MOCK_NVML_EVENTS_POLL"
	envLog        = "GPUDRA_MOCK_NVML_LOG"
	envMIGState   = "GPUDRA_MOCK_NVML_MIG_STATE"
)

const defaultMachine = "dgxh100"

// config is the file format; every field is optional.
type config struct {
	Machine    string            `json:"machine,omitempty"`
	Seed       string            `json:"seed,omitempty"`
	InitError  string            `json:"initError,omitempty"`
	Delays     map[string]string `json:"delays,omitempty"`
	Lost       []string          `json:"lost,omitempty"`
	EventsFile string            `json:"eventsFile,omitempty"`
	EventsPoll string            `json:"eventsPoll,omitempty"`
	Log        logSetting        `json:"log,omitempty"`
	MIGState   string            `json:"migState,omitempty"`
}

// logSetting is "on" or "off"; YAML's unquoted on and off are booleans,
// which it takes too.
type logSetting string

func (l *logSetting) UnmarshalJSON(data []byte) error {
	var b bool
	if err := json.Unmarshal(data, &b); err == nil {
		*l = "off"
		if b {
			*l = "on"
		}
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("log: want on or off, not %s", data)
	}
	*l = logSetting(s)
	return nil
}

// settings is the configuration in effect: the file with the environment
// applied, parsed.
type settings struct {
	machine, seed string
	initError     nvml.Return // SUCCESS: none
	delays        delays
	lost          []string
	eventsFile    string
	eventsPoll    time.Duration
	quiet         bool
	migState      string // "": the MIG state lives only in the process
}

// getenv reads the process environment as C sees it: the Go runtime of a
// shared library has only a copy of the environment made when it was
// loaded, while the "live" knobs must see what the program sets later.
func getenv(name string) string {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	v := C.getenv(cname)
	if v == nil {
		return ""
	}
	return C.GoString(v)
}

// loadSettings reads the config file and the environment.
func loadSettings() (settings, error) {
	var c config
	if path := getenv(envConfig); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return settings{}, fmt.Errorf("%s: %w", envConfig, err)
		}
		if err := yaml.UnmarshalStrict(data, &c); err != nil {
			return settings{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	override := func(field *string, env string) {
		if v := getenv(env); v != "" {
			*field = v
		}
	}
	override(&c.Machine, envMachine)
	override(&c.Seed, envSeed)
	override(&c.InitError, envInitError)
	override(&c.EventsFile, envEventsFile)
	override(&c.EventsPoll, envEventsPoll)
	override(&c.MIGState, envMIGState)
	if v := getenv(envLog); v != "" {
		c.Log = logSetting(v)
	}
	if v := getenv(envLost); v != "" {
		c.Lost = splitList(v)
	}

	s := settings{machine: c.Machine, seed: c.Seed, lost: c.Lost, eventsFile: c.EventsFile, eventsPoll: mockmachine.EventsPoll,
		migState: c.MIGState}
	if s.machine == "" {
		s.machine = defaultMachine
	}
	if !mockmachine.Known(s.machine) {
		return settings{}, fmt.Errorf("unknown mock machine %q: use one of %v or a MIG variant %v", s.machine, mockmachine.Names(), mockmachine.MIGNames())
	}
	if s.seed == "" {
		s.seed, _ = os.Hostname()
		if s.seed == "" {
			s.seed = "mocknvml"
		}
	}
	var err error
	if s.initError, err = parseReturn(c.InitError); err != nil {
		return settings{}, fmt.Errorf("initError: %w", err)
	}
	if s.delays, err = parseDelayMap(c.Delays); err != nil {
		return settings{}, fmt.Errorf("delays: %w", err)
	}
	if c.EventsPoll != "" {
		if s.eventsPoll, err = time.ParseDuration(c.EventsPoll); err != nil || s.eventsPoll <= 0 {
			return settings{}, fmt.Errorf("eventsPoll %q is not a positive duration", c.EventsPoll)
		}
	}
	switch c.Log {
	case "", "on", "stderr":
	case "off":
		s.quiet = true
	default:
		return settings{}, fmt.Errorf("log %q: use on or off", c.Log)
	}
	return s, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// returnNames are NVML's return codes by the names of go-nvml's constants.
var returnNames = map[string]nvml.Return{
	"SUCCESS":                         nvml.SUCCESS,
	"ERROR_UNINITIALIZED":             nvml.ERROR_UNINITIALIZED,
	"ERROR_INVALID_ARGUMENT":          nvml.ERROR_INVALID_ARGUMENT,
	"ERROR_NOT_SUPPORTED":             nvml.ERROR_NOT_SUPPORTED,
	"ERROR_NO_PERMISSION":             nvml.ERROR_NO_PERMISSION,
	"ERROR_ALREADY_INITIALIZED":       nvml.ERROR_ALREADY_INITIALIZED,
	"ERROR_NOT_FOUND":                 nvml.ERROR_NOT_FOUND,
	"ERROR_INSUFFICIENT_SIZE":         nvml.ERROR_INSUFFICIENT_SIZE,
	"ERROR_INSUFFICIENT_POWER":        nvml.ERROR_INSUFFICIENT_POWER,
	"ERROR_DRIVER_NOT_LOADED":         nvml.ERROR_DRIVER_NOT_LOADED,
	"ERROR_TIMEOUT":                   nvml.ERROR_TIMEOUT,
	"ERROR_IRQ_ISSUE":                 nvml.ERROR_IRQ_ISSUE,
	"ERROR_LIBRARY_NOT_FOUND":         nvml.ERROR_LIBRARY_NOT_FOUND,
	"ERROR_FUNCTION_NOT_FOUND":        nvml.ERROR_FUNCTION_NOT_FOUND,
	"ERROR_CORRUPTED_INFOROM":         nvml.ERROR_CORRUPTED_INFOROM,
	"ERROR_GPU_IS_LOST":               nvml.ERROR_GPU_IS_LOST,
	"ERROR_RESET_REQUIRED":            nvml.ERROR_RESET_REQUIRED,
	"ERROR_OPERATING_SYSTEM":          nvml.ERROR_OPERATING_SYSTEM,
	"ERROR_LIB_RM_VERSION_MISMATCH":   nvml.ERROR_LIB_RM_VERSION_MISMATCH,
	"ERROR_IN_USE":                    nvml.ERROR_IN_USE,
	"ERROR_MEMORY":                    nvml.ERROR_MEMORY,
	"ERROR_NO_DATA":                   nvml.ERROR_NO_DATA,
	"ERROR_VGPU_ECC_NOT_SUPPORTED":    nvml.ERROR_VGPU_ECC_NOT_SUPPORTED,
	"ERROR_INSUFFICIENT_RESOURCES":    nvml.ERROR_INSUFFICIENT_RESOURCES,
	"ERROR_FREQ_NOT_SUPPORTED":        nvml.ERROR_FREQ_NOT_SUPPORTED,
	"ERROR_ARGUMENT_VERSION_MISMATCH": nvml.ERROR_ARGUMENT_VERSION_MISMATCH,
	"ERROR_DEPRECATED":                nvml.ERROR_DEPRECATED,
	"ERROR_NOT_READY":                 nvml.ERROR_NOT_READY,
	"ERROR_GPU_NOT_FOUND":             nvml.ERROR_GPU_NOT_FOUND,
	"ERROR_INVALID_STATE":             nvml.ERROR_INVALID_STATE,
	"ERROR_RESET_TYPE_NOT_SUPPORTED":  nvml.ERROR_RESET_TYPE_NOT_SUPPORTED,
	"ERROR_UNKNOWN":                   nvml.ERROR_UNKNOWN,
}

// parseReturn parses an NVML return code: a name of returnNames, with or
// without "ERROR_" or "NVML_", in any case, or a number. Empty is SUCCESS.
func parseReturn(s string) (nvml.Return, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nvml.SUCCESS, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return nvml.Return(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "NVML_")
	if r, ok := returnNames[name]; ok {
		return r, nil
	}
	if r, ok := returnNames["ERROR_"+name]; ok {
		return r, nil
	}
	return 0, fmt.Errorf("%q is no NVML return code: use a number or a name such as ERROR_DRIVER_NOT_LOADED", s)
}

// delays are per-call delays by C function name; "*" is every call.
type delays map[string]time.Duration

func (d delays) of(fn string) time.Duration {
	if v, ok := d[fn]; ok {
		return v
	}
	return d["*"]
}

func parseDelayMap(m map[string]string) (delays, error) {
	out := delays{}
	for fn, v := range m {
		dur, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || dur < 0 {
			return nil, fmt.Errorf("%s: %q is not a duration", fn, v)
		}
		out[strings.TrimSpace(fn)] = dur
	}
	return out, nil
}

// parseDelays parses GPUDRA_MOCK_NVML_DELAY: "20ms", or
// "nvmlDeviceGetMemoryInfo=2s,*=1ms".
func parseDelays(s string) (delays, error) {
	m := map[string]string{}
	for _, f := range splitList(s) {
		fn, v, ok := strings.Cut(f, "=")
		if !ok {
			fn, v = "*", f
		}
		m[fn] = v
	}
	return parseDelayMap(m)
}

// liveKnob caches the parse of a live environment variable, so that a call
// costs a getenv and a string comparison while the variable stays put.
type liveKnob[T any] struct {
	env   string
	parse func(string) (T, error)

	mu    sync.Mutex
	raw   string
	value T
	err   error
	read  bool
}

// get returns the parsed value and whether the variable is set; a value
// that does not parse is reported once on stderr and counts as unset.
func (k *liveKnob[T]) get() (T, bool) {
	raw := getenv(k.env)
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.read || raw != k.raw {
		k.read, k.raw = true, raw
		k.value, k.err = k.parse(raw)
		if k.err != nil && raw != "" {
			logf("ignoring %s=%q: %v", k.env, raw, k.err)
		}
	}
	var zero T
	if raw == "" || k.err != nil {
		return zero, false
	}
	return k.value, true
}

var (
	liveInitError = &liveKnob[nvml.Return]{env: envInitError, parse: parseReturn}
	liveDelays    = &liveKnob[delays]{env: envDelay, parse: parseDelays}
)

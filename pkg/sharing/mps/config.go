package mps

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
	"github.com/gpudra/gpudra/pkg/sharing"
)

const (
	mib = 1 << 20
	// maxPinnedLimitMiB (1Pi) is far above the memory of any GPU.
	maxPinnedLimitMiB = 1 << 30

	fieldPercentage   = "sharing.mpsConfig.defaultActiveThreadPercentage"
	fieldDefaultLimit = "sharing.mpsConfig.defaultPinnedDeviceMemoryLimit"
	fieldPerDevice    = "sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit"
)

// uuidPattern is what a device UUID may look like; it keeps the UUIDs that
// end up in the daemon's shell script free of shell syntax. MIG UUIDs of old
// drivers look like MIG-GPU-<uuid>/<gi>/<ci>.
var uuidPattern = regexp.MustCompile(`^(GPU|MIG)-[A-Za-z0-9][A-Za-z0-9/-]*$`)

// daemonConfig is what the MPS control daemon of one claim runs with.
type daemonConfig struct {
	// UUIDs of the devices the daemon serves, in allocation order: the
	// CUDA device ordinals of its clients.
	UUIDs []string
	// Names are the devices' names in the ResourceSlice, same order.
	Names []string
	// ActiveThreadPercentage is nil when the MPS default applies.
	ActiveThreadPercentage *int
	// PinnedLimits holds the devices that have a pinned memory limit, in
	// device order.
	PinnedLimits []pinnedLimit
	// MultiUser starts the daemon in multi-user mode (-M): mpsConfig.multiUser.
	MultiUser bool
}

// pinnedLimit is the pinned device memory limit of one device.
type pinnedLimit struct {
	UUID string `json:"uuid"`
	MiB  int64  `json:"mib"`
}

// Value is the limit as MPS takes it: whole megabytes with the suffix M.
func (l pinnedLimit) Value() string { return strconv.FormatInt(l.MiB, 10) + "M" }

// hash identifies the devices, limits and mode; a daemon Pod whose
// annotation differs runs with other settings. It covers nothing else (in
// particular not the Pod template), so that plugin upgrades keep running
// daemons; multiUser is left out when false, so that daemons started
// before the field existed keep their hash.
func (d *daemonConfig) hash() string {
	b, _ := json.Marshal(struct {
		UUIDs     []string      `json:"uuids"`
		Thread    *int          `json:"thread,omitempty"`
		Limits    []pinnedLimit `json:"limits,omitempty"`
		MultiUser bool          `json:"multiUser,omitempty"`
	}{d.UUIDs, d.ActiveThreadPercentage, d.PinnedLimits, d.MultiUser})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// mpsDevices returns the claim's devices with strategy MPS, each once, in
// allocation order.
func mpsDevices(c sharing.Claim) []sharing.Device {
	var out []sharing.Device
	seen := map[string]bool{}
	for _, d := range c.Devices {
		if d.Strategy() != configapi.MpsStrategy || seen[d.Name] {
			continue
		}
		seen[d.Name] = true
		out = append(out, d)
	}
	return out
}

// resolve checks the MPS settings of the claim and returns what its daemon
// runs with; nil when no device of the claim uses MPS. Every error names the
// claim, the field and the accepted values.
func resolve(c sharing.Claim) (*daemonConfig, error) {
	devs := mpsDevices(c)
	if len(devs) == 0 {
		return nil, nil
	}
	ref := c.Ref()
	var migs []string
	for _, d := range devs {
		if d.AdminAccess {
			return nil, fmt.Errorf("%s: device %s has admin access and sharing.strategy %q: a device with admin access "+
				"is shared with the claim that uses it, so it cannot get an MPS control daemon; "+
				"remove the MPS config from the admin-access request, or drop adminAccess", ref, d.Name, configapi.MpsStrategy)
		}
		if !uuidPattern.MatchString(d.UUID) {
			return nil, fmt.Errorf("%s: device %s has UUID %q, which is not a GPU or MIG UUID (GPU-... or MIG-...): "+
				"the node's inventory is inconsistent; restart the plugin so that it discovers the devices again", ref, d.Name, d.UUID)
		}
		if d.Type == devices.KindMIG || strings.HasPrefix(d.UUID, "MIG-") {
			migs = append(migs, d.Name)
		}
	}
	if len(migs) > 0 && len(devs) > 1 {
		return nil, fmt.Errorf("%s: sharing.strategy %q is set for %d devices including MIG devices %v: CUDA enumerates "+
			"one MIG device per process, so an MPS control daemon serves either full GPUs or exactly one MIG device; "+
			"request the MIG device in a claim of its own, or use MPS on full GPUs only", ref, configapi.MpsStrategy, len(devs), migs)
	}

	cfg := mpsConfigOf(devs[0])
	for _, d := range devs[1:] {
		if !equality.Semantic.DeepEqual(cfg, mpsConfigOf(d)) {
			return nil, fmt.Errorf("%s: devices %s and %s have different sharing.mpsConfig: one claim has one MPS control daemon, "+
				"so all its MPS devices need the same mpsConfig; use one config for all requests (set per-device memory "+
				"limits with %s)", ref, devs[0].Name, d.Name, fieldPerDevice)
		}
	}

	out := &daemonConfig{MultiUser: cfg.MultiUser}
	for _, d := range devs {
		out.UUIDs = append(out.UUIDs, d.UUID)
		out.Names = append(out.Names, d.Name)
	}
	if p := cfg.DefaultActiveThreadPercentage; p != nil {
		if *p < 1 || *p > 100 {
			return nil, fmt.Errorf("%s: %s %d is out of range: use an integer from 1 to 100", ref, fieldPercentage, *p)
		}
		v := *p
		out.ActiveThreadPercentage = &v
	}

	limits := make([]int64, len(devs)) // MiB by device index; 0 = none
	if q := cfg.DefaultPinnedDeviceMemoryLimit; q != nil {
		v, err := limitMiB(ref, fieldDefaultLimit, q.AsApproximateFloat64())
		if err != nil {
			return nil, err
		}
		for i := range limits {
			limits[i] = v
		}
	}
	keys := make([]string, 0, len(cfg.DefaultPerDevicePinnedMemoryLimit))
	for k := range cfg.DefaultPerDevicePinnedMemoryLimit {
		keys = append(keys, k)
	}
	slices.Sort(keys) // report the same key first every time
	byKey := map[int]string{}
	for _, k := range keys {
		field := fmt.Sprintf("%s[%q]", fieldPerDevice, k)
		i, ok := deviceIndex(out.UUIDs, k)
		if !ok {
			return nil, fmt.Errorf("%s: %s: %q is not an MPS device of the claim: use one of %s", ref, field, k, allowedKeys(out))
		}
		if other, dup := byKey[i]; dup {
			return nil, fmt.Errorf("%s: %s: device %s (%s) already has a limit under key %q: give each device one limit",
				ref, field, out.Names[i], out.UUIDs[i], other)
		}
		byKey[i] = k
		q := cfg.DefaultPerDevicePinnedMemoryLimit[k]
		v, err := limitMiB(ref, field, q.AsApproximateFloat64())
		if err != nil {
			return nil, err
		}
		limits[i] = v
	}
	for i, v := range limits {
		if v > 0 {
			out.PinnedLimits = append(out.PinnedLimits, pinnedLimit{UUID: out.UUIDs[i], MiB: v})
		}
	}
	return out, nil
}

// mpsConfigOf returns the device's MPS settings; an absent mpsConfig is the
// same as an empty one.
func mpsConfigOf(d sharing.Device) *configapi.MpsConfig {
	if c := d.MpsConfig(); c != nil {
		return c
	}
	return &configapi.MpsConfig{}
}

// limitMiB converts a limit in bytes to whole MiB (rounded down, as MPS
// takes it) and checks its range.
func limitMiB(ref, field string, bytes float64) (int64, error) {
	switch {
	case bytes < mib:
		return 0, fmt.Errorf("%s: %s %s is too small: use a quantity of at least 1Mi, such as 512Mi or 2Gi", ref, field, bytesText(bytes))
	case bytes > maxPinnedLimitMiB*mib:
		return 0, fmt.Errorf("%s: %s %s is too large: use a quantity of at most 1Pi, such as 512Mi or 2Gi", ref, field, bytesText(bytes))
	}
	return int64(bytes / mib), nil
}

func bytesText(b float64) string {
	return strconv.FormatFloat(b, 'g', 6, 64) + " bytes"
}

// deviceIndex resolves a key of defaultPerDevicePinnedMemoryLimit: a UUID of
// one of uuids, or an index into uuids.
func deviceIndex(uuids []string, key string) (int, bool) {
	if i := slices.Index(uuids, key); i >= 0 {
		return i, true
	}
	n, err := strconv.Atoi(key)
	if err != nil || n < 0 || n >= len(uuids) || strconv.Itoa(n) != key {
		return 0, false
	}
	return n, true
}

func allowedKeys(d *daemonConfig) string {
	var parts []string
	for i, u := range d.UUIDs {
		parts = append(parts, fmt.Sprintf("%q or %q (device %s)", strconv.Itoa(i), u, d.Names[i]))
	}
	return strings.Join(parts, ", ")
}

package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// CurrentVersion is the format version written by this code.
const CurrentVersion = "v1"

// ClaimRecord is the checkpoint of one prepared ResourceClaim.
type ClaimRecord struct {
	// Version is the format version of the code that wrote the record
	// (empty for records written before versions were recorded).
	Version string `json:"version"`
	// BootID is /proc/sys/kernel/random/boot_id of the boot in which the
	// claim was prepared (see ReadBootID). A record from another boot
	// describes state that a reboot has wiped.
	BootID     string `json:"bootID"`
	DriverName string `json:"driverName"`
	// ClaimUID is the claim's metadata.uid; it is also the record's file
	// name (see ValidateClaimUID).
	ClaimUID   string           `json:"claimUID"`
	Namespace  string           `json:"namespace"`
	Name       string           `json:"name"`
	PreparedAt time.Time        `json:"preparedAt"`
	Devices    []PreparedDevice `json:"devices"`
	// CDISpecName is the file name (not path) of the claim's transient CDI
	// spec.
	CDISpecName string `json:"cdiSpecName"`

	// Extra holds the top-level fields that this version does not know
	// (written by a newer version). They are written back unchanged, so
	// that a record read with Get and stored again with Put loses nothing.
	// Keys that name a known field are ignored when encoding.
	Extra map[string]json.RawMessage `json:"-"`
}

// PreparedDevice is one device allocated to a prepared claim.
type PreparedDevice struct {
	// Requests are the names of the claim's requests that the device
	// satisfies.
	Requests []string `json:"requests"`
	Pool     string   `json:"pool"`
	// Device is the device's name in the ResourceSlice, e.g. "gpu-0".
	Device string `json:"device"`
	// UUID is the GPU's UUID.
	UUID         string   `json:"uuid"`
	AdminAccess  bool     `json:"adminAccess,omitempty"`
	CDIDeviceIDs []string `json:"cdiDeviceIDs"`
	// Config is the effective opaque configuration, as JSON.
	Config json.RawMessage `json:"config,omitempty"`
	// MIG is the MIG device that the driver creates for the claim (a
	// dynamic MIG device); nil for any other device.
	MIG *MIGInstance `json:"mig,omitempty"`
	// ShareID is the allocation's share ID: set when the device allows
	// several allocations (consumable capacity).
	ShareID string `json:"shareID,omitempty"`
	// Share holds the limits of a share that leaves room for others; nil
	// for exclusive use, which includes a share that consumed all of the
	// device's capacity.
	Share *Share `json:"share,omitempty"`

	// Extra holds the per-device fields that this version does not know;
	// see ClaimRecord.Extra.
	Extra map[string]json.RawMessage `json:"-"`
}

// MIGInstance is a MIG device that the driver creates for a claim: a GPU
// instance at a placement with one compute instance spanning it. The record
// holding it is written before the instance is created (Created false: the
// intent) and again once it exists (Created true, with its IDs and UUID),
// so that every instance the driver made is named by a record until it is
// destroyed: at start-up, an instance of an intent is rolled back, and an
// instance that no record names was made by someone else.
type MIGInstance struct {
	// ParentUUID is the GPU's UUID.
	ParentUUID string `json:"parentUUID"`
	// GPUInstanceProfileID and ComputeInstanceProfileID are NVML's
	// profile IDs (as a GPU instance's info reports them).
	GPUInstanceProfileID     int `json:"gpuInstanceProfileID"`
	ComputeInstanceProfileID int `json:"computeInstanceProfileID"`
	// GPUInstanceProfileIndex is the profile's index in NVML's profile
	// enumeration (inventory.MIGProfile.ProfileIndex).
	GPUInstanceProfileIndex int `json:"gpuInstanceProfileIndex"`
	// PlacementStart and PlacementSize are the GPU instance's memory
	// slices.
	PlacementStart int `json:"placementStart"`
	PlacementSize  int `json:"placementSize"`
	// Created tells that the instance was created and the fields below
	// are set.
	Created           bool   `json:"created"`
	GPUInstanceID     int    `json:"gpuInstanceID"`
	ComputeInstanceID int    `json:"computeInstanceID"`
	UUID              string `json:"uuid,omitempty"`
}

// Share is a claim's share of a GPU that several claims share, with the
// limits its allocation consumed (see sharing.Share).
type Share struct {
	// MemoryBytes is the memory the share consumed; 0: no memory limit.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// ComputeShares of ComputeTotal is its part of the GPU's compute;
	// ComputeTotal 0: no compute limit.
	ComputeShares int64 `json:"computeShares,omitempty"`
	ComputeTotal  int64 `json:"computeTotal,omitempty"`
}

// The alias types have the fields of the public types but not their
// methods, so that encoding them does not recurse into MarshalJSON or
// UnmarshalJSON.
type (
	claimRecordFields    ClaimRecord
	preparedDeviceFields PreparedDevice
)

var (
	claimRecordKnown    = knownJSONNames(reflect.TypeFor[claimRecordFields]())
	preparedDeviceKnown = knownJSONNames(reflect.TypeFor[preparedDeviceFields]())
)

// MarshalJSON encodes the known fields followed by the Extra fields.
func (r ClaimRecord) MarshalJSON() ([]byte, error) {
	known, err := json.Marshal(claimRecordFields(r))
	if err != nil {
		return nil, err
	}
	return appendExtra(known, r.Extra, claimRecordKnown)
}

// UnmarshalJSON decodes the known fields and keeps the others in Extra.
func (r *ClaimRecord) UnmarshalJSON(data []byte) error {
	var f claimRecordFields
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	extra, err := extractExtra(data, claimRecordKnown)
	if err != nil {
		return err
	}
	f.Extra = extra
	*r = ClaimRecord(f)
	return nil
}

// MarshalJSON encodes the known fields followed by the Extra fields.
func (d PreparedDevice) MarshalJSON() ([]byte, error) {
	known, err := json.Marshal(preparedDeviceFields(d))
	if err != nil {
		return nil, err
	}
	return appendExtra(known, d.Extra, preparedDeviceKnown)
}

// UnmarshalJSON decodes the known fields and keeps the others in Extra.
func (d *PreparedDevice) UnmarshalJSON(data []byte) error {
	var f preparedDeviceFields
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	extra, err := extractExtra(data, preparedDeviceKnown)
	if err != nil {
		return err
	}
	f.Extra = extra
	*d = PreparedDevice(f)
	return nil
}

// knownJSONNames returns the JSON names of the fields of the struct type t
// that encoding/json encodes.
func knownJSONNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		names = append(names, name)
	}
	return names
}

// isKnown reports whether encoding/json decodes the key into one of the
// fields named known. The decoder matches field names case-insensitively, so
// a key differing only in case is known (and consumed), not extra.
func isKnown(key string, known []string) bool {
	return slices.ContainsFunc(known, func(k string) bool { return strings.EqualFold(k, key) })
}

// extractExtra returns the members of the JSON object data whose keys are not
// known, or nil if there are none. data that is JSON null yields nil.
func extractExtra(data []byte, known []string) (map[string]json.RawMessage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, err
	}
	var extra map[string]json.RawMessage
	for k, v := range all {
		if isKnown(k, known) {
			continue
		}
		if extra == nil {
			extra = make(map[string]json.RawMessage)
		}
		extra[k] = v
	}
	return extra, nil
}

// appendExtra appends the extra members, in key order, to the encoded JSON
// object obj. Keys that are known are skipped: the field's own value wins.
func appendExtra(obj []byte, extra map[string]json.RawMessage, known []string) ([]byte, error) {
	if len(extra) == 0 {
		return obj, nil
	}
	if len(obj) < 2 || obj[len(obj)-1] != '}' {
		return nil, errors.New("checkpoint: encoded record is not a JSON object")
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if !isKnown(k, known) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return obj, nil
	}
	slices.Sort(keys)

	var buf bytes.Buffer
	buf.Grow(len(obj) + 64*len(keys))
	buf.Write(obj[:len(obj)-1])
	empty := len(bytes.TrimSpace(obj[1:len(obj)-1])) == 0
	for i, k := range keys {
		v := extra[k]
		if len(v) == 0 {
			// Like encoding/json does for a nil json.RawMessage.
			v = json.RawMessage("null")
		}
		if !json.Valid(v) {
			return nil, fmt.Errorf("checkpoint: extra field %q does not hold valid JSON", k)
		}
		if i > 0 || !empty {
			buf.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// decodeRecord decodes the content of a record file.
func decodeRecord(data []byte) (*ClaimRecord, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, errors.New("record is not a JSON object")
	}
	rec := new(ClaimRecord)
	if err := json.Unmarshal(data, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// encodeRecord encodes a record for its file.
func encodeRecord(rec *ClaimRecord) ([]byte, error) {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

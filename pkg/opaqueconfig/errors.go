package opaqueconfig

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

// ConfigError is a config of this driver in a claim that cannot be used.
// Error() reads
//
//	claim NS/NAME (uid UID): claim config #2 (spec.devices.config[1]) for request "gpu": REASON: FIX
type ConfigError struct {
	ClaimNamespace string
	ClaimName      string
	ClaimUID       types.UID
	// ConfigIndex is the index of the config in
	// claim.Status.Allocation.Devices.Config.
	ConfigIndex int
	// Position counts the configs of the same source from 1: claim config
	// #N is spec.devices.config[N-1] of the claim.
	Position int
	// Source is SourceClass or SourceClaim (or the unknown source as given).
	Source string
	// Requests are the requests that the config targets; empty: all.
	Requests []string
	// DeviceClass names the DeviceClass of a class config, when the claim
	// tells it.
	DeviceClass string
	// Reason says what is wrong; Fix says what to do about it.
	Reason string
	Fix    string
	// Err is the underlying error (a *DecodeError or the error of
	// Validate), or nil.
	Err error
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "claim %s/%s (uid %s): %s config #%d", e.ClaimNamespace, e.ClaimName, e.ClaimUID, e.Source, e.Position)
	switch {
	case e.Source == SourceClaim:
		fmt.Fprintf(&b, " (spec.devices.config[%d])", e.Position-1)
	case e.Source == SourceClass && e.DeviceClass != "":
		fmt.Fprintf(&b, " (from DeviceClass %s)", e.DeviceClass)
	}
	b.WriteString(" for ")
	b.WriteString(requestList(e.Requests))
	b.WriteString(": ")
	b.WriteString(e.Reason)
	if e.Fix != "" {
		b.WriteString(": ")
		b.WriteString(e.Fix)
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

func requestList(requests []string) string {
	switch len(requests) {
	case 0:
		return "all requests"
	case 1:
		return "request " + strconv.Quote(requests[0])
	}
	quoted := make([]string, len(requests))
	for i, r := range requests {
		quoted[i] = strconv.Quote(r)
	}
	return "requests " + strings.Join(quoted, ", ")
}

func claimRef(claim *resourceapi.ResourceClaim) string {
	return fmt.Sprintf("claim %s/%s (uid %s)", claim.Namespace, claim.Name, claim.UID)
}

func newConfigError(claim *resourceapi.ResourceClaim, d decoded, reason, fix string, err error) *ConfigError {
	e := &ConfigError{
		ClaimNamespace: claim.Namespace,
		ClaimName:      claim.Name,
		ClaimUID:       claim.UID,
		ConfigIndex:    d.index,
		Position:       d.position,
		Source:         d.source,
		Requests:       d.requests,
		Reason:         reason,
		Fix:            fix,
		Err:            err,
	}
	if d.source == SourceClass {
		e.DeviceClass = deviceClassOf(claim, d.requests)
	}
	return e
}

// location says where the user edits a config.
func location(claim *resourceapi.ResourceClaim, d decoded) string {
	if d.source == SourceClass {
		if class := deviceClassOf(claim, d.requests); class != "" {
			return fmt.Sprintf("in spec.config of DeviceClass %s", class)
		}
		return fmt.Sprintf("in spec.config of the DeviceClass of %s", requestList(d.requests))
	}
	return fmt.Sprintf("in spec.devices.config[%d] of the claim (or of the ResourceClaimTemplate it was made from)", d.position-1)
}

func decodeConfigError(claim *resourceapi.ResourceClaim, d decoded, err error) *ConfigError {
	fix := "fix the opaque parameters " + location(claim, d)
	if !strings.Contains(err.Error(), "use apiVersion") { // e.g. malformed JSON
		fix += fmt.Sprintf(": use apiVersion %s with kind %s or %s",
			configapi.SchemeGroupVersion, configapi.GpuConfigKind, configapi.MigDeviceConfigKind)
	}
	var derr *DecodeError
	if errors.As(err, &derr) && derr.KnownKind() {
		fix = fmt.Sprintf("fix the opaque parameters %s to match apiVersion %s kind %s",
			location(claim, d), derr.APIVersion, derr.Kind)
	}
	return newConfigError(claim, d, err.Error(), fix, err)
}

func mismatchError(claim *resourceapi.ResourceClaim, d decoded, result resourceapi.DeviceRequestAllocationResult, dt DeviceType) *ConfigError {
	kind := d.config.GetObjectKind().GroupVersionKind().Kind
	device, want := "a full GPU", configapi.GpuConfigKind
	if dt == DeviceTypeMIG {
		device, want = "a MIG device", configapi.MigDeviceConfigKind
	}
	reason := fmt.Sprintf("a %s cannot configure device %s of request %q, which is %s", kind, result.Device, result.Request, device)
	fix := fmt.Sprintf("use kind %s %s, or limit the config's requests to those that allocate the devices a %s is for",
		want, location(claim, d), kind)
	return newConfigError(claim, d, reason, fix, nil)
}

// deviceClassOf returns the DeviceClass of the single request that a class
// config targets, or "".
func deviceClassOf(claim *resourceapi.ResourceClaim, requests []string) string {
	if len(requests) != 1 {
		return ""
	}
	parent, sub, isSub := strings.Cut(requests[0], "/")
	for _, r := range claim.Spec.Devices.Requests {
		if r.Name != parent {
			continue
		}
		if !isSub {
			if r.Exactly != nil {
				return r.Exactly.DeviceClassName
			}
			return ""
		}
		for _, s := range r.FirstAvailable {
			if s.Name == sub {
				return s.DeviceClassName
			}
		}
	}
	return ""
}

package opaqueconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"sigs.k8s.io/yaml"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

// useKinds is the fix for a missing or unknown apiVersion or kind.
var useKinds = fmt.Sprintf("use apiVersion %s with kind %s or %s", configapi.SchemeGroupVersion.String(), configapi.GpuConfigKind, configapi.MigDeviceConfigKind)

var (
	decodeScheme   = newDecodeScheme()
	jsonSerializer = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, decodeScheme, decodeScheme,
		kjson.SerializerOptions{Strict: true})
	yamlSerializer = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, decodeScheme, decodeScheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
)

func newDecodeScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := configapi.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// DecodeError is the error of Decode. Error() lists the problems, each in
// the user's terms with the field path and the accepted values, joined by
// "; ".
type DecodeError struct {
	// APIVersion and Kind are the values found in the input; empty when
	// missing or unreadable.
	APIVersion string
	Kind       string
	// Problems holds one message per problem found; never empty.
	Problems []string
}

func (e *DecodeError) Error() string {
	return strings.Join(e.Problems, "; ")
}

// KnownKind reports whether the input named one of the kinds of the v1beta1
// API (so that its problems are in the body rather than in apiVersion or
// kind).
func (e *DecodeError) KnownKind() bool {
	return e.APIVersion == configapi.SchemeGroupVersion.String() &&
		(e.Kind == configapi.GpuConfigKind || e.Kind == configapi.MigDeviceConfigKind)
}

// Decode decodes opaque parameters, JSON or YAML, into a *v1beta1.GpuConfig
// or a *v1beta1.MigDeviceConfig. Decoding is strict: an unknown or duplicate
// field, a missing or unknown apiVersion or kind, a value of the wrong type
// or malformed input is an error, always a *DecodeError. Decode does not
// default (see v1beta1.Config.Normalize) or validate (see
// v1beta1.Config.Validate) the object.
func Decode(raw []byte) (runtime.Object, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return nil, &DecodeError{Problems: []string{"the opaque parameters are empty: " + useKinds}}
	}

	serializer := jsonSerializer
	data := trimmed // JSON: for the apiVersion/kind check and error details
	if !json.Valid(trimmed) {
		converted, err := yaml.YAMLToJSON(trimmed)
		if err != nil {
			if trimmed[0] == '{' || trimmed[0] == '[' {
				return nil, &DecodeError{Problems: []string{"malformed JSON: " + jsonSyntaxError(trimmed)}}
			}
			return nil, &DecodeError{Problems: []string{"malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
		}
		serializer = yamlSerializer
		data = converted
	}

	derr := &DecodeError{}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		derr.Problems = []string{fmt.Sprintf("the opaque parameters are %s, not an object: %s", jsonKind(data), useKinds)}
		return nil, derr
	}
	var problems []string
	derr.APIVersion, problems = stringField(fields, "apiVersion", problems)
	derr.Kind, problems = stringField(fields, "kind", problems)
	if len(problems) > 0 {
		derr.Problems = problems
		return nil, derr
	}
	switch {
	case derr.APIVersion == "" && derr.Kind == "":
		derr.Problems = []string{"apiVersion and kind are missing: " + useKinds}
	case derr.APIVersion == "":
		derr.Problems = []string{"apiVersion is missing: " + useKinds}
	case derr.Kind == "":
		derr.Problems = []string{"kind is missing: " + useKinds}
	case !derr.KnownKind():
		msg := fmt.Sprintf("apiVersion %q kind %q is not known: %s", derr.APIVersion, derr.Kind, useKinds)
		if derr.APIVersion == configapi.SchemeGroupVersion.String() {
			msg += caseHint(derr.Kind, []string{configapi.GpuConfigKind, configapi.MigDeviceConfigKind})
		}
		derr.Problems = []string{msg}
	}
	if len(derr.Problems) > 0 {
		return nil, derr
	}

	if p := quantityProblem(data); p != "" {
		derr.Problems = []string{p}
		return nil, derr
	}

	obj, _, err := serializer.Decode(trimmed, nil, nil)
	if err != nil {
		derr.Problems = describeDecodeError(err, data)
		return nil, derr
	}
	switch obj.(type) {
	case *configapi.GpuConfig, *configapi.MigDeviceConfig:
		return obj, nil
	}
	// Unreachable: the scheme holds these two kinds only.
	derr.Problems = []string{fmt.Sprintf("decoded an unexpected %T: %s", obj, useKinds)}
	return nil, derr
}

// stringField reads a string field of the top-level object; absent and null
// read as "".
func stringField(fields map[string]json.RawMessage, name string, problems []string) (string, []string) {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return "", problems
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", append(problems, fmt.Sprintf("%s must be a string, not %s: %s", name, jsonKind(raw), useKinds))
	}
	return s, problems
}

// caseHint points out a kind that differs from an accepted one in case only.
func caseHint(v string, accepted []string) string {
	for _, a := range accepted {
		if strings.EqualFold(v, a) {
			return " (values are case-sensitive)"
		}
	}
	return ""
}

var (
	yamlDuplicateRE = regexp.MustCompile(`line (\d+): key (".*") already set in map`)
	typeErrorRE     = regexp.MustCompile(`^json: cannot unmarshal (.+) into Go struct field [A-Za-z0-9_]+\.(\S+) of type (.+)$`)
)

// describeDecodeError turns an error of the serializer into problems in the
// user's terms. data is the input as JSON.
func describeDecodeError(err error, data []byte) []string {
	if se, ok := runtime.AsStrictDecodingError(err); ok {
		var problems []string
		for _, e := range se.Errors() {
			problems = append(problems, describeStrictError(e, data)...)
		}
		if len(problems) > 0 {
			return problems
		}
	}
	if errors.Is(err, resource.ErrFormatWrong) || errors.Is(err, resource.ErrSuffix) || errors.Is(err, resource.ErrNumeric) {
		if p := quantityProblem(data); p != "" {
			return []string{p}
		}
		return []string{"a memory limit in sharing.mpsConfig is not a quantity: " + useQuantity}
	}
	if m := typeErrorRE.FindStringSubmatch(err.Error()); m != nil {
		return []string{fmt.Sprintf("%s: %s is not allowed here: use %s", m[2], valueWords(m[1]), typeWords(m[3]))}
	}
	return []string{"invalid opaque parameters: " + err.Error()}
}

func describeStrictError(err error, data []byte) []string {
	msg := err.Error()
	if dups := yamlDuplicateRE.FindAllStringSubmatch(msg, -1); dups != nil {
		var problems []string
		for _, m := range dups {
			problems = append(problems, fmt.Sprintf("duplicate field %s (line %s): give each field once", m[2], m[1]))
		}
		return problems
	}
	if path, ok := strings.CutPrefix(msg, "unknown field "); ok {
		if hint := acceptedFields(data, strings.Trim(path, `"`)); hint != "" {
			return []string{msg + ": " + hint}
		}
		return []string{msg}
	}
	if strings.HasPrefix(msg, "duplicate field ") {
		return []string{msg + ": give each field once"}
	}
	return []string{strings.TrimPrefix(msg, "yaml: ")}
}

// acceptedFields names the fields accepted next to the unknown field path.
func acceptedFields(data []byte, path string) string {
	var tm struct {
		Kind string `json:"kind"`
	}
	_ = json.Unmarshal(data, &tm)
	var t reflect.Type
	switch tm.Kind {
	case configapi.GpuConfigKind:
		t = reflect.TypeFor[configapi.GpuConfig]()
	case configapi.MigDeviceConfigKind:
		t = reflect.TypeFor[configapi.MigDeviceConfig]()
	default:
		return ""
	}
	parts := strings.Split(path, ".")
	parent := strings.Join(parts[:len(parts)-1], ".")
	for _, name := range parts[:len(parts)-1] {
		t = fieldType(t, name)
		if t == nil {
			return ""
		}
	}
	names := jsonFieldNames(t)
	if len(names) == 0 {
		return ""
	}
	where := tm.Kind
	if parent != "" {
		where = parent
	}
	return fmt.Sprintf("%s accepts %s (field names are case-sensitive)", where, strings.Join(names, ", "))
}

// fieldType returns the struct type of the field named name (JSON name) of
// struct type t, or nil.
func fieldType(t reflect.Type, name string) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && tag == "" {
			if ft := fieldType(f.Type, name); ft != nil {
				return ft
			}
			continue
		}
		if tag == name {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() != reflect.Struct {
				return nil
			}
			return ft
		}
	}
	return nil
}

// jsonFieldNames lists the JSON field names of struct type t, in order,
// without those that a kind rejects anyway.
func jsonFieldNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case f.Type == reflect.TypeFor[metav1.TypeMeta]():
			names = append(names, "apiVersion", "kind")
		case f.Anonymous && tag == "":
			names = append(names, jsonFieldNames(f.Type)...)
		case tag == "" || tag == "-":
		case t == reflect.TypeFor[configapi.MigDeviceSharing]() && tag == "timeSlicingConfig":
		default:
			names = append(names, tag)
		}
	}
	return names
}

const useQuantity = `use a quantity such as "512Mi" or "2Gi"`

// Bounds of a usable quantity. resource.ParseQuantity takes time that grows
// steeply with the exponent: "1e-99999999" takes most of a minute.
const (
	maxQuantityLen      = 64
	maxQuantityExponent = 30
)

// quantityProblem checks every memory limit of the JSON data, including
// those of duplicate fields, before the strict decoder parses them. It
// returns the first problem, or "".
func quantityProblem(data []byte) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	problem := ""
	var walk func(path []string) bool
	walk = func(path []string) bool {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		field, isQuantity := quantityField(path)
		switch tok := tok.(type) {
		case json.Delim:
			if isQuantity && problem == "" {
				problem = fmt.Sprintf("%s is %s, not a quantity: %s", field, jsonKind([]byte{byte(tok)}), useQuantity)
			}
			for dec.More() {
				key := "[]"
				if tok == '{' {
					kt, err := dec.Token()
					if err != nil {
						return false
					}
					key, _ = kt.(string)
				}
				if !walk(append(path, key)) {
					return false
				}
			}
			_, err := dec.Token() // the closing delimiter
			return err == nil
		case bool:
			if isQuantity && problem == "" {
				problem = fmt.Sprintf("%s %v is not a quantity: %s", field, tok, useQuantity)
			}
		case string:
			if isQuantity && problem == "" {
				problem = checkQuantity(field, strconv.Quote(tok), tok)
			}
		case json.Number:
			if isQuantity && problem == "" {
				problem = checkQuantity(field, tok.String(), tok.String())
			}
		}
		return true
	}
	walk(nil)
	return problem
}

// quantityField reports whether path is that of a memory limit, and names it.
func quantityField(path []string) (string, bool) {
	if len(path) < 3 || path[0] != "sharing" || path[1] != "mpsConfig" {
		return "", false
	}
	switch {
	case len(path) == 3 && path[2] == "defaultPinnedDeviceMemoryLimit":
		return "sharing.mpsConfig.defaultPinnedDeviceMemoryLimit", true
	case len(path) == 4 && path[2] == "defaultPerDevicePinnedMemoryLimit":
		return fmt.Sprintf("sharing.mpsConfig.defaultPerDevicePinnedMemoryLimit[%q]", path[3]), true
	}
	return "", false
}

func checkQuantity(field, shown, v string) string {
	if len(v) > maxQuantityLen {
		return fmt.Sprintf("%s is not a usable quantity: it is longer than %d characters; %s", field, maxQuantityLen, useQuantity)
	}
	if i := strings.LastIndexAny(v, "eE"); i >= 0 && i+1 < len(v) {
		if n, err := strconv.Atoi(v[i+1:]); err == nil && (n > maxQuantityExponent || n < -maxQuantityExponent) {
			return fmt.Sprintf("%s %s is not a usable quantity: its exponent is out of range; %s", field, shown, useQuantity)
		}
	}
	if _, err := resource.ParseQuantity(v); err != nil {
		return fmt.Sprintf("%s %s is not a quantity: %s", field, shown, useQuantity)
	}
	return ""
}

// valueWords describes the JSON value of a type error: "string", "number 5"...
func valueWords(v string) string {
	kind, detail, _ := strings.Cut(v, " ")
	switch kind {
	case "number":
		if detail != "" {
			return "the number " + detail
		}
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "array":
		return "an array"
	case "object":
		return "an object"
	}
	return v
}

// typeWords describes the Go type of a type error in API terms.
func typeWords(t string) string {
	switch {
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "an integer"
	case t == "string" || strings.HasSuffix(t, "Strategy") || strings.HasSuffix(t, "Interval"):
		return "a string"
	case t == "bool":
		return "a boolean"
	case t == "resource.Quantity":
		return `a quantity such as "512Mi" or "2Gi"`
	case strings.HasPrefix(t, "map[") || strings.HasPrefix(t, "v1beta1.") || strings.HasPrefix(t, "*v1beta1."):
		return "an object"
	}
	return t
}

// jsonKind names the kind of a JSON value by its first byte.
func jsonKind(data []byte) string {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return "empty"
	}
	switch data[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// jsonSyntaxError describes why data is not JSON, with line and column.
func jsonSyntaxError(data []byte) string {
	var v any
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		if err == nil {
			return "unexpected content"
		}
		return err.Error()
	}
	off := min(int(se.Offset), len(data))
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	if bytes.LastIndexByte(data[:off], '\n') < 0 {
		col = off
	}
	return fmt.Sprintf("%s (line %d, column %d)", se.Error(), line, col)
}

package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	legacyUID = "0b7e6f0e-3c2a-4c41-9d1e-6a0c1d2f0a00"
	v1UID     = "1c8f7a1f-4d3b-4d52-8e2f-7b1d2e3f1b11"
	futureUID = "2d9a8b2a-5e4c-4e63-9f3a-8c2e3f4a2c22"
)

// fixtureUIDs maps each fixture in testdata to the claim UID it holds.
var fixtureUIDs = map[string]string{
	"v0-legacy.json": legacyUID,
	"v1.json":        v1UID,
	"v2-future.json": futureUID,
}

func newTestStore(t testing.TB) *Store {
	t.Helper()
	s, err := NewStore(filepath.Join(t.TempDir(), "claims"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// installFixture copies a testdata fixture into the store as the record
// file of its claim and returns the fixture's content.
func installFixture(t *testing.T, s *Store, fixture string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", fixture))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(fixtureUIDs[fixture]), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

// generic decodes JSON into maps, slices and json.Number, for comparisons
// that ignore formatting, member order and escaping.
func generic(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return v
}

func testRecord(uid string) *ClaimRecord {
	return &ClaimRecord{
		BootID:     "5f0c6a7e-8f3b-4a8e-b2f4-1d2c3b4a5e6f",
		DriverName: "gpu.gpudra.io",
		ClaimUID:   uid,
		Namespace:  "default",
		Name:       "claim-" + uid,
		PreparedAt: time.Date(2025, 5, 6, 7, 8, 9, 10, time.UTC),
		Devices: []PreparedDevice{{
			Requests:     []string{"gpu"},
			Pool:         "node-1",
			Device:       "gpu-0",
			UUID:         "GPU-11111111-2222-3333-4444-555555555555",
			CDIDeviceIDs: []string{"k8s.gpu.gpudra.io/gpu=" + uid + "-gpu-0"},
			Config:       json.RawMessage(`{"kind":"GpuConfig","sharing":{"strategy":"TimeSlicing"}}`),
		}},
		CDISpecName: "k8s.gpu.gpudra.io-claim_" + uid + ".json",
	}
}

func TestFixturesLoad(t *testing.T) {
	s := newTestStore(t)
	for f := range fixtureUIDs {
		installFixture(t, s, f)
	}

	t.Run("v0-legacy", func(t *testing.T) {
		rec, err := s.Get(legacyUID)
		if err != nil || rec == nil {
			t.Fatalf("Get = %v, %v", rec, err)
		}
		if rec.Version != "" || rec.BootID != "" {
			t.Errorf("Version, BootID = %q, %q; want zero values", rec.Version, rec.BootID)
		}
		if rec.Namespace != "team-a" || rec.Name != "train-gpu" || rec.DriverName != "gpu.gpudra.io" {
			t.Errorf("unexpected identity: %+v", rec)
		}
		if len(rec.Devices) != 1 || rec.Devices[0].Config != nil || rec.Devices[0].Device != "gpu-0" {
			t.Errorf("unexpected devices: %+v", rec.Devices)
		}
		if rec.Extra != nil || rec.Devices[0].Extra != nil {
			t.Errorf("unexpected extra fields: %v, %v", rec.Extra, rec.Devices[0].Extra)
		}
	})

	t.Run("v1", func(t *testing.T) {
		rec, err := s.Get(v1UID)
		if err != nil || rec == nil {
			t.Fatalf("Get = %v, %v", rec, err)
		}
		want := &ClaimRecord{
			Version:    "v1",
			BootID:     "5f0c6a7e-8f3b-4a8e-b2f4-1d2c3b4a5e6f",
			DriverName: "gpu.gpudra.io",
			ClaimUID:   v1UID,
			Namespace:  "team-b",
			Name:       "infer-gpus",
			PreparedAt: time.Date(2025, 6, 15, 8, 30, 45, 123456789, time.UTC),
			Devices: []PreparedDevice{
				{
					Requests:     []string{"gpus"},
					Pool:         "node-2",
					Device:       "gpu-0",
					UUID:         "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
					CDIDeviceIDs: []string{"k8s.gpu.gpudra.io/gpu=" + v1UID + "-gpu-0"},
				},
				{
					Requests:     []string{"gpus", "monitor"},
					Pool:         "node-2",
					Device:       "gpu-1",
					UUID:         "GPU-ffffffff-0000-1111-2222-333333333333",
					AdminAccess:  true,
					CDIDeviceIDs: []string{"k8s.gpu.gpudra.io/gpu=" + v1UID + "-gpu-1"},
				},
			},
			CDISpecName: "k8s.gpu.gpudra.io-claim_" + v1UID + ".json",
		}
		gotConfig := rec.Devices[0].Config
		rec.Devices[0].Config = nil
		if !reflect.DeepEqual(rec, want) {
			t.Errorf("Get =\n%+v\nwant\n%+v", rec, want)
		}
		if !reflect.DeepEqual(generic(t, gotConfig), generic(t, []byte(
			`{"apiVersion":"gpu.gpudra.io/v1alpha1","kind":"GpuConfig","sharing":{"strategy":"TimeSlicing"}}`))) {
			t.Errorf("config = %s", gotConfig)
		}
	})

	t.Run("v2-future", func(t *testing.T) {
		rec, err := s.Get(futureUID)
		if err != nil || rec == nil {
			t.Fatalf("Get = %v, %v", rec, err)
		}
		if rec.Version != "v2" || rec.Namespace != "team-c" || rec.Name != "shared-gpu" {
			t.Errorf("unexpected known fields: %+v", rec)
		}
		if _, off := rec.PreparedAt.Zone(); off != 3600 {
			t.Errorf("preparedAt offset = %d, want 3600", off)
		}
		for _, k := range []string{"healthEpoch", "owner", "annotations"} {
			if _, ok := rec.Extra[k]; !ok {
				t.Errorf("top-level unknown field %q not kept; Extra = %v", k, rec.Extra)
			}
		}
		if len(rec.Extra) != 3 {
			t.Errorf("Extra has %d fields, want 3: %v", len(rec.Extra), rec.Extra)
		}
		if string(rec.Extra["healthEpoch"]) != "3" {
			t.Errorf("healthEpoch = %s, want 3", rec.Extra["healthEpoch"])
		}
		d := rec.Devices[0]
		if d.Device != "gpu-2" || len(d.Extra) != 2 || d.Extra["mps"] == nil || string(d.Extra["partition"]) != "null" {
			t.Errorf("unexpected device: %+v", d)
		}
	})

	t.Run("List", func(t *testing.T) {
		recs, loadErrs, err := s.List()
		if err != nil || len(loadErrs) != 0 {
			t.Fatalf("List errors: %v, %v", loadErrs, err)
		}
		if len(recs) != 3 {
			t.Fatalf("List returned %d records, want 3", len(recs))
		}
		// Ordered by file name.
		for i, uid := range []string{legacyUID, v1UID, futureUID} {
			if recs[i].ClaimUID != uid {
				t.Errorf("record %d is %s, want %s", i, recs[i].ClaimUID, uid)
			}
		}
	})
}

// TestFutureFieldsSurviveRewrite checks that a record written by a newer
// version loses nothing when this version reads it and writes it back.
func TestFutureFieldsSurviveRewrite(t *testing.T) {
	s := newTestStore(t)
	orig := installFixture(t, s, "v2-future.json")

	rec, err := s.Get(futureUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(rec); err != nil {
		t.Fatal(err)
	}
	if rec.Version != CurrentVersion {
		t.Errorf("Put left Version %q, want %q", rec.Version, CurrentVersion)
	}
	rewritten, err := os.ReadFile(s.path(futureUID))
	if err != nil {
		t.Fatal(err)
	}

	want := generic(t, orig).(map[string]any)
	got := generic(t, rewritten).(map[string]any)
	if got["version"] != CurrentVersion {
		t.Errorf("rewritten version = %v, want %s", got["version"], CurrentVersion)
	}
	delete(want, "version")
	delete(got, "version")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rewritten record differs from the original:\n got: %s\nwant: %s", rewritten, orig)
	}

	again, err := s.Get(futureUID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again.Extra, rec.Extra) {
		// The raw bytes may differ only by compaction and escaping.
		for k := range rec.Extra {
			if !reflect.DeepEqual(generic(t, again.Extra[k]), generic(t, rec.Extra[k])) {
				t.Errorf("Extra[%q] = %s after rewrite, want %s", k, again.Extra[k], rec.Extra[k])
			}
		}
		if len(again.Extra) != len(rec.Extra) {
			t.Errorf("Extra after rewrite = %v, want %v", again.Extra, rec.Extra)
		}
	}
}

func TestExtraNeverOverridesKnownFields(t *testing.T) {
	rec := testRecord("0a0a0a0a-0000-0000-0000-000000000000")
	rec.Version = CurrentVersion
	rec.Extra = map[string]json.RawMessage{
		"version":  json.RawMessage(`"v9"`),
		"Version":  json.RawMessage(`"v9"`),
		"new":      json.RawMessage(`{"a": [1, 2]}`),
		"nilValue": nil,
	}
	rec.Devices[0].Extra = map[string]json.RawMessage{"uuid": json.RawMessage(`"other"`)}
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	got := generic(t, data).(map[string]any)
	if got["version"] != CurrentVersion || got["Version"] != nil {
		t.Errorf("extra fields overrode known ones: %s", data)
	}
	if !reflect.DeepEqual(got["new"], generic(t, []byte(`{"a":[1,2]}`))) || got["nilValue"] != nil {
		t.Errorf("extra fields not encoded: %s", data)
	}
	if _, ok := got["nilValue"]; !ok {
		t.Errorf("nil extra field not encoded as null: %s", data)
	}
	dev := got["devices"].([]any)[0].(map[string]any)
	if dev["uuid"] != rec.Devices[0].UUID {
		t.Errorf("device extra overrode uuid: %s", data)
	}

	rec.Extra = map[string]json.RawMessage{"bad": json.RawMessage(`{`)}
	if _, err := json.Marshal(rec); err == nil {
		t.Error("Marshal with invalid extra JSON succeeded, want an error")
	}
}

func TestPutGetDelete(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)

	s := newTestStore(t)
	info, err := os.Stat(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o750 {
		t.Errorf("store directory mode = %v, want 0750", info.Mode().Perm())
	}

	const uid = "3e0b9c3b-6f5d-4f74-a04b-9d3f4a5b3d33"
	if rec, err := s.Get(uid); rec != nil || err != nil {
		t.Fatalf("Get(absent) = %v, %v; want nil, nil", rec, err)
	}
	rec := testRecord(uid)
	if err := s.Put(rec); err != nil {
		t.Fatal(err)
	}
	if rec.Version != CurrentVersion {
		t.Errorf("Put did not set Version: %q", rec.Version)
	}
	fi, err := os.Stat(filepath.Join(s.Dir(), uid+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode = %v, want 0600", fi.Mode().Perm())
	}
	got, err := s.Get(uid)
	if err != nil {
		t.Fatal(err)
	}
	if !got.PreparedAt.Equal(rec.PreparedAt) {
		t.Errorf("PreparedAt = %v, want %v", got.PreparedAt, rec.PreparedAt)
	}
	got.PreparedAt = rec.PreparedAt
	if !reflect.DeepEqual(generic(t, got.Devices[0].Config), generic(t, rec.Devices[0].Config)) {
		t.Errorf("Config = %s, want %s", got.Devices[0].Config, rec.Devices[0].Config)
	}
	got.Devices[0].Config = rec.Devices[0].Config
	if !reflect.DeepEqual(got, rec) {
		t.Errorf("Get =\n%+v\nwant\n%+v", got, rec)
	}

	// Put replaces.
	rec.Name = "renamed"
	if err := s.Put(rec); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(uid); got == nil || got.Name != "renamed" {
		t.Errorf("Get after second Put = %+v", got)
	}

	if err := s.Delete(uid); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Get(uid); rec != nil || err != nil {
		t.Fatalf("Get after Delete = %v, %v; want nil, nil", rec, err)
	}
	if err := s.Delete(uid); err != nil {
		t.Fatalf("second Delete = %v, want nil", err)
	}
	if entries, _ := os.ReadDir(s.Dir()); len(entries) != 0 {
		t.Errorf("store directory not empty: %v", entries)
	}

	// Invalid UIDs never reach the file system.
	bad := testRecord("../escape")
	if err := s.Put(bad); !errors.Is(err, ErrInvalidClaimUID) {
		t.Errorf("Put(../escape) = %v, want ErrInvalidClaimUID", err)
	}
	if _, err := s.Get("a/b"); !errors.Is(err, ErrInvalidClaimUID) {
		t.Errorf("Get(a/b) = %v, want ErrInvalidClaimUID", err)
	}
	if err := s.Delete(""); !errors.Is(err, ErrInvalidClaimUID) {
		t.Errorf("Delete(\"\") = %v, want ErrInvalidClaimUID", err)
	}
	if err := s.Put(nil); err == nil {
		t.Error("Put(nil) succeeded")
	}
}

func TestListReportsBadFiles(t *testing.T) {
	s := newTestStore(t)
	good := []string{
		"4f1cad4c-7a6e-4a85-b15c-ae4a5b6c4e44",
		"6b3ecf6e-9c8a-4ca7-d37e-c06c7d8e6a66",
		"7c4fd07f-ad9b-4db8-e48f-d17d8e9f7b77",
	}
	for _, uid := range good {
		if err := s.Put(testRecord(uid)); err != nil {
			t.Fatal(err)
		}
	}
	full, err := os.ReadFile(s.path(good[0]))
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"5a2dbe5d-8b7f-4b96-c26d-bf5b6c7d5f55.json": full[:len(full)/2], // truncated
		"5b2dbe5d-8b7f-4b96-c26d-bf5b6c7d5f55.json": []byte("null"),
		"5c2dbe5d-8b7f-4b96-c26d-bf5b6c7d5f55.json": nil, // empty
		// A record whose content names another claim.
		"5d2dbe5d-8b7f-4b96-c26d-bf5b6c7d5f55.json": full,
		// Not a valid claim UID.
		"not_a_uid.json": full,
	}
	for name, data := range bad {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	recs, loadErrs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(good) {
		t.Errorf("List returned %d records, want %d", len(recs), len(good))
	}
	for i, r := range recs {
		if r.ClaimUID != good[i] {
			t.Errorf("record %d = %s, want %s", i, r.ClaimUID, good[i])
		}
	}
	if len(loadErrs) != len(bad) {
		t.Errorf("List reported %d load errors, want %d: %v", len(loadErrs), len(bad), loadErrs)
	}
	for _, le := range loadErrs {
		if _, ok := bad[filepath.Base(le.Path)]; !ok {
			t.Errorf("unexpected load error %v", le)
		}
		if le.Err == nil || !strings.Contains(le.Error(), le.Path) {
			t.Errorf("load error %q does not name the file", le.Error())
		}
		// The bad file is left in place.
		if _, err := os.Stat(le.Path); err != nil {
			t.Errorf("bad file %s removed: %v", le.Path, err)
		}
	}

	// Get of a corrupted record is an error, not (nil, nil).
	if rec, err := s.Get("5a2dbe5d-8b7f-4b96-c26d-bf5b6c7d5f55"); err == nil {
		t.Errorf("Get(truncated) = %v, nil; want an error", rec)
	}
}

func TestListSkipsNonRecords(t *testing.T) {
	s := newTestStore(t)
	const uid = "8d5ae18a-be0c-4ec9-f59a-e28e9fa08c88"
	if err := s.Put(testRecord(uid)); err != nil {
		t.Fatal(err)
	}
	full, err := os.ReadFile(s.path(uid))
	if err != nil {
		t.Fatal(err)
	}
	// A leftover temporary file of a write that was interrupted: partial
	// content that List must not even try to decode.
	for name, data := range map[string][]byte{
		"." + uid + ".json.0123456789abcdef.tmp": full[:10],
		"." + uid + ".json.fedcba9876543210.tmp": full,
		"README":                                 []byte("notes"),
		uid + ".json.bak":                        full,
	} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(s.Dir(), "subdir.json"), 0o750); err != nil {
		t.Fatal(err)
	}
	recs, loadErrs, err := s.List()
	if err != nil || len(loadErrs) != 0 {
		t.Fatalf("List errors: %v, %v", loadErrs, err)
	}
	if len(recs) != 1 || recs[0].ClaimUID != uid {
		t.Fatalf("List = %v, want only %s", recs, uid)
	}
}

func TestNewStore(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "a", "claims")
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, ".x.json.0123456789abcdef.tmp")
	fresh := filepath.Join(dir, ".y.json.0123456789abcdef.tmp")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(testRecord("9e6bf29b-cf1d-4fda-a6ab-f39fab19d999")); err != nil {
		t.Fatal(err)
	}

	// Reopening removes the stale temporary file only and keeps records.
	s2, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temporary file not removed: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temporary file removed: %v", err)
	}
	if recs, _, err := s2.List(); err != nil || len(recs) != 1 {
		t.Errorf("List after reopen = %d records, %v; want 1", len(recs), err)
	}

	// A regular file where the directory should be is an error.
	file := filepath.Join(parent, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(file); err == nil {
		t.Error("NewStore(regular file) succeeded")
	}
	if _, err := NewStore(""); err == nil {
		t.Error("NewStore(\"\") succeeded")
	}
}

func TestMissingClaimUIDTakenFromFileName(t *testing.T) {
	s := newTestStore(t)
	const uid = "aa7c03ac-d02e-40eb-b7bc-04a0bc2aeaaa"
	if err := os.WriteFile(s.path(uid), []byte(`{"name":"x","devices":null}`), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Get(uid)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ClaimUID != uid || rec.Name != "x" || rec.Devices != nil || !rec.PreparedAt.IsZero() {
		t.Errorf("Get = %+v", rec)
	}
}

func TestConcurrentPut(t *testing.T) {
	s := newTestStore(t)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			uid := fmt.Sprintf("00000000-0000-0000-0000-%012d", i)
			if err := s.Put(testRecord(uid)); err != nil {
				errs <- err
				return
			}
			rec, err := s.Get(uid)
			if err != nil || rec == nil || rec.ClaimUID != uid {
				errs <- fmt.Errorf("Get(%s) = %v, %v", uid, rec, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	recs, loadErrs, err := s.List()
	if err != nil || len(loadErrs) != 0 || len(recs) != n {
		t.Fatalf("List = %d records, %v, %v; want %d", len(recs), loadErrs, err, n)
	}
	entries, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Errorf("directory holds %d entries, want %d (temporary files left?)", len(entries), n)
	}
}

func TestValidateClaimUID(t *testing.T) {
	for _, tc := range []struct {
		name    string
		uid     string
		wantErr string // substring; "" means valid
	}{
		{"valid UUID", "0b7e6f0e-3c2a-4c41-9d1e-6a0c1d2f0a00", ""},
		{"upper case", "0B7E6F0E-3C2A-4C41-9D1E-6A0C1D2F0A00", ""},
		{"128 chars", strings.Repeat("a", 128), ""},
		{"empty", "", "empty"},
		{"200 chars", strings.Repeat("a", 200), "200 characters"},
		{"parent dir", "../etc", "'.'"},
		{"slash", "a/b", "'/'"},
		{"dot", "abc.json", "'.'"},
		{"space", "a b", "' '"},
		{"NUL", "a\x00b", "'\\x00'"},
		{"non-ASCII", "gpü", "offset 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateClaimUID(tc.uid)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateClaimUID(%q) = %v, want nil", tc.uid, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateClaimUID(%q) = nil, want an error", tc.uid)
			}
			if !errors.Is(err, ErrInvalidClaimUID) {
				t.Errorf("error %v does not wrap ErrInvalidClaimUID", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "metadata.uid") {
				t.Errorf("error %q lacks %q or the metadata.uid hint", err, tc.wantErr)
			}
		})
	}
}

func TestReadBootID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(p, []byte("  5f0c6a7e-8f3b-4a8e-b2f4-1d2c3b4a5e6f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := ReadBootIDFile(p)
	if err != nil || id != "5f0c6a7e-8f3b-4a8e-b2f4-1d2c3b4a5e6f" {
		t.Errorf("ReadBootIDFile = %q, %v", id, err)
	}
	if err := os.WriteFile(p, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadBootIDFile(p); err == nil {
		t.Error("ReadBootIDFile(empty) succeeded")
	}
	if _, err := ReadBootIDFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadBootIDFile(missing) = %v, want ErrNotExist", err)
	}

	if _, err := os.Stat(BootIDPath); err != nil {
		t.Skipf("no %s on this machine", BootIDPath)
	}
	id, err = ReadBootID()
	if err != nil || len(id) != 36 {
		t.Errorf("ReadBootID = %q, %v; want a UUID", id, err)
	}
}

// FuzzDecodeRecord checks that the decoder never panics and that what it
// accepts encodes, and decodes again to the same record.
func FuzzDecodeRecord(f *testing.F) {
	for fixture := range fixtureUIDs {
		data, err := os.ReadFile(filepath.Join("testdata", fixture))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		``, `null`, `{}`, `[]`, `{"devices":[null]}`, `{"devices":[{"x":1}],"y":[]}`,
		`{"Version":"v3","VERSION":1}`, `{"preparedAt":"bogus"}`, `{"extra":"\u00e9<>&"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeRecord(data)
		if err != nil {
			return
		}
		enc, err := encodeRecord(rec)
		if err != nil {
			t.Fatalf("encode of a decoded record failed: %v\ninput: %q", err, data)
		}
		rec2, err := decodeRecord(enc)
		if err != nil {
			t.Fatalf("decode of an encoded record failed: %v\nencoded: %s", err, enc)
		}
		enc2, err := encodeRecord(rec2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable:\nfirst:  %s\nsecond: %s", enc, enc2)
		}
	})
}

func BenchmarkPut(b *testing.B) {
	s := newTestStore(b)
	rec := testRecord("bb8d14bd-e13f-41fc-c8cd-15b1cd3bfbbb")
	rec.Extra = map[string]json.RawMessage{"healthEpoch": json.RawMessage("3")}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Put(rec); err != nil {
			b.Fatal(err)
		}
	}
}

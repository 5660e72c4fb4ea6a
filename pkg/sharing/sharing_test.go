package sharing

import (
	"context"
	"errors"
	"strings"
	"testing"

	"tags.cncf.io/container-device-interface/specs-go"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
	"github.com/gpudra/gpudra/pkg/devices"
)

type recorder struct {
	applied, undone []Claim
	edits           Edits
	err             error
}

func (r *recorder) Apply(_ context.Context, c Claim) (Edits, error) {
	r.applied = append(r.applied, c)
	return r.edits, r.err
}

func (r *recorder) Undo(_ context.Context, c Claim) error {
	r.undone = append(r.undone, c)
	return r.err
}

func gpu(name, strategy string) Device {
	cfg := configapi.DefaultGpuConfig()
	if strategy != "" {
		cfg.Sharing = &configapi.GpuSharing{Strategy: configapi.GpuSharingStrategy(strategy)}
	}
	return Device{Name: name, Type: devices.KindGPU, UUID: "GPU-" + name, Config: cfg}
}

func mig(name, strategy string) Device {
	cfg := configapi.DefaultMigDeviceConfig()
	if strategy != "" {
		cfg.Sharing = &configapi.MigDeviceSharing{Strategy: configapi.MigDeviceSharingStrategy(strategy)}
	}
	return Device{Name: name, Type: devices.KindMIG, UUID: "MIG-" + name, ParentUUID: "GPU-p", Config: cfg}
}

func TestCompositeDispatchesByStrategy(t *testing.T) {
	ts := &recorder{edits: Edits{Claim: specs.ContainerEdits{Env: []string{"TS=1"}}}}
	mps := &recorder{edits: Edits{Claim: specs.ContainerEdits{Env: []string{"MPS=1"}},
		Devices: map[string]specs.ContainerEdits{"b": {Env: []string{"DEV=b"}}}}}
	c := Composite{TimeSlicing: ts, MPS: mps}
	claim := Claim{UID: "u", Namespace: "ns", Name: "n", Devices: []Device{
		gpu("a", "TimeSlicing"), gpu("b", "MPS"), gpu("c", ""), mig("d", "TimeSlicing"), mig("e", "MPS")}}
	edits, err := c.Apply(context.Background(), claim)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts.applied) != 1 || names(ts.applied[0]) != "a" {
		t.Errorf("time-slicing got %v, want only a (MIG devices have no time slice)", ts.applied)
	}
	if len(mps.applied) != 1 || names(mps.applied[0]) != "b,e" {
		t.Errorf("MPS got %v, want b,e", mps.applied)
	}
	if strings.Join(edits.Claim.Env, ",") != "TS=1,MPS=1" || strings.Join(edits.Devices["b"].Env, ",") != "DEV=b" {
		t.Errorf("merged edits = %+v", edits)
	}
	if err := c.Undo(context.Background(), claim); err != nil {
		t.Fatal(err)
	}
	if len(ts.undone) != 1 || len(mps.undone) != 1 {
		t.Errorf("undo calls: ts %d, mps %d", len(ts.undone), len(mps.undone))
	}
	// A claim without sharing calls no applier.
	if _, err := c.Apply(context.Background(), Claim{Devices: []Device{gpu("x", ""), mig("y", "TimeSlicing")}}); err != nil || len(ts.applied) != 1 || len(mps.applied) != 1 {
		t.Errorf("exclusive claim reached an applier: %v", err)
	}
}

func TestCompositeWithoutMPS(t *testing.T) {
	c := Composite{TimeSlicing: &recorder{}}
	claim := Claim{UID: "u", Namespace: "ns", Name: "n", Devices: []Device{mig("m", "MPS")}}
	_, err := c.Apply(context.Background(), claim)
	if err == nil || !strings.Contains(err.Error(), "claim ns/n (uid u)") || !strings.Contains(err.Error(), `"MPS" is not available`) {
		t.Errorf("MPS without applier: %v", err)
	}
	// Undo is nil-safe.
	if err := c.Undo(context.Background(), claim); err != nil {
		t.Errorf("Undo: %v", err)
	}
}

func TestCompositeUndoRunsEveryApplier(t *testing.T) {
	ts := &recorder{err: errors.New("ts broke")}
	mps := &recorder{err: errors.New("mps broke")}
	err := Composite{TimeSlicing: ts, MPS: mps}.Undo(context.Background(), Claim{Devices: []Device{gpu("a", "TimeSlicing"), gpu("b", "MPS")}})
	if err == nil || !strings.Contains(err.Error(), "ts broke") || !strings.Contains(err.Error(), "mps broke") {
		t.Errorf("Undo error = %v", err)
	}
}

func TestMergeDoesNotAlias(t *testing.T) {
	base := Edits{Claim: specs.ContainerEdits{Env: make([]string, 1, 10)}}
	a := base.Merge(Edits{Claim: specs.ContainerEdits{Env: []string{"A"}}})
	b := base.Merge(Edits{Claim: specs.ContainerEdits{Env: []string{"B"}}})
	if a.Claim.Env[1] != "A" || b.Claim.Env[1] != "B" {
		t.Errorf("merges share memory: %v %v", a.Claim.Env, b.Claim.Env)
	}
}

func names(c Claim) string {
	var out []string
	for _, d := range c.Devices {
		out = append(out, d.Name)
	}
	return strings.Join(out, ",")
}

func TestCompositeHandsSharesToTheSharesApplier(t *testing.T) {
	share := gpu("gpu-1", "")
	share.Share = &Share{ID: "s-1", MemoryBytes: 20 << 30}
	timeSliced := gpu("gpu-2", "TimeSlicing")
	timeSliced.Share = &Share{ID: "s-2"} // a share is a share, whatever its strategy
	ts, mps, shares := &recorder{}, &recorder{}, &recorder{}
	c := Composite{TimeSlicing: ts, MPS: mps, Shares: shares}
	claim := Claim{UID: "u", Namespace: "ns", Name: "c", Devices: []Device{share, timeSliced, gpu("gpu-3", "MPS")}}
	if !UsesSharing(Claim{Devices: []Device{share}}) {
		t.Error("a claim with a share does not use sharing")
	}
	if _, err := c.Apply(context.Background(), claim); err != nil {
		t.Fatal(err)
	}
	if len(shares.applied) != 1 || len(shares.applied[0].Devices) != 2 || len(ts.applied) != 0 || len(mps.applied) != 1 {
		t.Fatalf("shares got %v, time-slicing %v, MPS %v", shares.applied, ts.applied, mps.applied)
	}
	if err := c.Undo(context.Background(), claim); err != nil || len(shares.undone) != 1 {
		t.Errorf("Undo: %v, shares undone %v", err, shares.undone)
	}
	// Without a shares applier (no MPS), shares are accounting only.
	if _, err := (Composite{}).Apply(context.Background(), Claim{Devices: []Device{share}}); err != nil {
		t.Errorf("share without a shares applier: %v", err)
	}
	// A share with an MPS config of its own is refused.
	mpsShare := gpu("gpu-4", "MPS")
	mpsShare.Share = &Share{ID: "s-4"}
	if _, err := c.Apply(context.Background(), Claim{UID: "u", Namespace: "ns", Name: "c", Devices: []Device{mpsShare}}); err == nil ||
		!strings.Contains(err.Error(), "share of a GPU") {
		t.Errorf("MPS config on a share: %v", err)
	}
}

func TestActiveThreadPercentage(t *testing.T) {
	for _, tc := range []struct {
		s    *Share
		want int64
	}{
		{nil, 0},
		{&Share{MemoryBytes: 1}, 0},
		{&Share{ComputeShares: 1, ComputeTotal: 4}, 25},
		{&Share{ComputeShares: 1, ComputeTotal: 3}, 34},
		{&Share{ComputeShares: 1, ComputeTotal: 1000}, 1},
		{&Share{ComputeShares: 8, ComputeTotal: 8}, 100},
	} {
		if got := tc.s.ActiveThreadPercentage(); got != tc.want {
			t.Errorf("%+v: %d, want %d", tc.s, got, tc.want)
		}
	}
}

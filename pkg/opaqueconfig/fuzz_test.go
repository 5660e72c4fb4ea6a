package opaqueconfig

import (
	"errors"
	"testing"

	configapi "github.com/gpudra/gpudra/api/nvidia.com/resource/v1beta1"
)

// FuzzDecode checks that Decode never panics, that it returns either a
// Config or a *DecodeError with problems, and that whatever it returns can be
// copied, normalized and validated without panicking.
func FuzzDecode(f *testing.F) {
	for _, s := range seedInputs {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		obj, err := Decode(raw)
		if err != nil {
			var derr *DecodeError
			if !errors.As(err, &derr) || len(derr.Problems) == 0 || err.Error() == "" {
				t.Fatalf("error %T %q is not a *DecodeError with problems", err, err)
			}
			if obj != nil {
				t.Fatalf("Decode returned %T along with error %v", obj, err)
			}
			return
		}
		cfg, ok := obj.(configapi.Config)
		if !ok || obj == nil {
			t.Fatalf("Decode returned %T, not a Config", obj)
		}
		verr := cfg.Validate()
		cp := cfg.DeepCopyObject().(configapi.Config)
		cp.Normalize()
		nerr := cp.Validate()
		if (verr == nil) != (nerr == nil) {
			t.Fatalf("Validate() = %v before Normalize, %v after", verr, nerr)
		}
		switch c := cp.(type) {
		case *configapi.GpuConfig:
			_ = c.Sharing.TimeSliceInterval()
			_ = c.Sharing.IsMPS()
		case *configapi.MigDeviceConfig:
			_ = c.Sharing.IsTimeSlicing()
		}
	})
}
